"""On-device, differentiable, per-example image augmentation for discriminators.

A GAN's discriminator that sees only a few thousand images memorises them and its
generator collapses; augmenting every image D sees (reals and fakes, in the D and the G
steps) with transformations that are differentiable, so G's gradient flows through them,
prevents it. Two schemes:

- DiffAugment (Zhao et al. 2020): colour (brightness +-0.5, saturation x[0, 2], contrast
  x[0.5, 1.5]), translation by up to 1/8 of the size with zero padding, and cutout of a
  square of half the size. `diff_augment(rng, images, policy, p)` applies each listed
  group to each example with probability `p` (the paper's setting is p = 1).
- ADA (Karras et al. 2020), the `bgc` pipeline with an adaptive p: not built yet.

Images are float [B, H, W, C] in [-1, 1]; every function keeps shape and dtype, draws
each example's parameters from its own key, and is the identity at p = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _per_example(rng: jax.Array, images: jax.Array, p: float | jax.Array,
                 fn: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """fn(key, image) on each example whose Bernoulli(p) draw says so; the others unchanged."""
  keys = jax.random.split(rng, images.shape[0])

  def one(key, image):
    apply_key, param_key = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(apply_key, p), fn(param_key, image), image)
  return jax.vmap(one)(keys, images)


def brightness(key: jax.Array, x: jax.Array) -> jax.Array:
  return x + (jax.random.uniform(key, (), x.dtype) - 0.5)


def saturation(key: jax.Array, x: jax.Array) -> jax.Array:
  mean = jnp.mean(x, axis=-1, keepdims=True)
  return (x - mean) * (jax.random.uniform(key, (), x.dtype) * 2.0) + mean


def contrast(key: jax.Array, x: jax.Array) -> jax.Array:
  mean = jnp.mean(x)
  return (x - mean) * (jax.random.uniform(key, (), x.dtype) + 0.5) + mean


def color(key: jax.Array, x: jax.Array) -> jax.Array:
  """DiffAugment's `color`: brightness, then saturation, then contrast."""
  keys = jax.random.split(key, 3)
  return contrast(keys[2], saturation(keys[1], brightness(keys[0], x)))


def translation(key: jax.Array, x: jax.Array, ratio: float = 0.125) -> jax.Array:
  """Shift by whole pixels, up to round(ratio * size) each way, filling with zeros."""
  height, width = x.shape[0], x.shape[1]
  shift_h, shift_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  dy = jax.random.randint(jax.random.fold_in(key, 0), (), -shift_h, shift_h + 1)
  dx = jax.random.randint(jax.random.fold_in(key, 1), (), -shift_w, shift_w + 1)
  padded = jnp.pad(x, ((shift_h, shift_h), (shift_w, shift_w), (0, 0)))
  return jax.lax.dynamic_slice(padded, (shift_h - dy, shift_w - dx, 0), x.shape)


def cutout(key: jax.Array, x: jax.Array, ratio: float = 0.5) -> jax.Array:
  """Zero a square of round(ratio * size) pixels whose centre is uniform over the image
  (DiffAugment's offsets: parts of the square may fall outside)."""
  height, width = x.shape[0], x.shape[1]
  size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  cy = jax.random.randint(jax.random.fold_in(key, 0), (), 0, height + (1 - size_h % 2))
  cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, width + (1 - size_w % 2))
  rows = jnp.arange(height)[:, None] - (cy - size_h // 2)
  cols = jnp.arange(width)[None, :] - (cx - size_w // 2)
  inside = (rows >= 0) & (rows < size_h) & (cols >= 0) & (cols < size_w)
  return jnp.where(inside[..., None], jnp.zeros_like(x), x)


DIFF_AUGMENT = {'color': color, 'translation': translation, 'cutout': cutout}


def diff_augment(rng: jax.Array, images: jax.Array, policy: str = 'color,translation,cutout',
                 p: float | jax.Array = 1.0) -> jax.Array:
  """DiffAugment's groups named in `policy` (comma-separated), in order, each applied to
  each example with probability `p`."""
  for i, name in enumerate(part.strip() for part in policy.split(',') if part.strip()):
    images = _per_example(jax.random.fold_in(rng, i), images, p, DIFF_AUGMENT[name])
  return images


def check_policy(policy: str) -> str | None:
  """None when every group of `policy` exists, else the message naming the bad one."""
  for part in policy.split(','):
    if part.strip() and part.strip() not in DIFF_AUGMENT:
      return (f'unknown DiffAugment group {part.strip()!r} in {policy!r}; use a comma-separated '
              f'subset of {", ".join(DIFF_AUGMENT)}')
  return None
