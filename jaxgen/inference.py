"""Restore a run's checkpoint for sampling, and draw samples from it (jaxgen-sample, -eval).

Readers open the checkpoints read-only: they may run beside a trainer that is still saving.
"""

from __future__ import annotations

import difflib
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxgen import build, checkpoint, config_files, metrics, paths
from jaxgen.objectives import Objective


def restore_for_sampling(workdir: str, step: int | None = None):
  """(Setup, state, step, config) of the checkpoint at `step` (latest if None), laid out for
  sampling on whatever devices are here (the run's mesh and batch size do not matter)."""
  directory = paths.workdir_path(workdir) / checkpoint.CHECKPOINT_DIR
  if not directory.is_dir():
    raise FileNotFoundError(f'no checkpoint in {directory}; train first with jaxgen-train')
  ckpt = checkpoint.Checkpointer(workdir, use_async=False, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {directory}; train first with jaxgen-train')
    step = steps[-1] if step is None else step
    if step not in steps:
      raise UnreadableCheckpoint(f'no checkpoint at step {step} in {directory}; it has {steps}')
    try:
      config = ckpt.restore_config(step)
    except Exception as e:  # noqa: BLE001  (orbax/tensorstore raise bare Exception)
      raise _unreadable(directory, step, steps, e) from e
    # Sampling uses whatever devices are here: the run's mesh, batch size and gradient
    # accumulation concern its training only.
    config.mesh.data, config.mesh.fsdp = -1, 1
    try:
      s = build.setup(config, training=False)
    except (KeyError, AttributeError) as e:
      raise ValueError(f'the config saved with checkpoint {step} in {directory} does not fit '
                       f'this jaxgen ({config_files.missing_field(e)}): an older jaxgen wrote '
                       'it; sample it with that version or retrain') from e
    try:
      state = ckpt.restore(step, s.restore_target)
    except Exception as e:  # noqa: BLE001
      raise _unreadable(directory, step, steps, e) from e
  finally:
    ckpt.close()
  return s, state, step, config


class UnreadableCheckpoint(ValueError):
  """A checkpoint listed as complete whose files cannot be read (truncated, deleted)."""


def _unreadable(directory, step: int, steps: list[int], error: Exception
                ) -> UnreadableCheckpoint:
  others = [other for other in steps if other != step]
  hint = f'pass --step with one of {others} to use another' if others else 'it is the only one'
  return UnreadableCheckpoint(f'checkpoint {step} in {directory} cannot be read '
                              f'({checkpoint.cause(error)}); {hint}')


def sample_options(objective: Objective, options: Mapping[str, Any] | None) -> dict[str, Any]:
  """`options` ({name: value}, values maybe strings from `--sample.NAME=VALUE`) checked
  against what the objective's `sample` declares it takes, and converted to those types."""
  declared, out = objective.sample_options, {}
  for name, value in (options or {}).items():
    if name not in declared:
      close = difflib.get_close_matches(name, list(declared), n=1)
      hint = f' (did you mean sample.{close[0]}?)' if close else ''
      known = ', '.join(sorted(declared)) or 'none'
      raise ValueError(f'this model has no sample option {name!r}{hint}; its options are: '
                       f'{known}')
    kind = declared[name]
    try:
      if kind is bool and isinstance(value, str):
        if value.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(value)
        value = value.lower() in ('true', '1')
      else:
        value = kind(value)
    except ValueError:
      raise ValueError(f'sample option {name}={value!r} is not a valid {kind.__name__}'
                       ) from None
    out[name] = value
  return out


def check_generates(s: build.Setup) -> None:
  if s.objective.sample is None:
    raise ValueError(f'objective {s.config.objective!r} does not generate images from noise; '
                     'use --interpolate for its latent walks, or jaxgen-eval for its metrics')


def generate(s: build.Setup, state, num_samples: int, batch_size: int, seed: int,
             cache_dir: str | None = None, **options) -> np.ndarray:
  """`num_samples` uint8 images, `batch_size` at a time over the mesh, with a progress line.
  Batch i draws from `fold_in(key(seed), i)`. Batches are rounded up to shard evenly over
  the devices and, for a class-conditional model, to whole cycles of its default labels.

  With `cache_dir`, batch i is saved there as it is drawn and loaded instead of drawn when
  the file exists, so a long sampling job stopped part way resumes where it stopped. The
  directory must belong to these arguments (seed, batch size, options, checkpoint): the
  caller names it. One process only: every process must draw the same batches.
  """
  if cache_dir and jax.process_count() > 1:
    raise ValueError(f'generate(cache_dir={cache_dir!r}) runs in one process: with '
                     f'{jax.process_count()}, the processes could disagree on which batches '
                     'are cached and draw different ones; leave cache_dir unset')
  batch_size = min(batch_size, num_samples)
  batch_size += (-batch_size) % math.lcm(jax.device_count(), s.objective.sample_classes or 1)
  sample = build.jit_sample(s, batch_size, **options)
  key, chunks, drawn, start = jax.random.key(seed), [], 0, time.perf_counter()
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
  for i in range(-(-num_samples // batch_size)):
    path = cache_dir and os.path.join(cache_dir, f'batch_{i:05d}_of_{batch_size}.npy')
    if path and os.path.exists(path):
      chunks.append(np.load(path))
      continue
    chunks.append(sample(state, jax.random.fold_in(key, i)))
    if path:
      np.save(path + '.tmp.npy', chunks[-1])
      os.replace(path + '.tmp.npy', path)  # a killed job leaves no half-written batch
    drawn += batch_size
    done = min(len(chunks) * batch_size, num_samples)
    rate = drawn / (time.perf_counter() - start)
    if jax.process_index() == 0:
      metrics.print_line(f'sampled {done}/{num_samples} | {rate:.1f} img/s | '
                         f'ETA {(num_samples - done) / rate:.0f}s')
  return np.concatenate(chunks)[:num_samples]
