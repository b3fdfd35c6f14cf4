"""VAE math against closed forms and numpy, latent walks, and the VAE end to end."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import free_port, load_config, write_fake_fashion_mnist
from jaxgen import build, inference, latents, train, validate
from jaxgen.eval import classifier, evaluate
from jaxgen.objectives import likelihoods
from jaxgen.objectives import vae as vae_lib


def _logistic_cdf(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_discretized_logistic(mean, log_scale, x):
  """Bin masses from the logistic CDF in float64; the edge bins are open-ended."""
  mean, log_scale, x = (np.asarray(a, np.float64) for a in (mean, log_scale, x))
  scale = np.exp(np.maximum(log_scale, likelihoods.LOG_SCALE_MIN))
  upper = np.where(x > 0.999, 1.0, _logistic_cdf((x + 1 / 255 - mean) / scale))
  lower = np.where(x < -0.999, 0.0, _logistic_cdf((x - 1 / 255 - mean) / scale))
  return np.log(upper - lower).reshape(x.shape[0], -1).sum(-1)


def numpy_kl(mean, logvar):
  """KL(N(mu, S) || N(0, I)) = (tr S + mu'mu - d - log det S) / 2, with S as a full matrix."""
  out = []
  for m, lv in zip(np.asarray(mean, np.float64), np.asarray(logvar, np.float64)):
    cov = np.diag(np.exp(lv))
    out.append(0.5 * (np.trace(cov) + m @ m - len(m) - np.linalg.slogdet(cov)[1]))
  return np.array(out)


def test_kl_matches_the_closed_form():
  rng = np.random.default_rng(0)
  mean, logvar = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
  np.testing.assert_allclose(likelihoods.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)),
                             numpy_kl(mean, logvar), rtol=1e-5)
  assert float(likelihoods.gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


def test_discretized_logistic_is_a_distribution_over_the_256_levels():
  levels = (np.arange(256) / 127.5 - 1.0).reshape(256, 1, 1, 1).astype(np.float32)
  for mean, log_scale in ((0.0, -3.0), (0.9, -4.5), (-1.0, -1.0), (0.3, 1.0)):
    out = np.broadcast_to(np.array([mean, log_scale], np.float32), (256, 1, 1, 2))
    log_mass = np.asarray(likelihoods.discretized_logistic_log_prob(jnp.asarray(out),
                                                                    jnp.asarray(levels)))
    assert abs(np.exp(log_mass.astype(np.float64)).sum() - 1.0) < 1e-4
    exact = numpy_discretized_logistic(out[..., :1], out[..., 1:], levels)
    # float32 differences of CDFs near 0 or 1 are exact to ~1e-7 in mass, so compare masses;
    # and log-masses where the mass is large enough for that to be tight.
    np.testing.assert_allclose(np.exp(log_mass.astype(np.float64)), np.exp(exact), atol=3e-7)
    big = np.exp(exact) > 1e-2
    np.testing.assert_allclose(log_mass[big], exact[big], atol=1e-4)


def test_bits_per_dim_conversion():
  # Fair coins for 784 binary pixels: exactly 1 bit each.
  logits = jnp.zeros((2, 28, 28, 1))
  bits = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 28, 28, 1)), jnp.float32)
  nats = -likelihoods.bernoulli_log_prob(logits, bits)
  np.testing.assert_allclose(nats, 784 * math.log(2), rtol=1e-6)
  np.testing.assert_allclose(likelihoods.bits_per_dim(nats, 784), 1.0, rtol=1e-6)
  # A uniform distribution over 256 levels is 8 bits per dimension.
  assert float(likelihoods.bits_per_dim(jnp.asarray(784 * math.log(256)), 784)) == pytest.approx(8)


def test_gaussian_likelihood_is_the_dequantised_density_times_the_bin_width():
  rng = np.random.default_rng(2)
  y = rng.uniform(-1, 1, (2, 3, 3, 1)).astype(np.float32)
  mean, log_scale = rng.normal(size=(2, 2, 3, 3, 1)).astype(np.float32) * 0.3
  for lik, out, scale in ((likelihoods.build('gaussian'), np.concatenate([mean, log_scale], -1),
                           np.exp(log_scale.astype(np.float64))),
                          (likelihoods.build('gaussian', 0.1), mean, np.full(mean.shape, 0.1))):
    expected = (-0.5 * ((y - mean) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)
                + math.log(2 / 255)).reshape(2, -1).sum(-1)
    np.testing.assert_allclose(lik.log_prob(jnp.asarray(out), jnp.asarray(y)), expected,
                               rtol=1e-5)


