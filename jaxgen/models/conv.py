"""2-D convolution, with gradients as matrix products inside lazy-regulariser branches.

Lazy regularisation (R1, path length) takes gradients inside `lax.cond`. There, XLA:CPU
runs the weight gradient of a convolution ~50x slower than in the entry computation (3.2 s
instead of 65 ms for a 3x3, 64-channel conv of 32 images of 32x32, jax 0.10.2 on a 2-core
EPYC; no XLA flag changed it), while matrix products and forward convolutions run at full
speed. `matmul_conv2d` keeps XLA's forward convolution and computes its backward pass as
one matrix product of im2col patches (weights) and a forward convolution or one product
per tap (input); the backward pass is built from the same pieces, so second derivatives
(R1's gradient of an input gradient) stay fast too. Outside a conditional XLA's own
gradients are ~1.4x faster, so `conv2d` uses the matrix form only while a branch is traced
under `matmul_gradients()` (a trace-time switch: the same function, the same values up to
float summation order).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp

from jaxgen.models import onednn

Padding = tuple[tuple[int, int], tuple[int, int]]


def _forward(x: jax.Array, w: jax.Array, stride: int, padding: Padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


_MATMUL_GRADIENTS = contextvars.ContextVar('jaxgen_matmul_gradients', default=False)


@contextlib.contextmanager
def matmul_gradients():
  """While tracing under this, `conv2d` differentiates through matrix products: for the
  body of a lax.cond branch that takes gradients."""
  token = _MATMUL_GRADIENTS.set(True)
  try:
    yield
  finally:
    _MATMUL_GRADIENTS.reset(token)


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, padding: Padding = ((1, 1), (1, 1))
           ) -> jax.Array:
  """NHWC x HWIO convolution with explicit padding ((top, bottom), (left, right))."""
  if _MATMUL_GRADIENTS.get():
    return matmul_conv2d(x, w, stride, padding)
  return _forward(x, w, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul_conv2d(x: jax.Array, w: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """The convolution with the backward pass described above."""
  return _forward(x, w, stride, padding)


def _conv2d_fwd(x, w, stride, padding):
  # Itself, not _forward: differentiating this rule again (a second derivative)
  # then goes through the custom backward pass as well.
  return matmul_conv2d(x, w, stride, padding), (x, w)


def _taps(padded: jax.Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> jax.Array:
  """The input pixels kernel tap (i, j) meets, for every output pixel: [B, out_h, out_w, C]."""
  return padded[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]


def _conv2d_bwd(stride, padding, residuals, dy):
  x, w = residuals
  kh, kw = w.shape[:2]
  (top, bottom), (left, right) = padding
  out_h, out_w = dy.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  # One matrix product of the im2col patches [B*H*W, k*k*C_in] and dy [B*H*W, C_out].
  patches = jnp.concatenate([_taps(padded, i, j, stride, out_h, out_w)
                             for i in range(kh) for j in range(kw)], axis=-1)
  dw = jnp.einsum('bhwk,bhwo->ko', patches, dy).reshape(w.shape).astype(w.dtype)
  if stride == 1:
    # The transposed convolution is a forward one: dy padded by k - 1 - p, flipped kernel.
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = matmul_conv2d(dy, flipped, 1,
                       ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)))
  else:  # strided: scatter each tap's product back onto the padded input
    d_padded = jnp.zeros(padded.shape, dy.dtype)
    for i in range(kh):
      for j in range(kw):
        d_padded = d_padded.at[:, i:i + stride * (out_h - 1) + 1:stride,
                               j:j + stride * (out_w - 1) + 1:stride].add(
            jnp.einsum('bhwo,io->bhwi', dy, w[i, j].astype(dy.dtype)))
    dx = d_padded[:, top:top + x.shape[1], left:left + x.shape[2]]
  return dx.astype(x.dtype), dw


matmul_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         **kwargs):
  """`jax.lax.conv_general_dilated` for `nnx.Conv(conv_general_dilated=...)`. A plain NHWC x
  HWIO convolution (one stride, no dilation or groups) goes through `matmul_conv2d` under
  `matmul_gradients()`, else through `onednn.conv2d` where that applies (float32 on the
  CPU backend with the library built); everything else is XLA's."""
  plain = (lhs.ndim == 4 and len(set(window_strides)) == 1 and feature_group_count == 1
           and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
           and dimension_numbers == jax.lax.conv_dimension_numbers(
               lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
           and all(v is None for v in kwargs.values()))
  if plain and _MATMUL_GRADIENTS.get() and not isinstance(padding, str):
    return matmul_conv2d(lhs, rhs, window_strides[0], tuple(tuple(p) for p in padding))
  if plain and not _MATMUL_GRADIENTS.get() and onednn.applies(lhs, rhs):
    if isinstance(padding, str):
      padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return onednn.conv2d(lhs, rhs, window_strides[0], tuple(tuple(p) for p in padding))
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      **kwargs)


