"""Meshes from the config, parameter PartitionSpecs from regex rules, batch sharding.

Rules are data in the config (big_vision's idea): an ordered list of
`(regex, rule)` pairs matched with `re.search` against a leaf's path in the
train state, e.g. `params/down/3/conv1/kernel` or `opt_state/1/0/mu/...`. The
first match wins; leaves no rule matches are replicated. A rule is
- `'replicate'`: every device holds the whole tensor;
- `'fsdp'`: size-aware -- tensors with at least `fsdp_min_size` elements are
  split along their largest dimension divisible by the `fsdp` axis size; smaller
  ones are replicated (sharding them costs more in collectives than it saves);
- a tuple of mesh-axis names / None, one per dimension: an explicit PartitionSpec.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'fsdp')
BATCH_SPEC = P(MESH_AXES)


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Axis sizes with at most one -1 filled in from the device count."""
  sizes = [int(mesh_cfg[axis]) for axis in MESH_AXES]
  known = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise ValueError('mesh: at most one axis may be -1')
  if -1 in sizes:
    if known <= 0 or num_devices % known:
      raise ValueError(f'mesh: {dict(zip(MESH_AXES, sizes))} cannot be filled from '
                       f'{num_devices} devices')
    sizes[sizes.index(-1)] = num_devices // known
  return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def path_str(path: tuple[Any, ...]) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def spec_for(shape: tuple[int, ...], rule: Any, mesh: Mesh, fsdp_min_size: int) -> P:
  if rule == 'replicate':
    return P()
  if rule == 'fsdp':
    axis_size = mesh.shape['fsdp']
    if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < fsdp_min_size:
      return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % axis_size == 0:
        spec = [None] * len(shape)
        spec[dim] = 'fsdp'
        return P(*spec)
    return P()
  rule = tuple(rule)
  if len(rule) != len(shape):
    raise ValueError(f'sharding rule {rule} has {len(rule)} entries for a tensor of shape {shape}')
  return P(*rule)


def tree_specs(tree: Any, rules: Sequence[tuple[str, Any]], mesh: Mesh, fsdp_min_size: int
               ) -> Any:
  """A PartitionSpec for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]

  def one(path, leaf):
    name = path_str(path)
    for pattern, rule in compiled:
      if pattern.search(name):
        return spec_for(tuple(leaf.shape), rule, mesh, fsdp_min_size)
    return P()

  return jax.tree_util.tree_map_with_path(one, tree)


def tree_shardings(tree: Any, mesh: Mesh, sharding_cfg: ml_collections.ConfigDict) -> Any:
  specs = tree_specs(tree, sharding_cfg.rules, mesh, sharding_cfg.fsdp_min_size)
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch axis split over every device: ('data', 'fsdp') together."""
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying target shardings: what orbax restores onto."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
