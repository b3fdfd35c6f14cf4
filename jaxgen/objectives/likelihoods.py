"""Pixel likelihoods p(x | z) for VAEs, as log-probabilities of 8-bit or binary images.

Every `log_prob` returns, per image, the log probability *mass* (nats) of the discrete
data, or a lower bound on it, so a negative ELBO divided by D ln 2 is in bits per dimension
comparable across likelihoods and with the literature:

  bernoulli  binarised pixels b in {0, 1} (dynamic binarisation: b ~ Bernoulli(intensity)).
  logistic   8-bit pixels, discretised logistic (PixelCNN++ with one component): the exact
             mass of each of the 256 bins of width 2/255 on [-1, 1], edge bins open-ended.
  gaussian   8-bit pixels with uniform dequantisation y = x + u, u ~ U(-1/255, 1/255):
             log P(x) >= E_u log N(y; mu, sigma) + D log(2/255). Learned or fixed sigma.

Images are float [-1, 1] (k / 127.5 - 1 for k in 0..255) everywhere else in jaxgen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

HALF_BIN = 1.0 / 255.0  # half the spacing of 8-bit levels on [-1, 1]
LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor on the log scale


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """channels_per_pixel: decoder outputs per image channel.
  prepare(x, key, deterministic) -> (encoder input in [-1, 1], target of log_prob).
  log_prob(out, target) -> [B] nats.  mean(out) -> [-1, 1] image of E[x | z]."""

  name: str
  channels_per_pixel: int
  prepare: Callable[[jax.Array, jax.Array, bool], tuple[jax.Array, jax.Array]]
  log_prob: Callable[[jax.Array, jax.Array], jax.Array]
  mean: Callable[[jax.Array], jax.Array]


def _sum_per_image(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def binarize(x: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
  """{0, 1} pixels: Bernoulli(intensity) draws, or intensity > 1/2 when deterministic."""
  p = (x + 1.0) / 2.0
  if deterministic:
    return (p > 0.5).astype(jnp.float32)
  return jax.random.bernoulli(key, p).astype(jnp.float32)


def bernoulli_log_prob(logits: jax.Array, bits: jax.Array) -> jax.Array:
  # log sigmoid(l) * b + log(1 - sigmoid(l)) * (1 - b) = b * l - softplus(l)
  return _sum_per_image(bits * logits - jax.nn.softplus(logits))


def discretized_logistic_log_prob(out: jax.Array, x: jax.Array) -> jax.Array:
  """Mass of the 8-bit bin of each pixel under a logistic(mean, exp(log_scale)).

  out: [..., 2C] (means, log scales). The numerically careful form of PixelCNN++:
  the edge bins extend to -inf/+inf, and a bin whose mass underflows uses the density
  at its centre times the bin width.
  """
  mean, log_scale = jnp.split(out, 2, axis=-1)
  log_scale = jnp.maximum(log_scale, LOG_SCALE_MIN)
  inv_scale = jnp.exp(-log_scale)
  centered = x - mean
  plus_in = inv_scale * (centered + HALF_BIN)
  min_in = inv_scale * (centered - HALF_BIN)
  log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid(plus_in), for x = -1
  log_one_minus_cdf_min = -jax.nn.softplus(min_in)  # log(1 - sigmoid(min_in)), for x = 1
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_scale * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in)
  log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                      log_pdf_mid + math.log(2 * HALF_BIN))
  log_probs = jnp.where(x < -0.999, log_cdf_plus,
                        jnp.where(x > 0.999, log_one_minus_cdf_min, log_mid))
  return _sum_per_image(log_probs)


def gaussian_log_density(mean: jax.Array, log_scale: jax.Array, y: jax.Array) -> jax.Array:
  log_scale = jnp.maximum(log_scale, LOG_SCALE_MIN)
  z = (y - mean) * jnp.exp(-log_scale)
  return _sum_per_image(-0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi))


def _bernoulli() -> Likelihood:
  def prepare(x, key, deterministic):
    bits = binarize(x, key, deterministic)
    return 2.0 * bits - 1.0, bits

  return Likelihood('bernoulli', 1, prepare, bernoulli_log_prob,
                    lambda logits: 2.0 * jax.nn.sigmoid(logits) - 1.0)


def _logistic() -> Likelihood:
  return Likelihood('logistic', 2, lambda x, key, deterministic: (x, x),
                    discretized_logistic_log_prob,
                    lambda out: jnp.clip(jnp.split(out, 2, axis=-1)[0], -1.0, 1.0))


def _gaussian(fixed_scale: float | None) -> Likelihood:
  def prepare(x, key, deterministic):
    del deterministic  # only binarisation has a deterministic form
    # The encoder sees the data; the likelihood scores a dequantised copy.
    return x, x + jax.random.uniform(key, x.shape, x.dtype, -HALF_BIN, HALF_BIN)

  def split(out):
    if fixed_scale is None:
      return jnp.split(out, 2, axis=-1)
    return out, jnp.full_like(out, math.log(fixed_scale))

  def log_prob(out, y):
    mean, log_scale = split(out)
    bin_log_width = math.log(2 * HALF_BIN) * (y[0].size)
    return gaussian_log_density(mean, log_scale, y) + bin_log_width

  return Likelihood('gaussian', 2 if fixed_scale is None else 1, prepare, log_prob,
                    lambda out: jnp.clip(split(out)[0], -1.0, 1.0))


LIKELIHOODS = ('bernoulli', 'logistic', 'gaussian')


def build(name: str, gaussian_scale: float = 0.0) -> Likelihood:
  """`gaussian_scale` > 0 fixes the Gaussian's standard deviation; 0 learns it per pixel."""
  if name == 'bernoulli':
    return _bernoulli()
  if name == 'logistic':
    return _logistic()
  if name == 'gaussian':
    return _gaussian(gaussian_scale if gaussian_scale > 0 else None)
  raise ValueError(f'unknown likelihood {name!r}; use one of {LIKELIHOODS}')


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example, in nats."""
  return _sum_per_image(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))


def log_normal(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, exp(logvar)) per example."""
  return _sum_per_image(-0.5 * (math.log(2 * math.pi) + logvar +
                                jnp.square(z - mean) * jnp.exp(-logvar)))


def bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
  return nats / (num_dims * math.log(2.0))
