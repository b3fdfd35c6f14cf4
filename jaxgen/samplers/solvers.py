"""Samplers of one protocol, whatever the model was trained as (EDM's view, Karras et al. 2022).

A sampler integrates from pure noise to data in the variance-exploding variable, where a
noisy image is x = x0 + sigma * eps, given only

  denoise(x, sigma) -> x0_hat   (a scalar sigma > 0; the formulation wraps its network)
  sigmas                        the noise levels to visit, decreasing, ending with 0
  x                             the starting noise, already scaled by the formulation
  rng                           for the stochastic samplers

and returns x at sigma = 0 (the last denoised estimate). The probability-flow ODE is
dx/dsigma = (x - D(x, sigma)) / sigma. A DDPM-trained (variance-preserving) model joins by
its formulation's wrapper: x_vp = x / sqrt(1 + sigma^2) (objectives/diffusion.py).

  euler            the ODE's Euler step, which is DDIM (eta 0) for any formulation; with
                   eta > 0 the ancestral step (eta 1 on the trained DDPM levels: ancestral
                   DDPM, exactly; between: DDIM's eta). NFE = N.
  heun             EDM's 2nd-order deterministic sampler (Algorithm 1; NFE = 2N - 1) and,
                   with s_churn > 0, its stochastic one (Algorithm 2: s_churn, s_tmin,
                   s_tmax, s_noise).
  dpmpp_2m, dpmpp_3m  DPM-Solver++ multistep (Lu et al. 2022), data prediction, in
                   t = -log sigma; the first steps are of lower order while the history
                   fills, and the step to sigma = 0 returns the denoised estimate. NFE = N.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def _levels(sigmas) -> jax.Array:
  sigmas = jnp.asarray(sigmas, jnp.float32)
  if sigmas.ndim != 1 or sigmas.shape[0] < 2:
    raise ValueError('sigmas must hold at least one noise level and the final 0')
  return sigmas


def euler(denoise: Denoiser, sigmas, x: jax.Array, rng: jax.Array, *, eta: float = 0.0,
          **unused) -> jax.Array:
  """Euler (eta 0) or Euler-ancestral: from sigma to sigma_next, denoise, then move to
  sigma_down along the ODE and add sigma_up of fresh noise, sigma_up^2 + sigma_down^2 =
  sigma_next^2, sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)."""
  del unused
  sigmas = _levels(sigmas)

  def step(x, inputs):
    sigma, sigma_next, key = inputs
    x0 = denoise(x, sigma)
    up = jnp.minimum(sigma_next, eta * sigma_next * jnp.sqrt(
        jnp.maximum(1.0 - jnp.square(sigma_next / sigma), 0.0)))
    down = jnp.sqrt(jnp.maximum(jnp.square(sigma_next) - jnp.square(up), 0.0))
    return x0 + down * (x - x0) / sigma + up * jax.random.normal(key, x.shape, x.dtype), None

  keys = jax.random.split(rng, sigmas.shape[0] - 1)
  x, _ = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:], keys))
  return x


def heun(denoise: Denoiser, sigmas, x: jax.Array, rng: jax.Array, *, s_churn: float = 0.0,
         s_tmin: float = 0.0, s_tmax: float = float('inf'), s_noise: float = 1.0,
         **unused) -> jax.Array:
  """EDM's Heun sampler; the step to sigma = 0 is an Euler step (NFE 2N - 1)."""
  del unused
  sigmas = _levels(sigmas)
  n = sigmas.shape[0] - 1
  gamma_max = min(s_churn / n, 2**0.5 - 1)

  def churn(x, sigma, key):
    gamma = jnp.where((sigma >= s_tmin) & (sigma <= s_tmax), gamma_max, 0.0)
    noise = jax.random.normal(key, x.shape, x.dtype) * s_noise
    # sqrt(sigma_hat^2 - sigma^2), written so that gamma = 0 adds exactly nothing (the
    # difference of squares can round below 0 and give NaN).
    return x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * noise, sigma * (1.0 + gamma)

  def step(x, inputs):
    sigma, sigma_next, key = inputs
    x, sigma_hat = churn(x, sigma, key)
    d = (x - denoise(x, sigma_hat)) / sigma_hat
    x_next = x + (sigma_next - sigma_hat) * d
    d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
    return x + (sigma_next - sigma_hat) * 0.5 * (d + d_next), None

  keys = jax.random.split(rng, n)
  x, _ = jax.lax.scan(step, x, (sigmas[:-2], sigmas[1:-1], keys[:-1]))
  x, sigma_hat = churn(x, sigmas[-2], keys[-1])
  return denoise(x, sigma_hat)  # Euler to sigma = 0


def _dpmpp(order: int, denoise: Denoiser, sigmas, x: jax.Array) -> jax.Array:
  """DPM-Solver++ (order 2 or 3) multistep, as k-diffusion's dpmpp_2m / dpmpp_3m_sde(eta 0)."""
  sigmas = _levels(sigmas)
  t = -jnp.log(sigmas[:-1])  # the last step (to sigma = 0) is x = D
  n = sigmas.shape[0] - 1

  def step(carry, i):
    x, d1, d2 = carry  # the denoised estimates of the last two steps
    d0 = denoise(x, sigmas[i])
    h = t[jnp.minimum(i + 1, n - 1)] - t[i]
    h1 = t[i] - t[jnp.maximum(i - 1, 0)]
    h2 = t[jnp.maximum(i - 1, 0)] - t[jnp.maximum(i - 2, 0)]
    x_new = jnp.exp(-h) * x - jnp.expm1(-h) * d0
    phi2 = jnp.expm1(-h) / h + 1.0
    safe = lambda a: jnp.where(a > 0, a, 1.0)
    r0, r1 = safe(h1) / h, safe(h2) / h
    first = (d0 - d1) / r0
    if order == 2:
      # 2M: x_new - expm1(-h) * (d0 - d1) / (2 r0); equal to k-diffusion's form.
      second_order = x_new - jnp.expm1(-h) * 0.5 * first
      x_new = jnp.where(i >= 1, second_order, x_new)
    else:
      second = (d1 - d2) / r1
      dd1 = first + (first - second) * r0 / (r0 + r1)
      dd2 = (first - second) / (r0 + r1)
      phi3 = phi2 / h - 0.5
      x_new = jnp.where(i >= 2, x_new + phi2 * dd1 - phi3 * dd2,
                        jnp.where(i >= 1, x_new + phi2 * first, x_new))
    x_new = jnp.where(i == n - 1, d0, x_new)
    return (x_new, d0, d1), None

  zeros = jnp.zeros_like(x)
  (x, _, _), _ = jax.lax.scan(step, (x, zeros, zeros), jnp.arange(n))
  return x


def dpmpp_2m(denoise: Denoiser, sigmas, x: jax.Array, rng: jax.Array, **unused) -> jax.Array:
  del rng, unused
  return _dpmpp(2, denoise, sigmas, x)


def dpmpp_3m(denoise: Denoiser, sigmas, x: jax.Array, rng: jax.Array, **unused) -> jax.Array:
  del rng, unused
  return _dpmpp(3, denoise, sigmas, x)


SOLVERS = {'euler': euler, 'heun': heun, 'dpmpp_2m': dpmpp_2m, 'dpmpp_3m': dpmpp_3m}
