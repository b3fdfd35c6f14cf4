"""The checkpoint format: small replicated arrays packed per dtype (packing.pack), restored
exactly onto any layout, and checkpoints written before packing still read."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import tiny_config_with
from jaxgen import checkpoint, packing


def _mesh():
  return jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))


def _state(mesh):
  rng = np.random.default_rng(0)
  put = lambda x, spec=None: jax.device_put(x, NamedSharding(mesh, spec or P()))
  return {
      'params': {'a': put(rng.normal(size=(3, 5)).astype(np.float32)),
                 'b': put(rng.normal(size=(8,)).astype(np.float32)),
                 'big': put(rng.normal(size=(512, 1024)).astype(np.float32)),  # 2 MiB
                 'sharded': put(rng.normal(size=(16, 4)).astype(np.float32), P('data')),
                 'half': put(rng.normal(size=(7,)).astype(jnp.bfloat16))},
      'step': put(np.int32(12)),
      'rng': put(jax.random.key_data(jax.random.key(3))),
      'scale': put(np.float32(0.25)),
  }


def _target(state, specs=None):
  specs = specs or {}
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
          x.sharding.mesh, specs.get(jax.tree_util.keystr(path, simple=True, separator='/'),
                                     x.sharding.spec))), state)


def _assert_same(state, restored, target):
  for (path, x), y, t in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                             jax.tree.leaves(restored), jax.tree.leaves(target)):
    assert y.dtype == x.dtype and y.shape == x.shape, path
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=str(path))
    assert y.sharding == t.sharding, path


def test_small_replicated_arrays_are_packed_and_restore_exactly_onto_any_layout(tmp_path):
  state = _state(_mesh())
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=False)
  ckpt.save(1, state, None, tiny_config_with(), force=True)
  layout = json.loads((ckpt.directory / '1' / 'layout' / 'metadata').read_text())
  # One array per dtype for the small replicated leaves; the 2 MiB and the sharded one alone.
  packed = {group['dtype']: [key for key, _, _ in group['leaves']]
            for group in layout['packed'].values()}
  assert packed == {'float32': ['params/a', 'params/b', 'scale'], 'bfloat16': ['params/half'],
                    'uint32': ['rng'], 'int32': ['step']}
  assert sorted(layout['plain']) == ['params/big', 'params/sharded']
  items = {p.name for p in (ckpt.directory / '1').iterdir()}
  assert {'arrays', 'config', 'layout'} <= items and 'state' not in items
  # The same layout, and another one: packed leaves sharded, the sharded leaf replicated.
  for specs in ({}, {'params/b': P('data'), 'params/sharded': P(), 'params/big': P('data')}):
    target = _target(state, specs)
    _assert_same(state, ckpt.restore(1, target), target)
  # A packed leaf restored onto another dtype is cast to it, as orbax casts the others.
  target = _target(state)
  target['params']['a'] = jax.ShapeDtypeStruct((3, 5), jnp.bfloat16,
                                               sharding=target['params']['a'].sharding)
  restored = ckpt.restore(1, target)['params']['a']
  assert restored.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(restored),
                                np.asarray(state['params']['a']).astype(jnp.bfloat16))
  ckpt.close()


def test_a_state_of_the_same_structure_but_other_leaves_is_laid_out_anew(tmp_path):
  """pack reuses its plan per tree structure; a leaf of another shape, dtype or sharding must
  not be written where the old plan put it."""
  mesh = _mesh()
  first = _state(mesh)
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=False)
  ckpt.save(1, first, None, tiny_config_with(), force=True)
  second = _state(mesh)
  second['params']['a'] = jax.device_put(np.arange(20, dtype=np.float32).reshape(4, 5),
                                         NamedSharding(mesh, P()))
  second['params']['b'] = jax.device_put(np.arange(8, dtype=np.int32), NamedSharding(mesh, P()))
  second['scale'] = jax.device_put(np.zeros((8,), np.float32), NamedSharding(mesh, P('data')))
  ckpt.save(2, second, None, tiny_config_with(), force=True)
  layout = json.loads((ckpt.directory / '2' / 'layout' / 'metadata').read_text())
  assert 'scale' in layout['plain']  # sharded now: saved as itself
  for step, state in ((1, first), (2, second)):
    target = _target(state)
    _assert_same(state, ckpt.restore(step, target), target)
  ckpt.close()


def test_a_part_of_a_saved_state_is_saved_from_its_packed_copy(tmp_path, monkeypatch):
  """The EMA snapshots are part of the train state: saved `within` the state's save, their
  packed arrays are slices of the state's (no second copy while the loop waits), with the
  layout and the values a save of their own would give. A part whose leaves are not the
  state's, or not one run of its packed arrays, is packed anew."""
  state = _state(_mesh())
  packs = []
  pack = packing.pack_for_reuse
  monkeypatch.setattr(packing, 'pack_for_reuse', lambda tree: packs.append(tree) or pack(tree))
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=True)
  parts = checkpoint.Checkpointer(str(tmp_path), use_async=True, subdir=checkpoint.SNAPSHOT_DIR)
  config = tiny_config_with()
  run = {'params': {'a': state['params']['a'], 'b': state['params']['b']}}
  copied = jax.tree.map(lambda x: x + 0, run)
  gap = {'params': {'a': state['params']['a']}, 'scale': state['scale']}  # b lies between
  for step, part, derived in ((1, run, True), (2, copied, False), (3, gap, False)):
    packs.clear()
    with checkpoint.start_together():
      ckpt.save(step, state, None, config, force=True)
      parts.save(step, part, None, config, force=True, within=ckpt)
    assert len(packs) == (1 if derived else 2), step
    parts.wait()
    layout = json.loads((parts.directory / str(step) / 'layout' / 'metadata').read_text())
    assert layout == packing.pack(part)[1], step
    target = _target(part)
    _assert_same(part, parts.restore(step, target), target)
  ckpt.close()
  parts.close()


