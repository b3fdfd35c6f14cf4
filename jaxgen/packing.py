"""The train state as orbax saves it: small replicated arrays packed into one 1-D array per
dtype, with a JSON layout saying where each leaf lies (jaxgen/checkpoint.py saves and
restores them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def flat(tree: Any, separator: str = '/') -> dict[str, Any]:
  """{path: leaf}, paths joined by `separator`."""
  return {jax.tree_util.keystr(path, simple=True, separator=separator): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# The train state is saved packed: its small replicated arrays (below PACK_BELOW_BYTES each)
# are concatenated, on the devices, into one 1-D array per dtype, and the item `layout` (JSON)
# says where each one lies. orbax spends ~0.3 ms of host time per array in save() (the demo's
# 1,016 arrays held the loop ~0.2-0.4 s, half a step, and slowed the steps after it by its
# background work); packed, the demo state is 2 arrays. Large or sharded arrays are saved as
# themselves, so a sharded model still writes its shards in parallel.
PACK_BELOW_BYTES = 1 << 20


def _packable(signature: tuple | None) -> bool:
  if signature is None:
    return False
  shape, dtype, sharding = signature
  return (sharding.is_fully_replicated and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
          and math.prod(shape) * dtype.itemsize < PACK_BELOW_BYTES)


def _signature(leaf: Any) -> tuple | None:
  return (leaf.shape, leaf.dtype, leaf.sharding) if isinstance(leaf, jax.Array) else None


_PLANS: dict[Any, tuple] = {}  # treedef -> how pack lays a state of that structure out


def _plan(state: Any, leaves: list[Any]) -> tuple:
  """(layout, packed names, leaf indices per packed array, (name, index) of plain leaves, the
  compiled concatenation, the leaves' paths, a cache of `_subset`s) of `state`: the per-leaf
  Python of this costs as much as orbax's did, so `pack` reuses it for every state of the
  same structure."""
  signatures = [_signature(leaf) for leaf in leaves]
  groups: dict[tuple[str, Any], list[int]] = {}
  layout, plain = {'packed': {}, 'plain': {}}, []
  keys = list(flat(state))
  for i, (key, signature) in enumerate(zip(keys, signatures)):
    if _packable(signature):
      groups.setdefault((np.dtype(signature[1]).name, signature[2]), []).append(i)
    else:
      layout['plain'][key] = name = f'leaf{len(plain)}'
      plain.append((name, i))
  names = []
  for n, ((dtype, _), indices) in enumerate(groups.items()):
    names.append(f'{dtype}_{n}')
    offsets = np.cumsum([0] + [math.prod(signatures[i][0]) for i in indices])
    layout['packed'][names[-1]] = {
        'dtype': dtype, 'size': int(offsets[-1]),
        'leaves': [[keys[i], list(signatures[i][0]), int(o)] for i, o in zip(indices, offsets)]}
  indices = tuple(groups.values())

  # Compiled ahead of time, so a call checks every packed leaf's shape, dtype and sharding
  # in C++ and raises on any change (a jitted function would retrace silently, and the
  # layout above would no longer say where each leaf lies). XLA:CPU runs it inline in the
  # calling thread (it has no flops); made to run on XLA's threads by a few thousand flops, it
  # returned sooner but finished later (the demo's state: 2.3 and 6.1 ms against 3.7 and 4.1).
  concatenate = jax.jit(
      lambda groups: tuple(jnp.concatenate([jnp.ravel(x) for x in g]) for g in groups),
      out_shardings=tuple(sharding for _, sharding in groups)).lower(
          tuple(tuple(leaves[i] for i in g) for g in indices)).compile()
  return layout, names, indices, plain, concatenate, keys, {}


def _subset(plan: tuple, keys: list[str]) -> tuple | None:
  """(layout, [(name, name in `plan`'s state, start, stop)], the index of each key's leaf in
  `plan`'s state) of a state whose leaves are the `keys` of `plan`'s state, each of its packed
  arrays a contiguous run of one of that state's (the layout `pack` would give it); None when
  they are not."""
  layout, names, indices, _, _, state_keys, _ = plan
  where = {key: i for i, key in enumerate(state_keys)}
  place = {i: (g, position) for g, group in enumerate(indices) for position, i in enumerate(group)}
  if not all(key in where and where[key] in place for key in keys):
    return None  # a leaf the state lacks, or saves as itself
  runs: dict[int, list[int]] = {}
  for key in keys:
    group, position = place[where[key]]
    runs.setdefault(group, []).append(position)
  out, slices = {'packed': {}, 'plain': {}}, []
  for n, (group, positions) in enumerate(runs.items()):
    if positions != list(range(positions[0], positions[0] + len(positions))):
      return None
    source = layout['packed'][names[group]]
    leaves = source['leaves'][positions[0]:positions[-1] + 1]
    start = leaves[0][2]
    stop = leaves[-1][2] + math.prod(leaves[-1][1])
    name = f"{source['dtype']}_{n}"
    out['packed'][name] = {'dtype': source['dtype'], 'size': stop - start, 'leaves': [
        [key, shape, offset - start] for key, shape, offset in leaves]}
    slices.append((name, names[group], start, stop))
  return out, slices, [where[key] for key in keys]


def pack(state: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
  """(the arrays to save, the JSON layout): small replicated leaves concatenated per (dtype,
  sharding) into `packed`, the others in `plain`; the layout maps every leaf's path to its
  place. Dispatched, not waited for."""
  arrays, layout, _ = pack_for_reuse(state)
  return arrays, layout


def pack_for_reuse(state: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any], tuple]:
  """pack's arrays and layout, and (leaves, plan, arrays) for `derive`."""
  leaves, treedef = jax.tree_util.tree_flatten(state)

  def concatenate(plan):
    compiled, groups = plan[4], plan[2]
    return compiled(tuple(tuple(leaves[i] for i in g) for g in groups))

  plan, packed = _PLANS.get(treedef), None
  try:
    packed = plan and concatenate(plan)
  except (TypeError, ValueError):  # a leaf of another shape, dtype or sharding than planned
    pass
  if packed is None:
    if len(_PLANS) > 16:
      _PLANS.clear()
    plan = _PLANS[treedef] = _plan(state, leaves)
    packed = concatenate(plan)
  layout, names, _, plain = plan[:4]
  arrays = {'packed': dict(zip(names, packed)), 'plain': {name: leaves[i] for name, i in plain}}
  return {k: v for k, v in arrays.items() if v}, layout, (leaves, plan, arrays)


def same_leaves(leaves: list[Any], tree: Any) -> bool:
  """Whether `tree`'s leaves are the very objects in `leaves`, in order."""
  other = jax.tree_util.tree_leaves(tree)
  return len(other) == len(leaves) and all(a is b for a, b in zip(other, leaves))


def derive(packed: tuple | None, tree: Any) -> tuple[dict[str, Any], Callable] | None:
  """(layout, a function making the arrays) of `tree` from `packed` = `pack_for_reuse`'s record of a
  state holding each of `tree`'s leaves (the same objects, at the same paths): its packed
  arrays are slices of that state's, taken when the function is called. None otherwise."""
  if packed is None:
    return None
  state_leaves, plan, arrays = packed
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  subsets = plan[6]
  if treedef not in subsets:
    subsets[treedef] = _subset(plan, list(flat(tree)))
  subset = subsets[treedef]
  if subset is None:
    return None
  layout, slices, indices = subset
  if any(leaf is not state_leaves[i] for leaf, i in zip(leaves, indices)):
    return None
  return layout, lambda: {'packed': {name: arrays['packed'][source][start:stop]
                                     for name, source, start, stop in slices}}


def _check_layout(layout: dict[str, Any], wanted: dict[str, Any]) -> None:
  saved = {key for group in layout['packed'].values() for key, _, _ in group['leaves']}
  differ = sorted(wanted.keys() ^ (saved | layout['plain'].keys()))
  if differ:
    raise ValueError(f'the checkpoint holds another state: {differ[0]} is '
                     f'{"absent there" if differ[0] in wanted else "not in this state"}')


def unpack(arrays: dict[str, dict[str, Any]], layout: dict[str, Any], target: Any) -> Any:
  """The state of `target`'s structure, each leaf with its target sharding, from the restored
  `arrays` of `pack`. A leaf missing from the layout, or of another shape, raises ValueError."""
  wanted = flat(target)
  _check_layout(layout, wanted)
  members = [(name, key, tuple(shape), offset) for name, group in layout['packed'].items()
             for key, shape, offset in group['leaves']]
  for _, key, shape, _ in members:
    if shape != wanted[key].shape:
      raise ValueError(f'the checkpoint holds another state: {key} is {shape} there, '
                       f'{wanted[key].shape} here')

  def split(packed):  # cast to the target's dtype, as orbax's own restore does
    return [packed[name][offset:offset + math.prod(shape)].reshape(shape).astype(
        wanted[key].dtype) for name, key, shape, offset in members]

  shardings = [getattr(wanted[key], 'sharding', None) for _, key, _, _ in members]
  packed = arrays.get('packed', {})
  leaves = (split(packed) if None in shardings else
            jax.jit(split, out_shardings=shardings)(packed))
  found = dict(zip((key for _, key, _, _ in members), leaves))
  found.update({key: arrays['plain'][name] for key, name in layout['plain'].items()})
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target),
                                      [found[key] for key in wanted])


def restore_target(layout: dict[str, Any], target: Any) -> dict[str, dict[str, Any]]:
  """What orbax restores `arrays` onto: packed arrays replicated like their first leaf's
  target (on this run's mesh), plain ones like theirs."""
  wanted = flat(target)
  _check_layout(layout, wanted)
  out = {'packed': {}, 'plain': {name: wanted[key] for key, name in layout['plain'].items()}}
  for name, group in layout['packed'].items():
    sharding = getattr(wanted[group['leaves'][0][0]], 'sharding', None)
    if isinstance(sharding, jax.sharding.NamedSharding):  # P() also for a leaf's P(None, None)
      sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    elif sharding is not None and not sharding.is_fully_replicated:
      raise ValueError(f'cannot restore a packed array onto {sharding}: a NamedSharding is needed')
    out['packed'][name] = jax.ShapeDtypeStruct((group['size'],), jnp.dtype(group['dtype']),
                                               sharding=sharding)
  return {k: v for k, v in out.items() if v}
