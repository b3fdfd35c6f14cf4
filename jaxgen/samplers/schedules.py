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


def to_x0_eps(schedule: Schedule, prediction: str, model_out: jax.Array, x_t: jax.Array,
              t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both the clean image and the noise implied by a model output."""
  abar = _gather(schedule.alphas_cumprod, t, x_t.ndim)
  a, s = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  if prediction == 'eps':
    eps = model_out
    x0 = (x_t - s * eps) / a
  elif prediction == 'v':
    x0 = a * x_t - s * model_out
    eps = s * x_t + a * model_out
  else:
    raise ValueError(f'unknown prediction {prediction!r}; use "eps" or "v"')
  return x0, eps
