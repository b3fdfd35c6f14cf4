"""Schedules, forward process and samplers against closed forms."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import ddpm_reference
from conftest import load_config
from jaxgen.objectives import formulations
from jaxgen.samplers import SAMPLERS, run_sampler, spacings
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
def test_the_vp_denoiser_inverts_the_forward_process(prediction):
  """Given the true eps (or v) at a trained timestep, the samplers' denoiser returns x0."""
  s = sch.cosine_schedule(100)
  keys = jax.random.split(jax.random.key(0), 2)
  x0 = jax.random.uniform(keys[0], (2, 8, 8, 1), minval=-1, maxval=1)
  eps = jax.random.normal(keys[1], x0.shape)
  for t in (0, 10, 50, 90):
    ts = jnp.full((2,), t)
    x_t = sch.q_sample(s, x0, ts, eps)
    out = eps if prediction == 'eps' else sch.v_target(s, x0, ts, eps)
    seen = {}

    def model_fn(x, t_in, out=out, seen=seen):
      seen['x'], seen['t'] = x, t_in
      return out

    denoise = sch.vp_denoiser(s, prediction, model_fn, clip=False, snap=True)
    x0_hat = denoise(x_t / np.sqrt(s.alphas_cumprod[t]), jnp.float32(s.sigmas[t]))
    np.testing.assert_array_equal(seen['t'], t)  # the trained timestep of that sigma
    np.testing.assert_allclose(seen['x'], x_t, atol=1e-5)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)


def test_q_sample_moments():
  s = sch.linear_schedule(1000)
  t = jnp.full((20000,), 300)
  x0 = jnp.full((20000, 1, 1, 1), 0.5)
  x_t = sch.q_sample(s, x0, t, jax.random.normal(jax.random.key(0), x0.shape))
  abar = s.alphas_cumprod[300]
  assert abs(float(x_t.mean()) - np.sqrt(abar) * 0.5) < 0.02
  assert abs(float(x_t.var()) - (1 - abar)) < 0.02


def test_trained_spacing_is_ddims_respacing():
  s = sch.linear_schedule(1000)
  np.testing.assert_array_equal(spacings.trained(1000, s.sigmas)[:-1], s.sigmas[::-1])
  levels = spacings.trained(50, s.sigmas)
  ts = ddpm_reference.timestep_subsequence(1000, 50)
  np.testing.assert_array_equal(levels[:-1], s.sigmas[ts])
  assert levels[-1] == 0 and np.all(np.diff(levels) < 0)
  with pytest.raises(ValueError, match='sampler steps'):
    spacings.trained(0, s.sigmas)


def test_karras_and_log_snr_spacings_in_closed_form():
  k = spacings.karras(5, 0.002, 80.0, rho=7.0)
  assert k[0] == pytest.approx(80.0) and k[-2] == pytest.approx(0.002) and k[-1] == 0
  root = k[:-1] ** (1 / 7)
  np.testing.assert_allclose(np.diff(root), np.diff(root)[0], rtol=1e-9)  # uniform in sigma^(1/rho)
  log = spacings.log_snr(4, 0.01, 10.0)
  np.testing.assert_allclose(np.log(log[:-1]), np.linspace(np.log(10), np.log(0.01), 4))


def sample_vp(model_fn, schedule, prediction, rng, shape, *, sampler, spacing, steps,
              eta=0.0):
  """What the diffusion objective does with a VP-trained model: its formulation's levels,
  denoiser and starting noise, through run_sampler."""
  vp = formulations.VP(ml_collections.ConfigDict(dict(
      schedule='linear', timesteps=schedule.num_timesteps, beta_start=1e-4, beta_end=0.02,
      prediction=prediction)))
  assert np.allclose(vp.schedule.alphas_cumprod, schedule.alphas_cumprod)
  sigmas = vp.sigmas(spacing, steps)
  return run_sampler(sampler, vp.denoiser(model_fn, spacing), sigmas,
                     vp.initial_std(sigmas[0]), rng, shape, eta=eta)


def _eps_model(x_t, t):
  """Some smooth, non-trivial eps-predictor of (x_t, t)."""
  return 0.6 * jnp.tanh(0.7 * x_t) + 0.0003 * t[:, None, None, None]


def _reference_denoiser(schedule):
  def denoise(x, t):
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[t][:, None, None, None]
    eps = _eps_model(x, t)
    return (x - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar), eps
  return denoise


@pytest.mark.parametrize('sampler,steps,eta', [('ddim', 20, 0.0), ('ddim', 20, 0.5),
                                               ('ddpm', 25, 1.0), ('ddpm', 1000, 1.0)])
def test_ddpm_and_ddim_through_the_protocol_give_todays_samples(sampler, steps, eta):
  """The old VP-space samplers, with the same keys, against the protocol's ddpm/ddim."""
  s = sch.linear_schedule(1000)
  key, shape = jax.random.key(3), (2, 4, 4, 1)
  old = {'ddpm': ddpm_reference.ddpm_sample, 'ddim': ddpm_reference.ddim_sample}[sampler](
      _reference_denoiser(s), s, key, shape, steps=steps, eta=eta)
  new = jax.jit(lambda key: sample_vp(_eps_model, s, 'eps', key, shape, sampler=sampler,
                                      spacing='trained', steps=steps, eta=eta))(key)
  np.testing.assert_allclose(new, old, atol=2e-4)
  assert float(jnp.std(new)) > 0.05


MU, STD = 0.3, 0.5  # the data: N(MU, STD^2) in every dimension


