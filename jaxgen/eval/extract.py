"""Run a feature network over many images: batched, sharded over the local devices."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def batch_shardings() -> tuple[NamedSharding, NamedSharding]:
  """(batch split over all devices, replicated) on a one-axis `data` mesh."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  return NamedSharding(mesh, P('data')), NamedSharding(mesh, P())


@functools.cache
def _jitted(apply, batch_sharding, replicated):
  return jax.jit(apply, in_shardings=(replicated, batch_sharding), out_shardings=batch_sharding)


def batched_apply(apply: Callable[..., tuple], params: dict[str, Any], images: np.ndarray,
                  batch_size: int = 256) -> tuple[np.ndarray, ...]:
  """`apply(params, images)` -> a tuple of [N, ...] arrays, `batch_size` images at a time.

  `images` are the same on every process (e.g. gathered samples); each process feeds only
  its own rows of every batch to its devices, and every process gets all the outputs. The
  last batch is padded to a multiple of the device count, so one program serves all.
  """
  batch_sharding, replicated = batch_shardings()
  params = jax.device_put(params, replicated)
  n_dev = jax.device_count()
  step = max(batch_size - batch_size % n_dev, n_dev)
  step = min(step, -(-len(images) // n_dev) * n_dev)  # no bigger than the images need
  # The mesh runs over jax.devices(), process by process: process p holds rows
  # [p * rows, (p + 1) * rows) of each global batch.
  rows = step // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  fn = _jitted(apply, batch_sharding, replicated)
  outputs: list[tuple[np.ndarray, ...]] = []
  for start in range(0, len(images), step):
    chunk = np.asarray(images[start:start + step])
    padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]),
                                             chunk.dtype)])
    batch = jax.make_array_from_process_local_data(batch_sharding, padded[mine], padded.shape)
    gathered = multihost_utils.process_allgather(fn(params, batch), tiled=True)
    outputs.append(tuple(np.asarray(o)[:len(chunk)] for o in gathered))
  return tuple(np.concatenate(parts) for parts in zip(*outputs))