def test_kl_warmup_schedule():
  weights = [float(vae_lib.kl_weight_at(jnp.asarray(s), 4.0, 10)) for s in (0, 5, 10, 20)]
  assert weights == [0.0, 2.0, 4.0, 4.0]
  assert float(vae_lib.kl_weight_at(jnp.asarray(0), 0.5, 0)) == 0.5


def test_a_latent_grid_that_does_not_divide_the_image_is_a_config_error():
  config = load_config('tiny', 'vae_fashion_mnist')
  with config.unlocked():
    config.model.ch_mult = (1, 2, 2, 2)  # 28 is not divisible by 8
  with pytest.raises(validate.ConfigError, match=r'ch_mult=\(1, 2, 2, 2\) downsamples by 8.*'
                     r'data.image_size=28'):
    build.setup(config)


@pytest.fixture(scope='module')
def tiny_vae():
  config = load_config('tiny', 'vae_fashion_mnist')
  s = build.setup(config)
  state = build.init_state(s, jax.random.key(1))
  x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.float32) / 127.5 - 1
  model = vae_lib.models.build(config.model, (28, 28, 1), out_channels=2)
  return config, s, state, model, jnp.asarray(x)


def _posterior(model, params, x, example_keys):
  prep_keys, eps_keys = vae_lib._split_keys(example_keys)
  mean, logvar = model.apply(params, x, method='encode')
  return mean, logvar, eps_keys


def test_elbo_matches_numpy_on_fixed_inputs(tiny_vae):
  config, s, state, model, x = tiny_vae
  lik = likelihoods.build('logistic')
  params, keys = state['params'], jax.random.split(jax.random.key(3), 4)
  recon, kl = vae_lib.elbo_terms(model, lik, params, x, keys)

  mean, logvar, eps_keys = _posterior(model, params, x, keys)
  eps = np.stack([np.asarray(jax.random.normal(k, mean.shape[1:])) for k in eps_keys])
  z = np.asarray(mean) + np.exp(0.5 * np.asarray(logvar)) * eps
  out = np.asarray(model.apply(params, jnp.asarray(z, jnp.float32), method='decode'))
  expected_recon = -numpy_discretized_logistic(out[..., :1], out[..., 1:], np.asarray(x))
  np.testing.assert_allclose(recon, expected_recon, rtol=1e-4)
  np.testing.assert_allclose(kl, numpy_kl(mean, logvar), rtol=1e-4)
  # The objective's test metrics are the same numbers, and bits/dim is nats / (D ln 2).
  metrics = s.objective.test_metrics(params, {'image': x}, jax.random.key(3))
  np.testing.assert_allclose(metrics['nelbo_nats'], expected_recon + numpy_kl(mean, logvar),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics['nelbo_bits_per_dim'],
                             metrics['nelbo_nats'] / (784 * math.log(2)), rtol=1e-6)


def test_importance_weighted_bound_matches_numpy(tiny_vae):
  config, s, state, model, x = tiny_vae
  lik, params, k = likelihoods.build('logistic'), state['params'], 3
  keys = jax.random.split(jax.random.key(5), 4)
  bound = np.asarray(vae_lib.iwae_bound(model, lik, params, x, keys, k))

  mean, logvar, eps_keys = _posterior(model, params, x, keys)
  mean, var = np.asarray(mean, np.float64), np.exp(np.asarray(logvar, np.float64))
  log_w = []
  for i in range(k):
    eps = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), mean.shape[1:]))
                    for key in eps_keys])
    z = mean + np.sqrt(var) * eps
    out = np.asarray(model.apply(params, jnp.asarray(z, jnp.float32), method='decode'))
    log_px = numpy_discretized_logistic(out[..., :1], out[..., 1:], np.asarray(x))
    log_pz = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)
    log_qz = (-0.5 * ((z - mean) ** 2 / var + np.log(var) + math.log(2 * math.pi))).sum(-1)
    log_w.append(log_px + log_pz - log_qz)
  log_w = np.stack(log_w)
  expected = np.log(np.exp(log_w - log_w.max(0)).mean(0)) + log_w.max(0)
  np.testing.assert_allclose(bound, expected, rtol=1e-4)


