"""DCGAN generator and discriminator (Radford et al. 2016) for 28-64 px images.

Generator: z (and a label embedding) -> dense -> base x base feature map, where base is the
image size halved until it is at most 7 (28 -> 7, 32 -> 4, 64 -> 4); then one 4x4
transposed convolution of stride 2 per doubling (widths halving down to `ch`; computed as
four 2x2 convolutions, one per output phase, `UpConv`), and a 3x3 convolution to the image
channels with tanh. Discriminator: 4x4 convolutions of stride 2
(widths doubling from `ch`) with LeakyReLU(0.2), no normalisation on the first, down to the
base size (their gradients go through matrix products inside lazy-regulariser branches:
`conv.conv_general_dilated`), optionally StyleGAN's minibatch-standard-deviation feature map there
(`mbstd_group_size` > 0: D sees how varied a group of its inputs is, which penalises a G
that collapses onto few images), then one dense layer to the logit, or, class-conditional,
to a `cmap_dim` vector projected on the label's embedding (Miyato & Koyama 2018, as
StyleGAN2 conditions).

Both networks speak the GAN objective's interface (shared with StyleGAN2):
  generator.mapping(z, labels) -> ws [B, num_ws, w_dim]  (DCGAN: ws = [z, embed(label)], one)
  generator.synthesis(ws, noise_rng) -> images [B, H, W, C] in [-1, 1]
  discriminator(images, labels) -> logits [B]

`norm`: 'group' (GroupNorm, 32 groups where the width allows), 'layer' (one group) or
'none'. A layer followed by a norm has no bias, as in DCGAN: the norm's own shift replaces
it (and a per-channel norm would cancel it, leaving a parameter that only rounding moves).
DCGAN's BatchNorm is not offered: it keeps running statistics (hidden state) and mixes
the examples of a batch, which a sharded step would have to synchronise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import conv as conv_lib
from jaxgen.models import layers, stylegan2

_INIT = nnx.initializers.normal(0.02)  # DCGAN's initialisation
NORMS = ('group', 'layer', 'none')


def base_size(image_size: int) -> tuple[int, int]:
  """(number of 2x resolution steps, starting size): 28 -> (2, 7), 32 -> (3, 4)."""
  steps, size = 0, image_size
  while size > 7 and size % 2 == 0:
    steps, size = steps + 1, size // 2
  if steps == 0:
    raise ValueError(f'DCGAN needs an even image size above 7 (28, 32, 64...), got {image_size}')
  return steps, size


class UpConv(nnx.Module):
  """A stride-2 transposed convolution that doubles the size, with the parameters and
  function of `nnx.ConvTranspose`, run as per-phase convolutions (`conv.conv_transpose_*`):
  4x4 with 'SAME' padding (DCGAN's, pix2pix's) or 3x3 with padding ((1, 2), (1, 2))
  (pytorch's padding 1, output_padding 1: CycleGAN's)."""

  def __init__(self, cin: int, cout: int, rngs: nnx.Rngs, dtype=None, use_bias: bool = True,
               kernel_size: int = 4):
    if kernel_size not in (3, 4):
      raise ValueError(f'UpConv has 3x3 and 4x4 kernels, not {kernel_size}')
    self.kernel = nnx.Param(_INIT(rngs.params(), (kernel_size, kernel_size, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,))) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or x.dtype
    transpose = (conv_lib.conv_transpose_4x4_stride2 if self.kernel.shape[0] == 4 else
                 conv_lib.conv_transpose_3x3_stride2)
    y = transpose(x.astype(dtype), self.kernel[...].astype(dtype))
    return y if self.bias is None else y + self.bias[...].astype(dtype)


class Generator(nnx.Module):
  def __init__(self, *, image_size: int, channels: int, z_dim: int, ch: int, norm: str,
               num_classes: int, rngs: nnx.Rngs, dtype=None):
    steps, self.base = base_size(image_size)
    self.z_dim, self.num_ws, self.num_classes = z_dim, 1, num_classes
    self.embed = (nnx.Embed(num_classes, z_dim, embedding_init=_INIT, rngs=rngs)
                  if num_classes else None)
    self.w_dim = z_dim * (2 if num_classes else 1)
    width = ch * 2**steps
    self.width = width
    bias = norm == 'none'
    self.project = nnx.Linear(self.w_dim, self.base * self.base * width, kernel_init=_INIT,
                              use_bias=bias, dtype=dtype, rngs=rngs)
    self.norm_in = layers.norm_layer(norm, width, rngs)
    ups, norms = [], []
    for _ in range(steps):
      ups.append(UpConv(width, width // 2, rngs, dtype=dtype, use_bias=bias))
      norms.append(layers.norm_layer(norm, width // 2, rngs))
      width //= 2
    self.ups, self.norms = nnx.List(ups), nnx.List(norms)
    self.conv_out = nnx.Conv(width, channels, kernel_size=(3, 3), padding='SAME',
                             kernel_init=_INIT, dtype=dtype, rngs=rngs)

  def mapping(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    w = z
    if self.embed is not None:
      w = jnp.concatenate([z, self.embed(labels).astype(z.dtype)], axis=-1)
    return w[:, None, :]

  def synthesis(self, ws: jax.Array, noise_rng: jax.Array | None = None) -> jax.Array:
    del noise_rng  # DCGAN draws all its randomness from z
    h = self.project(ws[:, 0]).reshape(ws.shape[0], self.base, self.base, self.width)
    h = nnx.relu(self.norm_in(h))
    for up, norm in zip(self.ups, self.norms):
      h = nnx.relu(norm(up(h)))
    return jnp.tanh(self.conv_out(h).astype(jnp.float32))


class Discriminator(nnx.Module):
  def __init__(self, *, image_size: int, channels: int, ch: int, norm: str, num_classes: int,
               cmap_dim: int, rngs: nnx.Rngs, mbstd_group_size: int = 0, dtype=None):
    steps, base = base_size(image_size)
    self.mbstd_group_size = mbstd_group_size
    convs, norms, width = [], [], channels
    for i in range(steps):
      convs.append(nnx.Conv(width, ch * 2**i, kernel_size=(4, 4), strides=(2, 2),
                            padding=((1, 1), (1, 1)), kernel_init=_INIT, dtype=dtype,
                            use_bias=norm == 'none' or i == 0,
                            conv_general_dilated=conv_lib.conv_general_dilated, rngs=rngs))
      norms.append(layers.norm_layer(norm if i else 'none', ch * 2**i, rngs))
      width = ch * 2**i
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.cmap_dim = cmap_dim if num_classes else 0
    features = base * base * (width + bool(mbstd_group_size))
    self.out = nnx.Linear(features, self.cmap_dim or 1, kernel_init=_INIT, dtype=dtype,
                          rngs=rngs)
    self.embed = (nnx.Embed(num_classes, cmap_dim, embedding_init=nnx.initializers.normal(1.0),
                            rngs=rngs) if num_classes else None)

  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    h = x
    for conv, norm in zip(self.convs, self.norms):
      h = nnx.leaky_relu(norm(conv(h)), 0.2)
    if self.mbstd_group_size:
      h = stylegan2.minibatch_stddev(h, self.mbstd_group_size, 1)
    out = self.out(h.reshape(h.shape[0], -1)).astype(jnp.float32)
    if self.embed is None:
      return out[:, 0]
    cmap = self.embed(labels).astype(jnp.float32)
    return jnp.sum(out * cmap, axis=-1) / math.sqrt(self.cmap_dim)
