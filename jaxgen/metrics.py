"""Metric accumulation (clu.metrics), TensorBoard + JSONL writers and the progress line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from etils import epath
from PIL import Image

from jaxgen import paths
from jaxgen.objectives import Partial

METRICS_FILE = 'metrics.jsonl'


def _averages(step_metrics: dict[str, Any]) -> dict[str, Any]:
  """One step's metrics as clu Averages, each masked by its own validity: steps with a
  non-finite value are left out of every average, a `Partial` metric also on the steps
  that did not compute it."""
  ok = step_metrics['nonfinite'] == 0 if 'nonfinite' in step_metrics else jnp.asarray(True)
  out = {}
  for name, value in step_metrics.items():
    if name == 'nonfinite':
      continue
    mask = ok
    if isinstance(value, Partial):
      value, mask = value.value, jnp.logical_and(ok, value.present > 0)
    out[name] = clu_metrics.Average.from_model_output(
        jnp.reshape(value, (1,)).astype(jnp.float32), mask=jnp.reshape(mask, (1,)))
  return {'averages': out,
          'nonfinite': jnp.asarray(step_metrics.get('nonfinite', 0.0), jnp.float32)}


@jax.jit
def _first(step_metrics):
  return _averages(step_metrics)


@jax.jit
def _merge(accumulated, step_metrics):
  new = _averages(step_metrics)
  return {'averages': {k: v.merge(new['averages'][k])
                       for k, v in accumulated['averages'].items()},
          'nonfinite': accumulated['nonfinite'] + new['nonfinite']}


class Accumulator:
  """Averages per-step metric dicts on device (one dispatch per step, no host sync) until
  `flush`.

  A step whose `nonfinite` metric is 1 (see jaxgen/nonfinite.py) is left out of the
  averages and counted in `nonfinite_steps` instead. A metric given as
  `objectives.Partial(value, present)` is averaged over the steps where it is present; if
  it is present on none since the last flush, it is left out of the flushed record.
  """

  def __init__(self):
    self._state = None
    self._counted_nonfinite = False

  def add(self, step_metrics: dict[str, Any]) -> None:
    self._counted_nonfinite |= 'nonfinite' in step_metrics
    self._state = (_first(step_metrics) if self._state is None
                   else _merge(self._state, step_metrics))

  def flush(self) -> dict[str, float]:
    if self._state is None:
      return {}
    state = jax.device_get(self._state)
    out = {k: float(v.total / v.count) for k, v in state['averages'].items() if v.count > 0}
    if self._counted_nonfinite:
      out['nonfinite_steps'] = int(state['nonfinite'])
    self._state, self._counted_nonfinite = None, False
    return out


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*H, cols*W, C] image with 2-pixel gaps."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  columns = columns or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / columns))
  pad = 2
  grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid


def sample_grid(images: np.ndarray, num_classes: int = 0) -> np.ndarray:
  """A grid of samples drawn with the default labels (the classes in turn): one row per
  class for a class-conditional model whose classes divide the count, else image_grid's
  square."""
  images = np.asarray(images)
  n = len(images)
  if not num_classes or n % num_classes:
    return image_grid(images)
  by_class = images.reshape(n // num_classes, num_classes, *images.shape[1:]).swapaxes(0, 1)
  return image_grid(by_class.reshape(images.shape), columns=n // num_classes)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes a PNG to a local path or an object-store URI."""
  image = np.asarray(image)
  with paths.workdir_path(path).open('wb') as f:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(f, format='PNG')


class _ObjectRecordFile:
  """A tensorboardX event file on an object store: buffered; each flush rewrites the object.

  Replaces tensorboardX's own gs:// writer, which uploads again when garbage-collected
  (retrying for minutes if the store has gone) and has no s3/epath counterpart.
  """

  def __init__(self, path: str):
    self.path, self.buffer, self.dirty = epath.Path(path), io.BytesIO(), False

  def write(self, data: bytes) -> None:
    self.buffer.write(data)
    self.dirty = True

  def flush(self) -> None:
    if self.dirty:
      self.path.write_bytes(self.buffer.getvalue())
      self.dirty = False

  def close(self) -> None:
    self.flush()


class _ObjectRecordFiles:
  open = staticmethod(_ObjectRecordFile)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no directories to create


# Each flush rewrites a remote event file whole, so a remote writer starts a new file
# (TensorBoard reads every file in the directory) after this many flushes.
_REMOTE_FLUSHES_PER_FILE = 50


@contextlib.contextmanager
def _torch_hidden():
  """tensorboardX imports PyTorch when it is installed (1.4 s and ~300 MB per process, in
  Colab and wherever torch sits beside jaxgen) only to accept torch tensors, which we never
  pass: hide it during that import. A later `import torch` works as usual."""
  if 'torch' in sys.modules or 'tensorboardX' in sys.modules:
    yield
    return
  sys.modules['torch'] = None  # makes `import torch` raise ImportError
  try:
    yield
  finally:
    del sys.modules['torch']