def test_interpolation_endpoints_decode_to_the_reconstructions(tiny_vae):
  config, s, state, model, x = tiny_vae
  params = s.objective.sample_params(state)
  a, b = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 5)), jnp.float32)
  for path in latents.PATHS:
    walk = latents.walks(a, b, 6, path)
    np.testing.assert_allclose(walk[:, 0], a, atol=1e-5)
    np.testing.assert_allclose(walk[:, -1], b, atol=1e-5)
  # Slerp keeps the norm between the endpoints' norms when they are equal.
  unit = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  other = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  np.testing.assert_allclose(jnp.linalg.norm(latents.walks(unit, other, 5, 'spherical'), axis=-1),
                             1.0, atol=1e-5)

  walks = latents.interpolate(s, state, np.asarray(x), 5)
  recon = np.asarray(s.objective.decode(params, s.objective.encode(params, x)))
  for path, walk in walks.items():
    assert walk.shape == (2, 5, 28, 28, 1) and walk.dtype == np.uint8
    np.testing.assert_allclose(walk[:, 0].astype(int), recon[0::2].astype(int), atol=1)
    np.testing.assert_allclose(walk[:, -1].astype(int), recon[1::2].astype(int), atol=1)
    assert np.any(walk[:, 2] != walk[:, 0]), path  # the walk moves


@pytest.mark.slow
def test_vae_trains_resumes_evaluates_and_interpolates(tmp_path):
  """The tiny VAE config: train to 3, resume to 6, then jaxgen-eval on 2 processes."""
  data = write_fake_fashion_mnist(tmp_path / 'fmnist', num_train=64, num_test=24)
  workdir = tmp_path / 'run'

  config = load_config('tiny', 'vae_fashion_mnist')
  with config.unlocked():
    config.data.manual_dir, config.data.data_dir = str(data), str(tmp_path / 'tfds')
  train.run(config, str(workdir), stop_at_step=3)
  train.run(config, str(workdir))
  lines = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [line['step'] for line in lines] == [2, 4, 6]
  assert all(np.isfinite(line['bits_per_dim']) and line['kl_nats'] >= 0 for line in lines)
  # KL warm-up over 4 steps: each line averages the steps it covers (steps 1-2: 0, 0.25;
  # after the resume at 3, step 4 alone: 0.75; steps 5-6: 1, 1).
  np.testing.assert_allclose([line['kl_weight'] for line in lines], [0.125, 0.75, 1.0])
  for name in ('step_0000006.png', 'reconstructions_step_0000006.png'):
    assert (workdir / 'samples' / name).stat().st_size > 0

  # jaxgen-eval as 2 processes x 4 devices (the multi-host path: sharded sampling, test
  # batches and classifier features, gathered to process 0) must give what one process x 8
  # devices gives, FD-FMNIST included.
  clf_data = classifier.data_config(str(tmp_path / 'tfds'), str(data))
  clf_dir = str(tmp_path / 'classifier')
  trained = classifier.train(clf_data, epochs=1, batch_size=32)
  classifier.save(clf_dir, trained, {'epochs': 1})
  classifier.write_reference(clf_dir, trained.params, clf_data)
  port = free_port()
  args = [sys.executable, '-m', 'jaxgen.eval.main', f'--workdir={workdir}', '--num_samples=16',
          '--batch_size=8', f'--classifier_dir={clf_dir}', '--test_images=20',
          '--num_cpu_devices=4',
          f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  procs = [subprocess.Popen(args + [f'--process_id={i}'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  try:
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  out = outputs[0]
  result = json.loads((workdir / 'eval' / 'metrics.jsonl').read_text().splitlines()[-1])
  s, state, _, _ = inference.restore_for_sampling(str(workdir))
  one_process = evaluate.test_split_metrics(s, state, evaluate.Options(
      batch_size=8, test_images=20, classifier_dir=''))
  for name in ('test/nelbo_nats', 'test/iwae4_nats', 'test/nelbo_bits_per_dim'):
    assert result[name] == pytest.approx(one_process[name], rel=1e-5), name
  one_process = evaluate.fmnist_metrics(inference.generate(s, state, 16, 8, 0), clf_dir)
  for name in ('fd_fmnist', 'fd_fmnist_floor', 'kid_fmnist', 'class_entropy_bits'):
    assert result[name] == pytest.approx(one_process[name], rel=1e-3), name
  assert result['test_images'] == 20
  assert result['test/iwae4_nats'] <= result['test/nelbo_nats'] + 1.0
  assert result['test/nelbo_bits_per_dim'] == pytest.approx(
      result['test/nelbo_nats'] / (784 * math.log(2)), rel=1e-6)
  assert 'nelbo_bits_per_dim' in out
  # Latent walks (jaxgen-sample --interpolate, api.interpolate): test_notebook.py.
