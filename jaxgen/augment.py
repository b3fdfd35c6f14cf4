"""On-device, differentiable, per-example image augmentation for discriminators.

A GAN's discriminator that sees only a few thousand images memorises them and its
generator collapses; augmenting every image D sees (reals and fakes, in the D and the G
steps) with transformations that are differentiable, so G's gradient flows through them,
prevents it. Two schemes:

- DiffAugment (Zhao et al. 2020): colour (brightness +-0.5, saturation x[0, 2], contrast
  x[0.5, 1.5]), translation by up to 1/8 of the size with zero padding, and cutout of a
  square of half the size. `diff_augment(rng, images, policy, p)` applies each listed
  group to each example with probability `p` (the paper's setting is p = 1).
- ADA (Karras et al. 2020): `ada_augment(rng, images, p, pipeline)`, stylegan2-ada-pytorch's
  AugmentPipe for the `bgc` pipeline (and its `blit`, `geom`, `color`, `bg` subsets): x-flip,
  90-degree rotations, integer translation (0.125), isotropic scaling (log2 std 0.2),
  rotation, anisotropic scaling (0.2), fractional translation (std 0.125), then brightness
  (0.2), contrast (log2 std 0.5), luma flip, hue rotation and saturation (log2 std 1), each
  applied to each example with probability p. The geometric part is one inverse affine
  map per example, executed as ADA does to avoid aliasing: reflect-pad, 2x upsampling with
  the sym6 wavelet filter, bilinear resampling (`jax.scipy.ndimage.map_coordinates`, mode
  reflect), sym6 downsampling; the colour part is one 4x4 matrix per example (RGB: rotation
  about the luma axis for hue; 1 channel: its mean row, as ADA does for L images). The
  training objective moves p (see objectives/gan.py); p = 0 skips the whole pipeline.

Images are float [B, H, W, C] in [-1, 1]; every function keeps shape and dtype, draws
each example's parameters from its own key, and is the identity at p = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from jaxgen import fir


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


_GEOMETRIC = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac')
_COLOR = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')
# stylegan2-ada-pytorch's augpipe_specs: each operation's probability multiplier.
ADA_PIPELINES = {
    'blit': dict(xflip=1, rotate90=1, xint=1),
    'geom': dict(scale=1, rotate=1, aniso=1, xfrac=1),
    'color': dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'bg': dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    'bgc': dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
}
_LUMA = np.asarray([1, 1, 1, 0], np.float32) / math.sqrt(3)


def _translate2d(tx, ty):
  return jnp.asarray([[1, 0, tx], [0, 1, ty], [0, 0, 1]], jnp.float32)


def _scale2d(sx, sy):
  return jnp.asarray([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], jnp.float32)


def _rotate2d(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return jnp.asarray([[c, -s, 0], [s, c, 0], [0, 0, 1]], jnp.float32)


def _rotate3d(v, theta):
  """Rotation by theta about the unit axis v (Rodrigues), homogeneous 4x4."""
  vx, vy, vz = v[0], v[1], v[2]
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc = 1 - c
  return jnp.asarray([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                      [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                      [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                      [0, 0, 0, 1]], jnp.float32)


def _geometry(key, p, spec, height: int, width: int) -> jax.Array:
  """The inverse transform G_inv (output pixel -> input pixel, centred coordinates) of
  ADA's geometric operations, each drawn with probability spec[op] * p."""
  keys = iter(jax.random.split(key, 32))

  def on(name):
    return jax.random.uniform(next(keys)) < spec.get(name, 0) * p

  g_inv = jnp.eye(3)
  if spec.get('xflip'):
    i = jnp.where(on('xflip'), jnp.floor(jax.random.uniform(next(keys)) * 2), 0.0)
    g_inv = g_inv @ _scale2d(1 / (1 - 2 * i), 1.0)
  if spec.get('rotate90'):
    i = jnp.where(on('rotate90'), jnp.floor(jax.random.uniform(next(keys)) * 4), 0.0)
    g_inv = g_inv @ _rotate2d(jnp.pi / 2 * i)
  if spec.get('xint'):
    t = (jax.random.uniform(next(keys), (2,)) * 2 - 1) * 0.125
    t = jnp.where(on('xint'), t, 0.0)
    g_inv = g_inv @ _translate2d(-jnp.round(t[0] * width), -jnp.round(t[1] * height))
  if spec.get('scale'):
    s = jnp.where(on('scale'), jnp.exp2(jax.random.normal(next(keys)) * 0.2), 1.0)
    g_inv = g_inv @ _scale2d(1 / s, 1 / s)
  # Pre- and post-rotation each with p_rot, so that P(either) = spec * p.
  p_rot = 1 - jnp.sqrt(jnp.clip(1 - spec.get('rotate', 0) * p, 0, 1))

  def rotation():
    theta = (jax.random.uniform(next(keys)) * 2 - 1) * jnp.pi
    return _rotate2d(jnp.where(jax.random.uniform(next(keys)) < p_rot, theta, 0.0))
  if spec.get('rotate'):
    g_inv = g_inv @ rotation()
  if spec.get('aniso'):
    s = jnp.where(on('aniso'), jnp.exp2(jax.random.normal(next(keys)) * 0.2), 1.0)
    g_inv = g_inv @ _scale2d(1 / s, s)
  if spec.get('rotate'):
    g_inv = g_inv @ rotation()
  if spec.get('xfrac'):
    t = jnp.where(on('xfrac'), jax.random.normal(next(keys), (2,)) * 0.125, 0.0)
    g_inv = g_inv @ _translate2d(-t[0] * width, -t[1] * height)
  return g_inv


