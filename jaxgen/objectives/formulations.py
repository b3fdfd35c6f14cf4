"""Diffusion formulations (`diffusion.formulation`): what noise a network is trained on, what
it predicts, and the denoiser D(x, sigma) -> x0_hat the samplers get from it.

Both train the same network, net(input, noise_label, labels), and end in a per-example
squared error:

  ddpm  variance preserving, on a discrete schedule (diffusion.schedule, .timesteps):
        t ~ U{0..T-1}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, the network sees (x_t, t)
        and predicts eps or v (diffusion.prediction); loss |net - target|^2.
  edm   Karras et al. (2022), diffusion.edm: ln sigma ~ N(p_mean, p_std^2), y = x0 + sigma
        eps, D(y, sigma) = c_skip y + c_out net(c_in y, ln(sigma) / 4) with c_skip =
        sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in =
        1 / sqrt(sigma^2 + sd^2) (sd = sigma_data); loss lambda(sigma) |D - x0|^2 with
        lambda = 1 / c_out^2, which is |net - (x0 - c_skip y) / c_out|^2: a target of unit
        variance for data of std sigma_data, as the network's input.
  flow  rectified flow as in SD3 (Esser et al. 2024), diffusion.flow: t = sigmoid(n),
        n ~ N(logit_mean, logit_std^2), x_t = (1 - t) x0 + t eps, the network sees
        (x_t, 1000 t) and predicts the velocity eps - x0; loss |net - (eps - x0)|^2. In the
        samplers' variable x_t / (1 - t) = x0 + sigma eps with sigma = t / (1 - t), so
        D(x, sigma) = x_t - t net(x_t, 1000 t) at t = sigma / (1 + sigma), x_t = x / (1 + sigma);
        the Euler sampler is then the flow's Euler step in t. Sampling starts at
        t = T_MAX (sigma = 999), from x = sigma eps (x_t = t eps), with SD3's timestep shift
        (sigma -> shift sigma) on every spacing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.samplers import schedules, spacings


class VP:
  """DDPM's formulation (see the module docstring)."""

  spacings = schedules.VP_SPACINGS

  def __init__(self, dcfg: ml_collections.ConfigDict, clip: bool = True):
    self.clip = clip
    if dcfg.schedule == 'linear':
      self.schedule = schedules.linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    else:
      self.schedule = schedules.SCHEDULES[dcfg.schedule](dcfg.timesteps)
    self.prediction = dcfg.prediction

  def draw_level(self, key: jax.Array) -> jax.Array:
    return jax.random.randint(key, (), 0, self.schedule.num_timesteps)

  def training_example(self, x0, level, noise):
    """(network input, noise label, target) for examples x0 [B, ...] at levels [B]."""
    x_t = schedules.q_sample(self.schedule, x0, level, noise)
    target = (noise if self.prediction == 'eps'
              else schedules.v_target(self.schedule, x0, level, noise))
    return x_t, level, target

  def sigmas(self, spacing: str, steps: int) -> np.ndarray:
    return schedules.vp_sigmas(self.schedule, spacing, steps)

  def denoiser(self, net, spacing: str):
    return schedules.vp_denoiser(self.schedule, self.prediction, net, clip=self.clip,
                                 snap=spacing == 'trained')

  def initial_std(self, sigma_max: float) -> float:
    """x_T ~ N(0, I) in the trained (variance-preserving) scale is x_T / alpha_T here."""
    return float(np.sqrt(1.0 + sigma_max**2))


