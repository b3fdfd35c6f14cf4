"""Schedules, forward process and samplers against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.samplers import SAMPLERS, ddpm
from jaxgen.samplers import schedules as sch
from jaxgen.state import ema_decay_at, ema_update


def test_linear_schedule_closed_form():
  s = sch.linear_schedule(1000)
  np.testing.assert_allclose(s.betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(s.alphas_cumprod[9], np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:10]))
  # Published value: alpha_bar_T of the DDPM schedule is ~4.0e-5.
  assert 3.9e-5 < s.alphas_cumprod[-1] < 4.1e-5


def test_cosine_schedule_closed_form():
  s = sch.cosine_schedule(1000)
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  t = np.array([0, 100, 500, 900])
  np.testing.assert_allclose(s.alphas_cumprod[t], f((t + 1) / 1000) / f(0), rtol=1e-9)
  assert s.betas.max() <= 0.999


@pytest.mark.parametrize('prediction', ['eps', 'v'])
def test_predictions_invert_the_forward_process(prediction):
  s = sch.cosine_schedule(100)
  keys = jax.random.split(jax.random.key(0), 2)
  x0 = jax.random.uniform(keys[0], (4, 8, 8, 1), minval=-1, maxval=1)
  eps = jax.random.normal(keys[1], x0.shape)
  t = jnp.array([0, 10, 50, 99])
  x_t = sch.q_sample(s, x0, t, eps)
  out = eps if prediction == 'eps' else sch.v_target(s, x0, t, eps)
  x0_hat, eps_hat = sch.to_x0_eps(s, prediction, out, x_t, t)
  np.testing.assert_allclose(eps_hat, eps, atol=2e-4 if prediction == 'v' else 1e-6)
  # At t=99 eps-prediction divides by sqrt(abar) ~ 0: only the well-conditioned ones.
  np.testing.assert_allclose(x0_hat[:3], x0[:3], atol=1e-3)


def test_q_sample_moments():
  s = sch.linear_schedule(1000)
  t = jnp.full((20000,), 300)
  x0 = jnp.full((20000, 1, 1, 1), 0.5)
  x_t = sch.q_sample(s, x0, t, jax.random.normal(jax.random.key(0), x0.shape))
  abar = s.alphas_cumprod[300]
  assert abs(float(x_t.mean()) - np.sqrt(abar) * 0.5) < 0.02
  assert abs(float(x_t.var()) - (1 - abar)) < 0.02


def test_timestep_subsequence():
  np.testing.assert_array_equal(ddpm.timestep_subsequence(1000, 1000), np.arange(1000)[::-1])
  ts = ddpm.timestep_subsequence(1000, 50)
  assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
  with pytest.raises(ValueError, match='sampler steps'):
    ddpm.timestep_subsequence(1000, 0)


def _point_mass_denoiser(schedule, value):
  """The exact denoiser for data that is always `value`: x0_hat = value."""
  def denoise(x, t):
    x0 = jnp.full_like(x, value)
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[t][:, None, None, None]
    return x0, (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)
  return denoise


@pytest.mark.parametrize('name,kwargs', [('ddpm', {'steps': 1000}), ('ddpm', {'steps': 20}),
                                         ('ddim', {'steps': 20, 'eta': 0.0}),
                                         ('ddim', {'steps': 7, 'eta': 1.0})])
def test_samplers_recover_a_point_mass(name, kwargs):
  s = sch.linear_schedule(1000)
  out = SAMPLERS[name](_point_mass_denoiser(s, 0.25), s, jax.random.key(0), (3, 4, 4, 1),
                       **kwargs)
  np.testing.assert_allclose(out, 0.25, atol=1e-4)


def test_ddim_eta_one_is_ancestral_ddpm():
  """DDIM with eta=1 takes the same step as DDPM's posterior (same noise, same result)."""
  s = sch.linear_schedule(1000)

  def denoise(x, t):  # some smooth, non-trivial x0-predictor
    x0 = jnp.tanh(0.7 * x + 0.001 * t[:, None, None, None])
    abar = jnp.asarray(s.alphas_cumprod, jnp.float32)[t][:, None, None, None]
    return x0, (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)

  key = jax.random.key(3)
  a = SAMPLERS['ddpm'](denoise, s, key, (2, 4, 4, 1), steps=25, clip=False)
  b = SAMPLERS['ddim'](denoise, s, key, (2, 4, 4, 1), steps=25, eta=1.0, clip=False)
  np.testing.assert_allclose(a, b, atol=2e-4)
  c = SAMPLERS['ddim'](denoise, s, key, (2, 4, 4, 1), steps=25, eta=0.0, clip=False)
  assert not np.allclose(a, c, atol=1e-2)


def test_ema_closed_form():
  ema = {'w': jnp.zeros(3)}
  for step in range(3):
    ema = ema_update(ema, {'w': jnp.ones(3)}, ema_decay_at(jnp.array(step), 0.9, True))
  # decays (with warm-up): 1/10, 2/11, 3/12 -> 1 - prod(decay)
  np.testing.assert_allclose(ema['w'], 1 - (0.1 * 2 / 11 * 3 / 12), rtol=1e-6)
  assert float(ema_decay_at(jnp.array(10_000), 0.9, True)) == pytest.approx(0.9)


def test_every_random_stream_of_the_diffusion_loss_is_its_own():
  """Dropout must not reuse a key that draws an example's timestep, noise or label drop
  (fold_in(key, 1) is split(key, n)[1] under partitionable threefry: the noise key)."""
  from jaxgen.objectives import diffusion

  seen = {}

  def apply_fn(params, x_t, t, labels, dropout_rng):
    seen['dropout'] = dropout_rng
    return x_t

  example_keys = jax.random.split(jax.random.key(0), 4)
  batch = {'image': jnp.zeros((4, 2, 2, 1)), 'label': jnp.zeros(4, jnp.int32)}
  diffusion.diffusion_loss(apply_fn, None, batch, example_keys,
                           schedule=sch.linear_schedule(10, 1e-4, 0.02), prediction='eps',
                           num_classes=10, label_dropout=0.1)
  data = lambda key: tuple(np.asarray(jax.random.key_data(key)).ravel())
  # The example keys, and the first three splits / folds of each (what the three per-example
  # draws take, however they derive them).
  used = {data(k) for k in example_keys}
  for key in example_keys:
    used |= {data(k) for k in jax.random.split(key, 3)}
    used |= {data(jax.random.fold_in(key, i)) for i in range(3)}
  assert data(seen['dropout']) not in used