# Output phase a (row or column parity) of a 4x4, stride-2 'SAME' transposed convolution:
# input offsets (-1, 0) through kernel taps (0, 2) for a = 0, offsets (0, 1) through
# taps (1, 3) for a = 1.
_PHASES = (((0, 2), (1, 0)), ((1, 3), (0, 1)))  # (taps, (pad before, pad after))


def conv_transpose_4x4_stride2(x: jax.Array, w: jax.Array) -> jax.Array:
  """`jax.lax.conv_transpose(x, w, (2, 2), 'SAME')` (NHWC x HWIO, kernel not flipped: what
  `nnx.ConvTranspose` computes) for a 4x4 kernel, as four 2x2 convolutions, one per output
  phase, interleaved. XLA:CPU runs the input-dilated convolution of conv_transpose, forward
  and backward, 4-5x slower than one 3x3 convolution into the four phases, and that 1.5-2x
  slower than this (B 64, 7-14 px, 32-128 channels, jax 0.10.2 on a 2-core EPYC)."""
  if w.shape[:2] != (4, 4):
    raise ValueError(f'conv_transpose_4x4_stride2 needs a 4x4 kernel, got {w.shape[:2]}')
  return _phase_transpose(x, w, _PHASES)


# pytorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1) (CycleGAN's): even
# outputs take input offset 0 through tap 1; odd ones offsets (0, 1) through taps (0, 2).
_PHASES_3X3 = (((1,), (0, 0)), ((0, 2), (0, 1)))


def conv_transpose_3x3_stride2(x: jax.Array, w: jax.Array) -> jax.Array:
  """`jax.lax.conv_transpose(x, w, (2, 2), ((1, 2), (1, 2)))` (NHWC x HWIO, kernel not
  flipped: `nnx.ConvTranspose` with that padding, pytorch's padding 1 and output_padding 1)
  for a 3x3 kernel: exactly twice the size, as four small convolutions (1x1, 1x2, 2x1,
  2x2), one per output phase, interleaved (for the reason conv_transpose_4x4_stride2 has)."""
  if w.shape[:2] != (3, 3):
    raise ValueError(f'conv_transpose_3x3_stride2 needs a 3x3 kernel, got {w.shape[:2]}')
  return _phase_transpose(x, w, _PHASES_3X3)


def _phase_transpose(x: jax.Array, w: jax.Array, phases) -> jax.Array:
  rows = []
  for row_taps, row_pad in phases:
    cols = []
    for col_taps, col_pad in phases:
      kernel = w[jnp.asarray(row_taps)][:, jnp.asarray(col_taps)]
      cols.append(_forward(x, kernel, 1, (row_pad, col_pad)))
    rows.append(jnp.stack(cols, axis=3))  # [B, H, W, column phase, C]
  y = jnp.stack(rows, axis=2)  # [B, H, row phase, W, column phase, C]
  batch, height, _, width, _, channels = y.shape
  return y.reshape(batch, 2 * height, 2 * width, channels)


def same_padding(k: int) -> Padding:
  return ((k // 2, (k - 1) // 2), (k // 2, (k - 1) // 2))
