"""FIR filtering with up- and downsampling of NHWC images: stylegan2-ada-pytorch's
`upfirdn2d` in plain JAX (one depthwise convolution), for StyleGAN2's [1, 3, 3, 1]
resampling and ADA's anti-aliased geometric augmentation (sym6 wavelet filter)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Daubechies symlet 6 low-pass filter (ADA's `Hz_geom`).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


def fir_filter(taps=(1, 3, 3, 1), gain: float = 1.0) -> np.ndarray:
  """The separable 2-D FIR kernel of `taps` (outer product), normalised to sum `gain`."""
  taps = np.asarray(taps, np.float64)
  kernel = np.outer(taps, taps)
  return (kernel / kernel.sum() * gain).astype(np.float32)


def upfirdn2d(x: jax.Array, kernel: np.ndarray, *, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), flip: bool = True) -> jax.Array:
  """Upsample by zero insertion, pad (negative: crop), filter each channel with `kernel`,
  keep every `down`-th pixel. `flip=True` convolves (upfirdn2d's default, flip_filter=False);
  False correlates. Symmetric kernels give the same either way."""
  batch, height, width, channels = x.shape
  if up > 1:
    x = x.reshape(batch, height, 1, width, 1, channels)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, up - 1), (0, 0), (0, up - 1), (0, 0)))
    x = x.reshape(batch, height * up, width * up, channels)
  zero = jnp.zeros((), x.dtype)
  x = jax.lax.pad(x, zero, ((0, 0, 0), (pad[0], pad[1], 0), (pad[0], pad[1], 0), (0, 0, 0)))
  kernel = np.asarray(kernel)[::-1, ::-1] if flip else np.asarray(kernel)
  taps = jnp.tile(jnp.asarray(kernel.copy(), x.dtype)[:, :, None, None], (1, 1, 1, channels))
  return jax.lax.conv_general_dilated(
      x, taps, window_strides=(down, down), padding='VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)


def upsample2d(x: jax.Array) -> jax.Array:
  """StyleGAN2's 2x upsampling with [1, 3, 3, 1]: [B, H, W, C] -> [B, 2H, 2W, C]."""
  return upfirdn2d(x, fir_filter(gain=4.0), up=2, pad=(2, 1))