def _warp(image: jax.Array, g_inv: jax.Array) -> jax.Array:
  """Resample [H, W, C] at G_inv's coordinates with ADA's anti-aliasing: reflect-pad by
  3, 2x sym6 upsampling, bilinear sampling (reflecting beyond the edges), sym6 2x
  downsampling and the crop back to H x W."""
  height, width, channels = image.shape
  pad = len(fir.SYM6) // 4
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
  up = fir.upfirdn2d(padded[None], fir.SYM6, up=2, pad=(6, 5), gain=4.0)[0]
  size_h, size_w = up.shape[0], up.shape[1]
  # Upsampled pixel u sits at u / 2 in the padded image (ADA's affine_grid arithmetic);
  # centre it, map it through G_inv, and back to upsampled pixels.
  rows, cols = jnp.meshgrid(jnp.arange(size_h, dtype=jnp.float32),
                            jnp.arange(size_w, dtype=jnp.float32), indexing='ij')
  cx = cols / 2 - pad - (width - 1) / 2
  cy = rows / 2 - pad - (height - 1) / 2
  src_x = g_inv[0, 0] * cx + g_inv[0, 1] * cy + g_inv[0, 2]
  src_y = g_inv[1, 0] * cx + g_inv[1, 1] * cy + g_inv[1, 2]
  coords = [2 * (src_y + pad + (height - 1) / 2), 2 * (src_x + pad + (width - 1) / 2)]
  warped = jnp.stack([ndimage.map_coordinates(up[..., c], coords, order=1, mode='reflect')
                      for c in range(channels)], axis=-1)
  return fir.upfirdn2d(warped[None], fir.SYM6, down=2, pad=(-1, -1), flip=False)[0]


def _color(key, p, spec, channels: int) -> jax.Array:
  """ADA's colour transform C (4x4, homogeneous RGB), each part drawn with spec[op] * p."""
  keys = iter(jax.random.split(key, 16))

  def on(name):
    return jax.random.uniform(next(keys)) < spec.get(name, 0) * p

  eye, v = jnp.eye(4), jnp.asarray(_LUMA)
  color = eye
  if spec.get('brightness'):
    b = jnp.where(on('brightness'), jax.random.normal(next(keys)) * 0.2, 0.0)
    color = eye.at[:3, 3].set(b) @ color
  if spec.get('contrast'):
    c = jnp.where(on('contrast'), jnp.exp2(jax.random.normal(next(keys)) * 0.5), 1.0)
    color = jnp.diag(jnp.asarray([c, c, c, 1.0])) @ color
  if spec.get('lumaflip'):
    i = jnp.where(on('lumaflip'), jnp.floor(jax.random.uniform(next(keys)) * 2), 0.0)
    color = (eye - 2 * jnp.outer(v, v) * i) @ color
  if spec.get('hue') and channels > 1:
    theta = (jax.random.uniform(next(keys)) * 2 - 1) * jnp.pi
    color = _rotate3d(v, jnp.where(on('hue'), theta, 0.0)) @ color
  if spec.get('saturation') and channels > 1:
    s = jnp.where(on('saturation'), jnp.exp2(jax.random.normal(next(keys))), 1.0)
    color = (jnp.outer(v, v) + (eye - jnp.outer(v, v)) * s) @ color
  return color


def _apply_color(image: jax.Array, color: jax.Array) -> jax.Array:
  if image.shape[-1] == 3:
    return image @ color[:3, :3].T + color[:3, 3]
  if image.shape[-1] == 1:  # ADA's L images: the mean of the three rows
    row = jnp.mean(color[:3, :], axis=0)
    return image * jnp.sum(row[:3]) + row[3]
  raise ValueError(f'ADA colour transforms need 1 or 3 channels, got {image.shape[-1]}')


def ada_augment(rng: jax.Array, images: jax.Array, p: jax.Array | float,
                pipeline: str = 'bgc') -> jax.Array:
  """StyleGAN2-ADA's augmentation of a batch [B, H, W, C] at probability p."""
  spec = ADA_PIPELINES[pipeline]
  height, width, channels = images.shape[1:]

  def one(key, image):
    geom_key, color_key = jax.random.split(key)
    if any(spec.get(op) for op in _GEOMETRIC):
      g_inv = _geometry(geom_key, p, spec, height, width)
      # An example no geometric operation chose keeps its exact pixels.
      image = jnp.where(jnp.all(g_inv == jnp.eye(3)), image,
                        _warp(image, g_inv).astype(image.dtype))
    if any(spec.get(op) for op in _COLOR):
      image = _apply_color(image, _color(color_key, p, spec, channels)).astype(image.dtype)
    return image

  def augment(images):
    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)
  return jax.lax.cond(jnp.asarray(p) > 0, augment, lambda images: images, images)
