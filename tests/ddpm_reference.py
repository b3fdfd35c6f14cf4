"""The DDPM and DDIM samplers as jaxgen had them before the sampler protocol (VP space,
timestep by timestep), kept as the reference the protocol's ddpm/ddim must reproduce."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.samplers.schedules import Schedule

# denoise_fn(x_t, t) -> (x0_hat, eps_hat); t is an int32 vector of model timesteps.
DenoiseFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def timestep_subsequence(num_timesteps: int, steps: int) -> np.ndarray:
  """`steps` evenly spaced timesteps from T-1 down to 0 (all of them when steps == T)."""
  if not 1 <= steps <= num_timesteps:
    raise ValueError(f'sampler steps must be in [1, {num_timesteps}], got {steps}')
  return np.unique(np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int32))[::-1]


def _run(step_fn, schedule: Schedule, rng: jax.Array, shape, steps: int) -> jax.Array:
  ts = timestep_subsequence(schedule.num_timesteps, steps)
  abar = schedule.alphas_cumprod
  prev = np.concatenate([ts[1:], [-1]])
  abar_t = abar[ts].astype(np.float32)
  abar_prev = np.where(prev >= 0, abar[np.maximum(prev, 0)], 1.0).astype(np.float32)
  init_rng, loop_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32)

  def body(x, inputs):
    t, a_t, a_prev, key = inputs
    return step_fn(x, t, a_t, a_prev, key), None

  keys = jax.random.split(loop_rng, len(ts))
  x, _ = jax.lax.scan(body, x, (jnp.asarray(ts), abar_t, abar_prev, keys))
  return jnp.clip(x, -1.0, 1.0)


def _clipped(denoise_fn: DenoiseFn, x, t, a_t, clip: bool):
  x0, eps = denoise_fn(x, jnp.full((x.shape[0],), t, jnp.int32))
  if clip:  # keep eps consistent with the clipped x0
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
  return x0, eps


def ddpm_sample(denoise_fn: DenoiseFn, schedule: Schedule, rng: jax.Array, shape,
                *, steps: int | None = None, clip: bool = True, **unused) -> jax.Array:
  """Ancestral sampling with the posterior variance, on a (possibly respaced) schedule."""
  del unused

  def step(x, t, a_t, a_prev, key):
    x0, _ = _clipped(denoise_fn, x, t, a_t, clip)
    beta = 1.0 - a_t / a_prev
    mean = (jnp.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (
        jnp.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
    var = beta * (1 - a_prev) / (1 - a_t)
    return mean + jnp.sqrt(var) * jax.random.normal(key, x.shape)

  return _run(step, schedule, rng, shape, steps or schedule.num_timesteps)


def ddim_sample(denoise_fn: DenoiseFn, schedule: Schedule, rng: jax.Array, shape,
                *, steps: int = 50, eta: float = 0.0, clip: bool = True, **unused
                ) -> jax.Array:
  """DDIM (Song et al. 2021); eta=0 is deterministic, eta=1 matches ancestral DDPM."""
  del unused

  def step(x, t, a_t, a_prev, key):
    x0, eps = _clipped(denoise_fn, x, t, a_t, clip)
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    direction = jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(a_prev) * x0 + direction + sigma * jax.random.normal(key, x.shape)

  return _run(step, schedule, rng, shape, steps)
