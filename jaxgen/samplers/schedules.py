"""Noise schedules for discrete-time diffusion, and conversions between predictions."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Schedule:
  """alphas_cumprod[t] = prod_{s<=t} (1 - beta_s), t = 0..T-1 (float64, host side)."""

  alphas_cumprod: np.ndarray

  @property
  def num_timesteps(self) -> int:
    return len(self.alphas_cumprod)

  @property
  def sigmas(self) -> np.ndarray:
    """The noise level of each timestep in the variance-exploding view, x_t / sqrt(abar_t) =
    x0 + sigma_t eps: sigma_t = sqrt((1 - abar_t) / abar_t), increasing in t."""
    return np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)

  @property
  def betas(self) -> np.ndarray:
    prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
    return 1.0 - self.alphas_cumprod / prev


def linear_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                    ) -> Schedule:
  """Ho et al. (2020): betas linear in t, scaled so T=1000 gives the published values."""
  scale = 1000.0 / num_timesteps
  betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
  return Schedule(np.cumprod(1.0 - betas))


def cosine_schedule(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999
                    ) -> Schedule:
  """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
  def alpha_bar(u):
    return math.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
  betas = np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps),
                        max_beta) for i in range(num_timesteps)], dtype=np.float64)
  return Schedule(np.cumprod(1.0 - betas))


SCHEDULES = {'linear': linear_schedule, 'cosine': cosine_schedule}


def _gather(values: np.ndarray, t: jax.Array, ndim: int) -> jax.Array:
  out = jnp.asarray(values, jnp.float32)[t]
  return out.reshape(out.shape + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
  abar = _gather(schedule.alphas_cumprod, t, x0.ndim)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def v_target(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho, 2022)."""
  abar = _gather(schedule.alphas_cumprod, t, x0.ndim)
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def vp_denoiser(schedule: Schedule, prediction: str, model_fn, *, clip: bool = True,
                snap: bool = False):
  """denoise(x, sigma) -> x0_hat for the samplers (variance-exploding x = x0 + sigma eps) from
  a model trained on this variance-preserving schedule: model_fn(x_t, t) -> eps or v at
  x_t = x / sqrt(1 + sigma^2) and t the (fractional) timestep of sigma, interpolated in
  log sigma; `snap` rounds t to the trained timestep (for levels taken from the schedule).
  `clip` clips x0_hat to [-1, 1], as DDPM and DDIM sample."""
  log_sigmas = jnp.asarray(np.log(schedule.sigmas), jnp.float32)
  timesteps = jnp.arange(schedule.num_timesteps, dtype=jnp.float32)

  def denoise(x, sigma):
    alpha = jax.lax.rsqrt(1.0 + jnp.square(sigma))
    x_t, s = alpha * x, sigma * alpha
    t = jnp.interp(jnp.log(sigma), log_sigmas, timesteps)
    t = jnp.full((x.shape[0],), jnp.round(t) if snap else t)
    out = model_fn(x_t, t).astype(jnp.float32)
    if prediction == 'eps':
      x0 = (x_t - s * out) / alpha
    elif prediction == 'v':
      x0 = alpha * x_t - s * out
    else:
      raise ValueError(f'unknown prediction {prediction!r}; use "eps" or "v"')
    return jnp.clip(x0, -1.0, 1.0) if clip else x0
  return denoise


def vp_sigmas(schedule: Schedule, spacing: str, steps: int) -> np.ndarray:
  """The noise levels to sample a VP-trained model at (samplers/spacings.py)."""
  from jaxgen.samplers import spacings

  trained = schedule.sigmas
  if spacing == 'trained':
    return spacings.trained(steps, trained)
  if spacing == 'karras':
    return spacings.karras(steps, trained[0], trained[-1])
  if spacing == 'log_snr':
    return spacings.log_snr(steps, trained[0], trained[-1])
  raise ValueError(f'sample option spacing={spacing!r}: use trained, karras or log_snr')


VP_SPACINGS = ('trained', 'karras', 'log_snr')
