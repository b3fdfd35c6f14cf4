"""Latent diffusion: a diffusion run on the latents of a frozen KL-autoencoder run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_trees_equal, tiny_config_with, tiny_run_resumes_exactly


def _train_autoencoder(tmp_path) -> str:
  from conftest import write_fake_fashion_mnist
  from jaxgen import train

  data = write_fake_fashion_mnist(tmp_path / 'fmnist', num_train=64, num_test=16)
  config = tiny_config_with('autoencoder_kl_fashion_mnist', **{
      'data.manual_dir': str(data), 'data.data_dir': str(tmp_path / 'tfds')})
  workdir = str(tmp_path / 'ae')
  train.run(config, workdir)
  return workdir


def test_a_latent_diffusion_run_keeps_its_autoencoder_frozen_and_resumes_exactly(tmp_path):
  """The tiny LDM config (a DiT on the tiny autoencoder's 14x14x3 latents): the run resumes
  exactly; the autoencoder's parameters are those of its checkpoint after every step (never
  donated or updated); the latent scale is 1/std of the first batch's latents; samples are
  decoded to pixels; another autoencoder under the same workdir is refused."""
  from jaxgen import api, build, checkpoint, inference, train
  from jaxgen.data import pipeline
  from jaxgen.objectives import latent

  ae_dir = _train_autoencoder(tmp_path)
  config, state = tiny_run_resumes_exactly('ldm_fashion_mnist', tmp_path,
                                           **{'autoencoder.workdir': ae_dir})
  s = build.setup(config)
  assert s.abstract_state['params']['patch_embed']['kernel'].shape[2] == 3  # latent channels
  # The autoencoder is not in the run's state: only the latent scale and its hash are.
  assert set(state) == {'step', 'params', 'ema_params', 'opt_state', 'latent_scale',
                        latent.HASH_KEY}

  # The autoencoder as its own run saved it, and as the steps left it.
  _, ae_state, _, _ = inference.restore_for_sampling(ae_dir)
  ae_params = ae_state['params']['autoencoder']
  frozen = build.frozen_inputs(s)
  assert_trees_equal(frozen['params'], ae_params)
  np.testing.assert_array_equal(state[latent.HASH_KEY], latent.fingerprint(ae_params))

  # LDM's scale_by_std on the first batch.
  first = next(iter(pipeline.make_dataset(config.data, config.global_batch_size, config.seed)))
  ae = latent.Autoencoder(config.autoencoder, config.data)
  z = ae.objective.encode(ae_params, jnp.asarray(first['image']))
  np.testing.assert_allclose(state['latent_scale'], 1 / jnp.std(z), rtol=1e-5)

  result = api.sample(str(tmp_path / 'b'), num_images=4, options={'steps': 2})
  assert result.images.shape == (4, 28, 28, 1) and result.images.dtype == np.uint8

  # Another autoencoder under the same workdir and step: sampling and resuming stop.
  changed = jax.tree_util.tree_map(lambda x: x + 0.01, ae_state)
  step = checkpoint.Checkpointer(ae_dir).latest_step()
  other = str(tmp_path / 'ae_other')
  ckpt = checkpoint.Checkpointer(other, use_async=False)
  ckpt.save(step, changed, None, ae.config, force=True)
  ckpt.close()
  moved = tiny_config_with('ldm_fashion_mnist', **{
      'autoencoder.workdir': other, 'data.manual_dir': config.data.manual_dir,
      'data.data_dir': config.data.data_dir})
  with pytest.raises(ValueError, match='trained on the latents of an autoencoder with SHA-256'):
    build.jit_sample(build.setup(moved), 4)(state, jax.random.key(0))
  train.run(config, str(tmp_path / 'c'), stop_at_step=3)
  with pytest.raises(ValueError, match='trained on the latents of an autoencoder with SHA-256'):
    train.run(moved, str(tmp_path / 'c'))
  assert checkpoint.Checkpointer(str(tmp_path / 'c')).all_steps() == [1, 3]  # nothing lost


def test_latent_diffusion_without_an_autoencoder_run_is_a_clear_error(tmp_path):
  from jaxgen import build

  config = tiny_config_with('ldm_fashion_mnist', **{'autoencoder.workdir': str(tmp_path)})
  with pytest.raises(FileNotFoundError, match='holds no checkpoint: train the autoencoder'):
    build.setup(config)
