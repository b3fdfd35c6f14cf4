"""The KL autoencoder: two networks, two optimizer states, a discriminator that waits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config_with, tiny_run_resumes_exactly
from jaxgen import build
from jaxgen.objectives import autoencoder


def _config(**overrides):
  return tiny_config_with('autoencoder_kl_fashion_mnist', **overrides)


def test_psnr_and_hinge_loss_closed_forms():
  x = jnp.zeros((2, 4, 4, 1))
  # An error of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01, 20 dB.
  np.testing.assert_allclose(autoencoder.psnr(x, x + 0.2), 20.0, rtol=1e-5)
  assert float(autoencoder.hinge_d_loss(jnp.full((3,), 2.0), jnp.full((3,), -2.0))) == 0.0
  assert float(autoencoder.hinge_d_loss(jnp.zeros(3), jnp.zeros(3))) == 1.0


def test_both_optimizer_states_are_sharded_like_their_networks():
  config = _config(**{'mesh.data': 1, 'mesh.fsdp': 8, 'sharding.fsdp_min_size': 256})
  s = build.setup(config)
  flat_params = dict(jax.tree_util.tree_flatten_with_path(s.state_shardings['params'])[0])
  split = {}
  for network in ('autoencoder', 'discriminator'):
    adam = s.state_shardings['opt_state'][network][0][0]  # chain(adamw(scale_by_adam, ...))
    for moment in (adam.mu, adam.nu):
      for path, leaf_sharding in jax.tree_util.tree_flatten_with_path(moment)[0]:
        assert leaf_sharding.spec == flat_params[(jax.tree_util.DictKey(network), *path)].spec
        split[network] = split.get(network, 0) + ('fsdp' in leaf_sharding.spec)
  # Both networks have tensors big enough to be split over the 8-way fsdp axis.
  assert split['autoencoder'] > 0 and split['discriminator'] > 0


def test_discriminator_is_frozen_before_its_start_step():
  config = _config(**{'autoencoder.disc_start': 2})
  s = build.setup(config)
  state = build.init_state(s, jax.random.key(0))
  x = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32)
  batch = jax.device_put({'image': x, 'label': np.zeros(16, np.int32)}, s.batch_sharding)
  step_fn = build.jit_train_step(s)

  def host(tree):
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))

  history = [host(state)]
  active = []
  with jax.set_mesh(s.mesh):
    for i in range(4):
      state, metrics = step_fn(state, batch, jax.random.key(i))
      history.append(host(state))
      active.append(float(metrics['disc_active']))
  assert active == [0.0, 0.0, 1.0, 1.0]

  def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))
  for before, after in zip(history[:2], history[1:3]):
    assert same(before['params']['discriminator'], after['params']['discriminator'])
    assert same(before['opt_state']['discriminator'], after['opt_state']['discriminator'])
  # Meanwhile the autoencoder learns (its learning rate warms up from 0 at step 0).
  assert not same(history[1]['params']['autoencoder'], history[2]['params']['autoencoder'])
  # Its learning-rate schedule runs from disc_start (the step counter, offset), so its
  # warm-up starts then: the first active update has learning rate 0 and changes the
  # moments, the second the weights.
  disc = [(h['params']['discriminator'], h['opt_state']['discriminator']) for h in history]
  assert not same(disc[2][1], disc[3][1]) and not same(disc[3][0], disc[4][0])


@pytest.mark.slow
def test_autoencoder_trains_resumes_exactly_and_reports_psnr(tmp_path):
  tiny_run_resumes_exactly('autoencoder_kl_fashion_mnist', tmp_path)
  lines = [json.loads(line) for line in (tmp_path / 'a' / 'metrics.jsonl').read_text().splitlines()]
  # disc_start=3: off for steps 1-2; the line at 4 covers step 4 alone (resumed at 3).
  assert [line['disc_active'] for line in lines] == [0.0, 1.0, 1.0]
  # The discriminator's metrics average over the steps it trains: none before step 3.
  assert 'd_loss' not in lines[0] and all(np.isfinite(line['d_loss']) for line in lines[1:])
  assert all(line['psnr'] > 0 for line in lines)
  assert (tmp_path / 'a' / 'samples' / 'reconstructions_step_0000006.png').exists()
  assert not (tmp_path / 'a' / 'samples' / 'step_0000006.png').exists()  # no samples: an AE

  from jaxgen import api, inference
  from jaxgen.eval import evaluate
  s, state, step, _ = inference.restore_for_sampling(str(tmp_path / 'a'))
  result = evaluate.test_split_metrics(s, state, evaluate.Options(batch_size=8))
  assert result['test_images'] == 16 and 0 < result['test/psnr'] < 60
  with pytest.raises(ValueError, match='does not generate images from noise; use --interpolate'):
    api.sample(str(tmp_path / 'a'), step=None, num_images=8, seed=0)
