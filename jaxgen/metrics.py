"""Metric accumulation (clu.metrics), TensorBoard + JSONL writers and the progress line."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from clu import metrics as clu_metrics
from PIL import Image

METRICS_FILE = 'metrics.jsonl'


@functools.cache
def collection_for(names: tuple[str, ...]) -> type[clu_metrics.Collection]:
  """A clu Collection that averages each named scalar over the steps it sees."""
  return clu_metrics.Collection.create(
      **{name: clu_metrics.Average.from_output(name) for name in sorted(names)})


class Accumulator:
  """Merges per-step metric dicts on device (no host sync) until `flush`."""

  def __init__(self):
    self._collection = None

  def add(self, step_metrics: dict[str, jax.Array]) -> None:
    cls = collection_for(tuple(sorted(step_metrics)))
    one = cls.single_from_model_output(**step_metrics)
    self._collection = one if self._collection is None else self._collection.merge(one)

  def flush(self) -> dict[str, float]:
    if self._collection is None:
      return {}
    out = {k: float(v) for k, v in self._collection.compute().items()}
    self._collection = None
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


def save_png(path: str, image: np.ndarray) -> None:
  image = np.asarray(image)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


class MetricWriter:
  """TensorBoard event files (via tensorboardX, no TensorFlow) plus `metrics.jsonl`.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # heavy import, only where used

    os.makedirs(workdir, exist_ok=True)
    self.jsonl_path = os.path.join(workdir, METRICS_FILE)
    if resume_step is not None:
      self._truncate_after(resume_step)
    self.tb = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'))

  def _truncate_after(self, step: int) -> None:
    """Drop records a crashed run wrote after the checkpoint we resume from."""
    if not os.path.exists(self.jsonl_path):
      return
    with open(self.jsonl_path) as f:
      lines = f.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line)['step'] <= step]
    if len(kept) != len(lines):
      tmp = self.jsonl_path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(kept)
      os.replace(tmp, self.jsonl_path)

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in scalars.items():
      self.tb.add_scalar(name, float(value), int(step))
    self.tb.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self.tb.add_image(name, np.asarray(image), int(step), dataformats='HWC')
      self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


class Progress:
  """steps/s, images/s and ETA over the interval since the last report."""

  def __init__(self, start_step: int, total_steps: int, global_batch_size: int):
    self.total_steps = total_steps
    self.batch = global_batch_size
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
    loss = f' | loss {scalars["loss"]:.4f}' if 'loss' in scalars else ''
    return (f'step {step}/{self.total_steps}{loss} | {rates["steps_per_sec"]:.2f} steps/s | '
            f'{rates["images_per_sec"]:.0f} img/s | ETA {_duration(eta)}')


def print_line(text: str) -> None:
  print(text, flush=True, file=sys.stdout)
