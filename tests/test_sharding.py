"""Parameter and batch layouts on (4, 2) and (8, 1) meshes are the configured ones."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxgen import build, sharding


def _mesh(data, fsdp):
  return sharding.make_mesh(ml_collections.ConfigDict({'data': data, 'fsdp': fsdp}))


def test_size_aware_fsdp_rule():
  mesh = _mesh(4, 2)
  tree = {'big': jax.ShapeDtypeStruct((3, 3, 64, 128), jnp.float32),
          'odd': jax.ShapeDtypeStruct((3, 3, 63, 63), jnp.float32),  # nothing divisible by 2
          'small': jax.ShapeDtypeStruct((128,), jnp.float32),
          'step': jax.ShapeDtypeStruct((), jnp.int32),
          'explicit': jax.ShapeDtypeStruct((8, 16), jnp.float32)}
  rules = [('explicit', ('data', None)), ('.*', 'fsdp')]
  specs = sharding.tree_specs(tree, rules, mesh, fsdp_min_size=1000)
  assert specs == {'big': P(None, None, None, 'fsdp'), 'odd': P(), 'small': P(), 'step': P(),
                   'explicit': P('data', None)}
  # On a mesh without an fsdp axis the same rule replicates everything.
  specs = sharding.tree_specs(tree, rules, _mesh(8, 1), fsdp_min_size=1000)
  assert specs['big'] == P()


def test_mesh_fills_minus_one():
  assert dict(_mesh(-1, 2).shape) == {'data': 4, 'fsdp': 2}
  assert dict(_mesh(8, -1).shape) == {'data': 8, 'fsdp': 1}
  with pytest.raises(ValueError, match='cannot be filled'):
    _mesh(3, -1)


@pytest.mark.parametrize('data,fsdp', [(4, 2), (8, 1)])
def test_train_state_and_batch_are_laid_out_as_configured(tiny_config, data, fsdp):
  config = tiny_config
  with config.unlocked():
    config.mesh.data, config.mesh.fsdp = data, fsdp
    config.sharding.fsdp_min_size = 1024
  s = build.setup(config)
  state = build.init_state(s, jax.random.key(0))
  kernel = state['params']['up'][0]['conv1']['kernel']  # (3, 3, 16, 8): 1152 elements
  adam_mu = state['opt_state'][1][0].mu['up'][0]['conv1']['kernel']
  bias = state['params']['up'][0]['conv1']['bias']
  expected = P(None, None, 'fsdp', None) if fsdp > 1 else P()
  for array in (kernel, adam_mu, state['ema_params']['up'][0]['conv1']['kernel']):
    assert array.sharding.spec == expected
    assert array.sharding.mesh.shape == {'data': data, 'fsdp': fsdp}
  assert bias.sharding.spec == P()
  if fsdp > 1:  # each device holds half of the big kernel
    assert kernel.addressable_shards[0].data.shape == (3, 3, 8, 8)
  # The batch is split over all 8 devices, whatever the mesh.
  batch = {'image': np.zeros((16, 28, 28, 1), np.float32)}
  global_batch = jax.make_array_from_process_local_data(s.batch_sharding, batch['image'])
  assert global_batch.sharding.spec == P(('data', 'fsdp'))
  assert {shard.data.shape[0] for shard in global_batch.addressable_shards} == {2}
  # The compiled step keeps the layout (no silent resharding of the state).
  step = build.jit_train_step(s)
  new_state, _ = step(state, {'image': global_batch,
                              'label': jax.make_array_from_process_local_data(
                                  s.batch_sharding, np.zeros(16, np.int32))},
                      jax.random.key(1))
  assert new_state['params']['up'][0]['conv1']['kernel'].sharding.spec == expected