def test_a_prepared_copy_is_saved_only_for_its_step_and_state(tmp_path, monkeypatch):
  """`prepare` (the loop calls it right after dispatching the step) makes the packed copy that
  `save` then writes; a save of another step or of other leaves packs anew, so what is saved
  is always the state given to `save`; a step that is no save step prepares nothing."""
  state = _state(_mesh())
  packs = []
  pack = packing.pack_for_reuse
  monkeypatch.setattr(packing, 'pack_for_reuse', lambda tree: packs.append(tree) or pack(tree))
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=2, use_async=True)
  config = tiny_config_with()
  other = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
  for step, prepared, saved, packed in ((2, state, state, 1), (4, state, other, 2),
                                        (6, state, state, 2)):
    packs.clear()
    ckpt.prepare(step if step != 6 else 8, prepared)  # 6: prepared for another step
    ckpt.save(step, saved, None, config)
    assert len(packs) == packed, step
    ckpt.wait()
    target = _target(saved)
    _assert_same(saved, ckpt.restore(step, target), target)
  packs.clear()
  ckpt.prepare(7, state)
  assert not packs  # step 7 is no save step
  ckpt.close()


def test_a_checkpoint_written_before_packing_still_restores(tmp_path):
  state = _state(_mesh())
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=False)
  ckpt.manager.save(1, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      config=ocp.args.JsonSave(json.loads(tiny_config_with().to_json()))))
  target = _target(state)
  _assert_same(state, ckpt.restore(1, target), target)
  ckpt.close()


@pytest.mark.parametrize('change', ['missing', 'extra', 'shape'])
def test_a_checkpoint_of_another_state_is_refused_naming_the_leaf(tmp_path, change):
  state = _state(_mesh())
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=False)
  ckpt.save(1, state, None, tiny_config_with(), force=True)
  target = _target(state)
  if change == 'missing':
    del target['params']['a']
    match = r'the checkpoint holds another state: params/a is not in this state'
  elif change == 'extra':
    target['params']['c'] = target['params']['b']
    match = r'the checkpoint holds another state: params/c is absent there'
  else:
    target['params']['a'] = jax.ShapeDtypeStruct((5, 3), np.float32,
                                                  sharding=target['params']['a'].sharding)
    match = r'the checkpoint holds another state: params/a is \(3, 5\) there, \(5, 3\) here'
  with pytest.raises(ValueError, match=match):
    ckpt.restore(1, target)
  ckpt.close()


def test_an_async_save_outlives_the_state_it_was_given(tmp_path):
  """The trainer donates the state to the next step right after save() returns: the save
  (on its background thread) must write copies. The original arrays are deleted at once."""
  state = _state(_mesh())
  del state['params']['big'], state['params']['sharded']  # all packed: saved in background
  expected = jax.tree.map(np.asarray, state)
  target = _target(state)
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=True)
  assert ckpt.save(1, state, None, tiny_config_with(), force=True)
  assert ckpt._saving is not None
  for x in jax.tree.leaves(state):
    x.delete()
  ckpt.wait()
  restored = ckpt.restore(1, target)
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), expected)


def test_a_background_save_that_fails_is_reported_at_the_next_wait(tmp_path, monkeypatch):
  state = _state(_mesh())
  del state['params']['big'], state['params']['sharded']
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=True)
  ckpt.save(1, state, None, tiny_config_with(), force=True)
  ckpt.wait()

  def save(*args, **kwargs):
    raise ValueError('RESOURCE_EXHAUSTED: Failed to write 30825 bytes to file 15: No space '
                     "left on device [os_error_code='28']")
  monkeypatch.setattr(ckpt.manager, 'save', save)
  assert ckpt.save(2, state, None, tiny_config_with(), force=True)  # fails on its thread
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'saving the checkpoint of step 2 in \S+ failed: No space left on '
                           r'device. The newest complete checkpoint is step 1 \(intact'):
    ckpt.wait()


def test_saves_started_together_begin_in_order_when_the_block_ends(tmp_path, monkeypatch):
  """The trainer asks for the state's and the EMA snapshots' saves inside start_together: the
  saver thread holds them back until the block ends (so the first one's orbax work does not
  hold the GIL while the second is packed), then runs them in order. A wait inside the block
  starts them rather than waiting forever."""
  state = _state(_mesh())
  del state['params']['big'], state['params']['sharded']
  ckpt = checkpoint.Checkpointer(str(tmp_path), use_async=True)
  snapshots = checkpoint.Checkpointer(str(tmp_path), use_async=True,
                                      subdir=checkpoint.SNAPSHOT_DIR)
  started = []
  for name, series in (('state', ckpt), ('snapshot', snapshots)):
    monkeypatch.setattr(series.manager, 'save', lambda *a, save=series.manager.save, name=name,
                        **k: started.append(name) or save(*a, **k))
  for step in (1, 2):  # as in the trainer, step 2's saves first join those of step 1
    with checkpoint.start_together():
      assert ckpt.save(step, state, None, tiny_config_with(), force=True)
      assert snapshots.save(step, {'ema': state['params']}, None, tiny_config_with(),
                            force=True)
      time.sleep(0.2)  # time for the saver thread to start early, were it not held back
      assert started == ['state', 'snapshot'] * (step - 1)
  ckpt.wait()
  snapshots.wait()
  assert started == ['state', 'snapshot'] * 2
  assert ckpt.all_steps() == [1, 2] and snapshots.all_steps() == [1, 2]
  with checkpoint.start_together():
    assert ckpt.save(3, state, None, tiny_config_with(), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2, 3]
  ckpt.close()
  snapshots.close()
