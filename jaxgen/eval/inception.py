"""The FID InceptionV3 in Flax NNX: pytorch-fid's / torch-fidelity's network, layer for layer.

This is the "FID Inception" variant of the 2015-12-05 TensorFlow graph that FID numbers in
papers are computed with: 1008-way logits, BatchNorm eps 1e-3, 3x3 average pools that do
not count padding, and a max pool in the last mixed block. Images are resized to 299x299
as torch-fidelity does (TensorFlow 1.x bilinear, align_corners=False: what the original TF
graph did), then scaled to [-1, 1) by (x - 128) / 128.

Parameter names are those of the PyTorch state dict (`Mixed_5b.branch1x1.conv.weight`
becomes params['Mixed_5b']['branch1x1']['conv']['kernel'], transposed to HWIO), so weight
files load by name: see `weights.py`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgen.models.functional import FunctionalModel

INPUT_SIZE = 299
NUM_LOGITS = 1008
POOL_DIM = 2048


class FrozenBatchNorm(nnx.Module):
  """Inference BatchNorm with the PyTorch names; the statistics are parameters of a frozen net."""

  def __init__(self, channels: int, eps: float = 1e-3):
    self.weight = nnx.Param(jnp.ones(channels))
    self.bias = nnx.Param(jnp.zeros(channels))
    self.running_mean = nnx.Param(jnp.zeros(channels))
    self.running_var = nnx.Param(jnp.ones(channels))
    self.eps = eps

  def __call__(self, x):
    scale = self.weight[...] * jax.lax.rsqrt(self.running_var[...] + self.eps)
    return (x - self.running_mean[...]) * scale + self.bias[...]


class BasicConv2d(nnx.Module):
  """conv (no bias) -> BatchNorm(eps 1e-3) -> relu."""

  def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, *, rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    self.conv = nnx.Conv(cin, cout, kernel, strides=stride, use_bias=False,
                         padding=[(padding[0], padding[0]), (padding[1], padding[1])], rngs=rngs)
    self.bn = FrozenBatchNorm(cout)

  def __call__(self, x):
    return jax.nn.relu(self.bn(self.conv(x)))


def avg_pool_3x3_exclude_pad(x):
  """3x3, stride 1, padding 1, averaging only the real (unpadded) inputs (TensorFlow's way)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:3] + (1,), x.dtype)[None], 0.0, jax.lax.add,
                                window, strides, pad)
  return total / count


def max_pool(x, stride: int, padding: int = 0):
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               pad)


class InceptionA(nnx.Module):
  def __init__(self, cin: int, pool_features: int, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(avg_pool_3x3_exclude_pad(x))], axis=-1)


class InceptionB(nnx.Module):
  def __init__(self, cin: int, *, rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        max_pool(x, stride=2)], axis=-1)


class InceptionC(nnx.Module):
  def __init__(self, cin: int, c7: int, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    dbl = x
    for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                  self.branch7x7dbl_4, self.branch7x7dbl_5):
      dbl = layer(dbl)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
        dbl,
        self.branch_pool(avg_pool_3x3_exclude_pad(x))], axis=-1)


class InceptionD(nnx.Module):
  def __init__(self, cin: int, *, rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool(x, stride=2)],
                           axis=-1)


class InceptionE(nnx.Module):
  """Mixed_7b pools by average (padding excluded); Mixed_7c, in the FID graph, by max."""

  def __init__(self, cin: int, pool: str, *, rngs):
    self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.pool = pool

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = avg_pool_3x3_exclude_pad(x) if self.pool == 'avg' else max_pool(x, 1, padding=1)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
        self.branch_pool(pooled)], axis=-1)


class FIDInceptionV3(nnx.Module):
  """uint8 RGB [N, H, W, 3] -> (2048-d pool features, 1008 logits without bias, with bias)."""

  def __init__(self, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, 'avg', rngs=rngs)
    self.Mixed_7c = InceptionE(2048, 'max', rngs=rngs)
    self.fc = nnx.Linear(POOL_DIM, NUM_LOGITS, rngs=rngs)

  def __call__(self, images):
    x = resize_bilinear_tf1(images.astype(jnp.float32), INPUT_SIZE)
    x = (x - 128.0) / 128.0
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = max_pool(x, stride=2)
    x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), stride=2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      x = block(x)
    pool = x.mean(axis=(1, 2))
    logits_unbiased = pool @ self.fc.kernel[...]
    return pool, logits_unbiased, logits_unbiased + self.fc.bias[...]


def _tf1_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of TF 1.x resize_bilinear (align_corners=False, no half-pixel shift)."""
  # float32 coordinates, as TensorFlow (and torch-fidelity's exact port) compute them.
  source = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
  low = np.floor(source).astype(int)
  high = np.minimum(low + 1, in_size - 1)
  frac = source - low.astype(np.float32)
  matrix = np.zeros((out_size, in_size), np.float32)
  matrix[np.arange(out_size), low] += 1 - frac
  matrix[np.arange(out_size), high] += frac
  return matrix


def resize_bilinear_tf1(x, size: int):
  """[N, H, W, C] -> [N, size, size, C] as TensorFlow 1.x (and torch-fidelity) resize."""
  rows = _tf1_bilinear_matrix(x.shape[1], size)
  cols = _tf1_bilinear_matrix(x.shape[2], size)
  return jnp.einsum('oh,nhwc,pw->nopc', rows, x, cols,
                    precision=jax.lax.Precision.HIGHEST)


MODEL = FunctionalModel(FIDInceptionV3)


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, 1|3] -> [N, H, W, 3] (grayscale repeated, as the references do)."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Inception takes uint8 [N, H, W, 1 or 3] images, got {images.dtype} '
                     f'{images.shape}')
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def abstract_params() -> dict[str, Any]:
  return MODEL.abstract_params()