class EDM:
  """EDM's preconditioning, noise distribution and loss weight (see the module docstring)."""

  spacings = ('karras', 'log_snr')

  def __init__(self, dcfg: ml_collections.ConfigDict, clip: bool = True):
    self.cfg, self.clip = dcfg.edm, clip

  def scalings(self, sigma):
    """(c_skip, c_out, c_in, c_noise) of noise level(s) sigma."""
    sd = self.cfg.sigma_data
    total = jnp.square(sigma) + sd**2
    return sd**2 / total, sigma * sd * jax.lax.rsqrt(total), jax.lax.rsqrt(total), (
        jnp.log(sigma) / 4)

  def draw_level(self, key: jax.Array) -> jax.Array:
    return jnp.exp(self.cfg.p_mean + self.cfg.p_std * jax.random.normal(key, ()))

  def training_example(self, x0, level, noise):
    sigma = level.reshape(-1, *(1,) * (x0.ndim - 1))
    y = x0 + sigma * noise
    c_skip, c_out, c_in, c_noise = self.scalings(sigma)
    return c_in * y, c_noise.reshape(-1), (x0 - c_skip * y) / c_out

  def sigmas(self, spacing: str, steps: int) -> np.ndarray:
    if spacing == 'karras':
      return spacings.karras(steps, self.cfg.sigma_min, self.cfg.sigma_max, self.cfg.rho)
    if spacing == 'log_snr':
      return spacings.log_snr(steps, self.cfg.sigma_min, self.cfg.sigma_max)
    raise ValueError(f'sample option spacing={spacing!r}: an edm model samples at karras or '
                     'log_snr levels')

  def denoiser(self, net, spacing: str):
    del spacing

    def denoise(x, sigma):
      c_skip, c_out, c_in, c_noise = self.scalings(sigma)
      out = net(c_in * x, jnp.full((x.shape[0],), c_noise)).astype(jnp.float32)
      x0 = c_skip * x + c_out * out
      return jnp.clip(x0, -1.0, 1.0) if self.clip else x0
    return denoise

  def initial_std(self, sigma_max: float) -> float:
    return float(sigma_max)


class Flow:
  """Rectified flow (see the module docstring)."""

  spacings = ('time_uniform', 'karras', 'log_snr')
  T_MIN, T_MAX = 1e-3, 1.0 - 1e-3  # the sampled range of t (sigma 0.001 to 999)
  TIME_SCALE = 1000.0  # the network's noise label is 1000 t, DDPM's timestep range

  def __init__(self, dcfg: ml_collections.ConfigDict, clip: bool = True):
    self.cfg, self.clip = dcfg.flow, clip

  def draw_level(self, key: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self.cfg.logit_mean + self.cfg.logit_std * jax.random.normal(key, ()))

  def training_example(self, x0, level, noise):
    t = level.reshape(-1, *(1,) * (x0.ndim - 1))
    return (1.0 - t) * x0 + t * noise, self.TIME_SCALE * level, noise - x0

  def sigmas(self, spacing: str, steps: int) -> np.ndarray:
    shift = self.cfg.shift
    if spacing == 'time_uniform':
      return spacings.time_uniform(steps, self.T_MAX, shift)
    lo, hi = (shift * t / (1.0 - t) for t in (self.T_MIN, self.T_MAX))
    if spacing == 'karras':
      return spacings.karras(steps, lo, hi)
    if spacing == 'log_snr':
      return spacings.log_snr(steps, lo, hi)
    raise ValueError(f'sample option spacing={spacing!r}: a flow model samples at '
                     'time_uniform, karras or log_snr levels')

  def denoiser(self, net, spacing: str):
    del spacing

    def denoise(x, sigma):
      t = sigma / (1.0 + sigma)
      x_t = x / (1.0 + sigma)
      v = net(x_t, jnp.full((x.shape[0],), self.TIME_SCALE * t)).astype(jnp.float32)
      x0 = x_t - t * v
      return jnp.clip(x0, -1.0, 1.0) if self.clip else x0
    return denoise

  def initial_std(self, sigma_max: float) -> float:
    return float(sigma_max)


CLASSES = {'ddpm': VP, 'edm': EDM, 'flow': Flow}


def build(dcfg: ml_collections.ConfigDict, clip: bool = True):
  """The formulation of `dcfg`; `clip`: denoised estimates are clipped to [-1, 1] (images;
  not latents)."""
  return CLASSES[dcfg.formulation](dcfg, clip)

