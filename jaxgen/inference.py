"""Restore a run's checkpoint for sampling, and draw samples from it (jaxgen-sample, -eval).

Readers open the checkpoints read-only: they may run beside a trainer that is still saving.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxgen import checkpoint, metrics, paths, train


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
    config.mesh.data, config.mesh.fsdp = -1, 1
    config.global_batch_size = jax.device_count()
    try:
      s = train.setup(config)
    except KeyError as e:
      field = str(e.args[0]).strip('\'"')
      raise ValueError(f'the config saved with checkpoint {step} in {directory} has no field '
                       f'{field!r}: it was written by an older jaxgen; sample it with that '
                       'version or retrain') from e
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


def sample_from_workdir(workdir: str, *, step: int | None, num_images: int, seed: int,
                        **sample_kwargs) -> tuple[np.ndarray, int, dict]:
  """uint8 samples from the checkpoint at `step` (latest if None), its step, and the config."""
  s, state, step, config = restore_for_sampling(workdir, step)
  if s.objective.sample is None:
    raise ValueError(f'objective {config.objective!r} does not generate images from noise; '
                     'use --interpolate for its latent walks, or jaxgen-eval for its metrics')
  sample_kwargs = {k: v for k, v in sample_kwargs.items() if v is not None}
  images = train.jit_sample(s, num_images, **sample_kwargs)(state, jax.random.key(seed))
  return images, step, config


def generate(s, state, num_samples: int, batch_size: int, seed: int, **sample_kwargs
             ) -> np.ndarray:
  """`num_samples` uint8 images, `batch_size` at a time over the mesh, with a progress line."""
  batch_size = min(batch_size, num_samples)
  batch_size += (-batch_size) % jax.device_count()  # shard evenly over the devices
  sample = train.jit_sample(s, batch_size, **sample_kwargs)
  key, chunks, done, start = jax.random.key(seed), [], 0, time.perf_counter()
  while done < num_samples:
    chunks.append(sample(state, jax.random.fold_in(key, len(chunks))))
    done += batch_size
    rate = min(done, num_samples) / (time.perf_counter() - start)
    if jax.process_index() == 0:
      metrics.print_line(f'sampled {min(done, num_samples)}/{num_samples} | {rate:.1f} img/s | '
                         f'ETA {max(num_samples - done, 0) / rate:.0f}s')
  return np.concatenate(chunks)[:num_samples]