def _gaussian_denoiser(x, sigma):
  """The exact E[x0 | x0 + sigma eps = x] for x0 ~ N(MU, STD^2)."""
  return MU + STD**2 / (STD**2 + sigma**2) * (x - MU)


def _solve(name, steps, x, **options):
  sigmas = spacings.karras(steps, 0.002, 80.0)
  return SAMPLERS[name](_gaussian_denoiser, sigmas, x, jax.random.key(1), **options)


@pytest.mark.parametrize('name,order,steps', [('euler', 1, (16, 32, 64)),
                                              ('heun', 2, (16, 32, 64)),
                                              ('dpmpp_2m', 2, (16, 32, 64)),
                                              ('dpmpp_3m', 3, (8, 16, 32))])
def test_ode_samplers_converge_to_the_exact_gaussian_map_at_their_order(name, order, steps):
  """The probability-flow ODE maps x(80) = MU + sqrt(STD^2 + 80^2) z to MU + STD z exactly;
  the error at N steps shrinks like N^-order (Karras levels; 3M is measured at fewer steps,
  before float32's rounding of |x| ~ 100 sets the floor)."""
  z = jnp.linspace(-2.0, 2.0, 5)
  x = MU + np.sqrt(STD**2 + 80.0**2) * z
  errors = [float(jnp.max(jnp.abs(_solve(name, n, x) - (MU + STD * z)))) for n in steps]
  assert errors[-1] < {1: 5e-2, 2: 5e-3, 3: 2e-3}[order], errors
  for coarse, fine in zip(errors, errors[1:]):
    assert coarse / fine > 2 ** order * 0.75, errors


@pytest.mark.parametrize('name,options', [('ddpm', {}), ('euler', {'eta': 0.5}),
                                          ('heun', {'s_churn': 40.0, 's_tmin': 0.05,
                                                    's_tmax': 50.0})])
def test_stochastic_samplers_draw_the_gaussian(name, options):
  x = MU + np.sqrt(STD**2 + 80.0**2) * jax.random.normal(jax.random.key(0), (20_000,))
  out = np.asarray(_solve(name, 256, x, **options))
  assert abs(out.mean() - MU) < 0.02 and abs(out.std() - STD) < 0.02, (out.mean(), out.std())


def test_samplers_recover_a_point_mass_from_a_ddpm_model():
  s = sch.linear_schedule(1000)

  def eps_of_point_mass(x_t, t):  # the exact eps-predictor for data always 0.25
    abar = jnp.asarray(s.alphas_cumprod, jnp.float32)[jnp.round(t).astype(jnp.int32)]
    abar = abar[:, None, None, None]
    return (x_t - jnp.sqrt(abar) * 0.25) / jnp.sqrt(1 - abar)

  for sampler in SAMPLERS:
    out = sample_vp(eps_of_point_mass, s, 'eps', jax.random.key(0), (3, 4, 4, 1),
                    sampler=sampler, spacing='trained', steps=10)
    np.testing.assert_allclose(out, 0.25, atol=1e-4, err_msg=sampler)


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
  dcfg = ml_collections.ConfigDict(dict(schedule='linear', timesteps=10, beta_start=1e-4,
                                       beta_end=0.02, prediction='eps'))
  diffusion.diffusion_loss(apply_fn, None, batch, example_keys,
                           formulation=formulations.VP(dcfg), num_classes=10,
                           label_dropout=0.1)
  data = lambda key: tuple(np.asarray(jax.random.key_data(key)).ravel())
  # The example keys, and the first three splits / folds of each (what the three per-example
  # draws take, however they derive them).
  used = {data(k) for k in example_keys}
  for key in example_keys:
    used |= {data(k) for k in jax.random.split(key, 3)}
    used |= {data(jax.random.fold_in(key, i)) for i in range(3)}
  assert data(seen['dropout']) not in used


def _edm(**overrides):
  cfg = load_config('tiny').diffusion
  with cfg.unlocked():
    cfg.edm.update(overrides)
  return formulations.EDM(cfg)


@pytest.mark.parametrize('sigma', [0.002, 0.2, 0.5, 3.0, 80.0])
def test_edm_preconditioning_gives_unit_variance_inputs_and_targets(sigma):
  """For data of std sigma_data: c_in y and the effective target (x0 - c_skip y) / c_out have
  unit variance, and lambda(sigma) |D - x0|^2 is |net - target|^2 for any network output."""
  edm = _edm(sigma_data=0.5)
  keys = jax.random.split(jax.random.key(0), 3)
  x0 = 0.5 * jax.random.normal(keys[0], (200_000,))
  noise = jax.random.normal(keys[1], x0.shape)
  net_in, label, target = edm.training_example(x0, jnp.full(x0.shape, sigma), noise)
  assert abs(float(jnp.std(net_in)) - 1) < 0.01 and abs(float(jnp.std(target)) - 1) < 0.01
  np.testing.assert_allclose(label, np.log(sigma) / 4, rtol=1e-6)
  out = jax.random.normal(keys[2], x0.shape)  # any network output
  c_skip, c_out, _, _ = edm.scalings(sigma)
  y = x0 + sigma * noise
  weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2  # EDM's lambda(sigma)
  np.testing.assert_allclose(weight * jnp.square(c_skip * y + c_out * out - x0),
                             jnp.square(out - target), rtol=2e-3, atol=1e-5)


def test_edm_training_levels_are_log_normal():
  edm = _edm(p_mean=-1.2, p_std=1.2)
  sigmas = jax.vmap(edm.draw_level)(jax.random.split(jax.random.key(0), 50_000))
  logs = np.log(np.asarray(sigmas))
  assert abs(logs.mean() + 1.2) < 0.02 and abs(logs.std() - 1.2) < 0.02