class MetricWriter:
  """TensorBoard event files (via tensorboardX, no TensorFlow) plus `metrics.jsonl`.

  Only process 0 writes; other processes get a writer that does nothing. On object stores
  (gs://), which cannot append, the JSONL file is rewritten whole at each write.

  `resume_step`: training resumes after this step; records of later steps (written by a
  run that crashed after its last checkpoint) are dropped from the JSONL file and purged
  from TensorBoard's view, so each step appears once. `resume_step=0` is a fresh start:
  every earlier record (a run that crashed before its first checkpoint) goes. None (the
  eval program) appends to what is there.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    if not enabled:
      return
    directory = paths.workdir_path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    self.jsonl_path = directory / METRICS_FILE
    self._remote = paths.is_remote(directory)
    lines = self._read_lines()
    if resume_step is not None:
      kept = [line for line in lines if json.loads(line)['step'] <= resume_step]
      if len(kept) != len(lines):
        self._write_all(kept)
      lines = kept
    self._lines = lines
    self._tb_dir, self._tb_files, self._flushes = os.fspath(directory / 'tensorboard'), 0, 0
    # TensorBoard hides events at steps >= purge_step that earlier files hold.
    self._purge_step = None if resume_step is None else resume_step + 1
    self.tb = self._open_tb()

  def _open_tb(self):
    with _torch_hidden():
      from tensorboardX import SummaryWriter, record_writer  # heavy import, only where used

    if self._remote:
      for scheme in ('gs', 's3'):
        record_writer.register_writer_factory(scheme, _ObjectRecordFiles())
    self._tb_files += 1
    purge_step, self._purge_step = self._purge_step, None  # in the first new file only
    # Event files are named by the second they were opened in: the nanosecond suffix keeps
    # two writers of one second (a quick restart) apart and in order.
    return SummaryWriter(logdir=self._tb_dir, purge_step=purge_step,
                         filename_suffix=f'.{time.time_ns()}.{self._tb_files}')

  def _flush_tb(self) -> None:
    self.tb.flush()
    self._flushes += 1
    if self._remote and self._flushes % _REMOTE_FLUSHES_PER_FILE == 0:
      self.tb.close()
      self.tb = self._open_tb()

  def _read_lines(self) -> list[str]:
    if not self.jsonl_path.exists():
      return []
    return [line + '\n' for line in self.jsonl_path.read_text().splitlines() if line.strip()]

  def _write_all(self, lines: list[str]) -> None:
    if self._remote:  # an object write is atomic
      self.jsonl_path.write_text(''.join(lines))
    else:
      tmp = self.jsonl_path.with_name(METRICS_FILE + '.tmp')
      tmp.write_text(''.join(lines))
      tmp.replace(self.jsonl_path)

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    line = json.dumps(record) + '\n'
    if self._remote:
      self._lines.append(line)
      self._write_all(self._lines)
    else:
      with self.jsonl_path.open('a') as f:
        f.write(line)
    for name, value in scalars.items():
      self.tb.add_scalar(name, float(value), int(step))
    self._flush_tb()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self.tb.add_image(name, np.asarray(image), int(step), dataformats='HWC')
      self._flush_tb()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


class Progress:
  """steps/s, images/s and ETA over the interval since the last report."""

  def __init__(self, start_step: int, total_steps: int, global_batch_size: int,
               shown: tuple[str, ...] = ('loss',)):
    """`shown`: the metrics on the line, as the objective declares them."""
    self.total_steps = total_steps
    self.batch = global_batch_size
    self.shown = shown
    self._step, self._time = start_step, time.perf_counter()

  def rates(self, step: int) -> dict[str, float]:
    """Rates since the previous call; empty when no step has completed since."""
    if step <= self._step:
      return {}
    now = time.perf_counter()
    steps_per_sec = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return {'steps_per_sec': steps_per_sec, 'images_per_sec': steps_per_sec * self.batch}

  def line(self, step: int, scalars: dict[str, float], rates: dict[str, float]) -> str:
    eta = (self.total_steps - step) / max(rates['steps_per_sec'], 1e-9)
    loss = ''.join(f' | {name.replace("_", " ")} {scalars[name]:.4f}'
                   for name in self.shown if name in scalars)
    return (f'step {step}/{self.total_steps}{loss} | {rates["steps_per_sec"]:.2f} steps/s | '
            f'{rates["images_per_sec"]:.0f} img/s | ETA {_duration(eta)}')


def print_line(text: str) -> None:
  print(text, flush=True, file=sys.stdout)
