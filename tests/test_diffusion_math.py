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


def _flow(**overrides):
  cfg = load_config('tiny').diffusion
  with cfg.unlocked():
    cfg.formulation = 'flow'
    cfg.flow.update(overrides)
  return formulations.Flow(cfg)


def test_flow_interpolates_straight_and_targets_the_velocity():
  """x_t = (1 - t) x0 + t eps, label 1000 t, target eps - x0; the denoiser of the true
  velocity returns x0 from the samplers' x = x_t / (1 - t) at sigma = t / (1 - t)."""
  flow = _flow()
  keys = jax.random.split(jax.random.key(0), 2)
  x0 = jax.random.uniform(keys[0], (3, 4, 4, 1), minval=-1, maxval=1)
  eps = jax.random.normal(keys[1], x0.shape)
  t = jnp.array([0.01, 0.5, 0.97])
  x_t, label, target = flow.training_example(x0, t, eps)
  tb = t[:, None, None, None]
  np.testing.assert_allclose(x_t, (1 - tb) * x0 + tb * eps, rtol=1e-6)
  np.testing.assert_allclose(label, 1000 * t, rtol=1e-6)
  np.testing.assert_allclose(target, eps - x0, rtol=1e-6)
  for i in range(3):
    seen = {}

    def velocity(x, label, i=i, seen=seen):
      seen['x'], seen['label'] = x, label
      return target[i:i + 1]

    sigma = jnp.float32(t[i] / (1 - t[i]))
    x0_hat = flow.denoiser(velocity, 'time_uniform')(x_t[i:i + 1] / (1 - t[i]), sigma)
    np.testing.assert_allclose(seen['x'], x_t[i:i + 1], atol=1e-5)
    np.testing.assert_allclose(seen['label'], [1000 * t[i]], rtol=1e-5)
    np.testing.assert_allclose(x0_hat, x0[i:i + 1], atol=1e-5)


def test_flow_training_times_are_logit_normal():
  flow = _flow(logit_mean=0.5, logit_std=0.8)
  t = np.asarray(jax.vmap(flow.draw_level)(jax.random.split(jax.random.key(0), 50_000)))
  logit = np.log(t / (1 - t))
  assert abs(logit.mean() - 0.5) < 0.02 and abs(logit.std() - 0.8) < 0.02


def test_flow_time_uniform_levels_and_shift_in_closed_form():
  flow = _flow(shift=3.0)
  sigmas = flow.sigmas('time_uniform', 4)
  t = flow.T_MAX * np.array([1, 0.75, 0.5, 0.25])
  shifted = 3 * t / (1 + 2 * t)  # SD3's shift of t
  np.testing.assert_allclose(sigmas, [*(shifted / (1 - shifted)), 0.0], rtol=1e-9)
  with pytest.raises(ValueError, match="spacing='trained': a flow model samples at"):
    flow.sigmas('trained', 4)


def test_the_euler_sampler_is_the_flows_euler_step_in_t():
  """Through the flow's denoiser, the protocol's Euler step (in sigma) is exactly
  x_t' = x_t + (t' - t) v(x_t, t) on the shifted time-uniform grid."""
  flow = _flow(shift=2.0)

  def velocity(x_t, label):  # some smooth, non-trivial velocity field
    return 0.5 * jnp.tanh(x_t) + 0.2 + 1e-4 * label[:, None, None, None]

  steps, shape = 6, (2, 3, 3, 1)
  sigmas = flow.sigmas('time_uniform', steps)
  ts = sigmas / (1 + sigmas)
  init_key, _ = jax.random.split(jax.random.key(1))
  noise = jax.random.normal(init_key, shape)
  out = run_sampler('euler', flow.denoiser(velocity, 'time_uniform'), sigmas,
                    flow.initial_std(sigmas[0]), jax.random.key(1), shape, clip=False)
  x_t = ts[0] * noise  # the sampler's start, x = sigma_max eps, in the flow's variable
  for t, t_next in zip(ts[:-1], ts[1:]):
    x_t = x_t + (t_next - t) * velocity(x_t, jnp.full((2,), 1000 * t))
  np.testing.assert_allclose(out, np.clip(x_t, -1, 1), atol=2e-4)


@pytest.mark.parametrize('sampler', ['euler', 'heun', 'dpmpp_2m'])
def test_a_flow_model_samples_the_gaussian(sampler):
  """The exact velocity of data N(mu, std^2), sampled from the flow's levels and starting
  noise: the right mean and std (the data inside the denoiser's [-1, 1] clip)."""
  flow, mu, std = _flow(), 0.1, 0.3

  def velocity(x_t, label):  # v = (x_t - E[x0 | x_t]) / t
    t = (label / 1000)[:, None]
    x, sigma = x_t / (1 - t), t / (1 - t)
    return (x_t - (mu + std**2 / (std**2 + sigma**2) * (x - mu))) / t

  sigmas = flow.sigmas('time_uniform', 64)
  out = np.asarray(run_sampler(sampler, flow.denoiser(velocity, 'time_uniform'), sigmas,
                               flow.initial_std(sigmas[0]), jax.random.key(0), (20_000, 1),
                               clip=False))
  assert abs(out.mean() - mu) < 0.01 and abs(out.std() - std) < 0.01, (out.mean(), out.std())


def test_classifier_free_guidance_at_scale_1_is_the_conditional_model():
  """guided(): scale 1 the conditional model, 0 the unconditional (null class) one, and any
  scale u + s (c - u), with the conditional and null halves of one batch kept apart."""
  from jaxgen import models
  from jaxgen.objectives.diffusion import guided

  config = load_config('tiny', 'dit_fashion_mnist')
  model = models.build(config.model, (28, 28, 1))
  params = model.init(jax.random.key(0))
  # Away from adaLN-Zero's initial zeros, so that the class changes the output.
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree_util.tree_unflatten(treedef, [
      leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)])
  apply = lambda x, t, labels: model.apply(params, x, t, labels)
  x = jax.random.normal(jax.random.key(2), (4, 28, 28, 1))
  t, labels = jnp.array([10.0, 200.0, 500.0, 900.0]), jnp.array([0, 3, 7, 9])
  cond, uncond = apply(x, t, labels), apply(x, t, jnp.full((4,), 10))
  assert float(jnp.abs(cond - uncond).max()) > 1e-3
  np.testing.assert_array_equal(guided(apply, labels, 10, 1.0)(x, t), cond)
  np.testing.assert_allclose(guided(apply, labels, 10, 0.0)(x, t), uncond, atol=1e-5)
  np.testing.assert_allclose(guided(apply, labels, 10, 3.0)(x, t), uncond + 3 * (cond - uncond),
                             atol=1e-4)
  seen = []
  guided(lambda x, t, labels: seen.append(labels), None, 0, 3.0)(x, t)
  assert seen == [None]  # an unconditional model gets no labels, and no guidance


def test_a_class_conditional_grid_has_one_class_per_row():
  from jaxgen import metrics
  from jaxgen.objectives import class_labels

  labels = np.asarray(class_labels(None, 30, 10))  # the default labels
  images = np.broadcast_to(labels[:, None, None, None], (30, 2, 2, 1)).astype(np.uint8)
  grid = metrics.sample_grid(images, 10)
  assert grid.shape == (10 * 4 + 2, 3 * 4 + 2, 1)
  for row in range(10):
    for col in range(3):
      np.testing.assert_array_equal(grid[2 + 4 * row:4 + 4 * row, 2 + 4 * col:4 + 4 * col], row)
  assert metrics.sample_grid(images[:25], 10).shape == metrics.image_grid(images[:25]).shape
