"""The CycleGAN ResNet generator (Zhu et al. 2017; `resnet_9blocks` / `resnet_6blocks` of
pytorch-CycleGAN-and-pix2pix), after Johnson et al.'s style-transfer network.

A 7x7 convolution to `ch` channels, two 3x3 stride-2 convolutions (2ch, 4ch), `num_blocks`
residual blocks of two 3x3 convolutions at 4ch, two 3x3 stride-2 transposed convolutions
back (2ch, ch; pytorch's padding 1, output_padding 1: exactly twice the size) and a 7x7
convolution to the image with tanh. Every convolution but the strided ones pads by
reflection, as CycleGAN does. A norm (instance by default: GroupNorm with one group per
channel, affine) and ReLU follow each convolution but the last; a layer followed by a norm
has no bias. The image size must divide by 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import dcgan, layers

_INIT = nnx.initializers.normal(0.02)  # CycleGAN's initialisation


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')


class ReflectConv(nnx.Module):
  """A k x k, stride-1 convolution on a reflection-padded input (same size out)."""

  def __init__(self, cin: int, cout: int, k: int, rngs: nnx.Rngs, *, bias: bool, dtype=None):
    self.pad = k // 2
    self.conv = nnx.Conv(cin, cout, kernel_size=(k, k), padding='VALID', use_bias=bias,
                         kernel_init=_INIT, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(reflect_pad(x, self.pad))


class ResidualBlock(nnx.Module):
  def __init__(self, channels: int, norm: str, rngs: nnx.Rngs, dtype=None):
    bias = norm == 'none'
    self.conv1 = ReflectConv(channels, channels, 3, rngs, bias=bias, dtype=dtype)
    self.norm1 = layers.norm_layer(norm, channels, rngs)
    self.conv2 = ReflectConv(channels, channels, 3, rngs, bias=bias, dtype=dtype)
    self.norm2 = layers.norm_layer(norm, channels, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.relu(self.norm1(self.conv1(x)))
    return x + self.norm2(self.conv2(h))


class ResnetGenerator(nnx.Module):
  def __init__(self, *, image_size: int, in_channels: int, out_channels: int, ch: int,
               num_blocks: int, norm: str, rngs: nnx.Rngs, dtype=None):
    if image_size % 4:
      raise ValueError(f'the CycleGAN ResNet generator halves the image twice: the image size '
                       f'must divide by 4, got {image_size} (pad Fashion-MNIST to 32: '
                       'data.resize="pad", data.image_size=32; 28 works as well)')
    bias = norm == 'none'
    self.conv_in = ReflectConv(in_channels, ch, 7, rngs, bias=bias, dtype=dtype)
    self.norm_in = layers.norm_layer(norm, ch, rngs)
    self.downs = nnx.List([
        nnx.Conv(ch * 2**i, ch * 2**(i + 1), kernel_size=(3, 3), strides=(2, 2),
                 padding=((1, 1), (1, 1)), use_bias=bias, kernel_init=_INIT, dtype=dtype,
                 rngs=rngs) for i in range(2)])
    self.down_norms = nnx.List([layers.norm_layer(norm, ch * 2**(i + 1), rngs)
                                for i in range(2)])
    self.blocks = nnx.List([ResidualBlock(ch * 4, norm, rngs, dtype=dtype)
                            for _ in range(num_blocks)])
    # pytorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): exactly twice the
    # size; computed per output phase (XLA:CPU's transposed convolution is slow).
    self.ups = nnx.List([
        dcgan.UpConv(ch * 2**(2 - i), ch * 2**(1 - i), rngs, dtype=dtype, use_bias=bias,
                     kernel_size=3) for i in range(2)])
    self.up_norms = nnx.List([layers.norm_layer(norm, ch * 2**(1 - i), rngs) for i in range(2)])
    self.conv_out = ReflectConv(ch, out_channels, 7, rngs, bias=True, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """float [B, H, W, in_channels] in [-1, 1] -> [B, H, W, out_channels] in [-1, 1]."""
    h = nnx.relu(self.norm_in(self.conv_in(x)))
    for conv, norm in zip(self.downs, self.down_norms):
      h = nnx.relu(norm(conv(h)))
    for block in self.blocks:
      h = block(h)
    for conv, norm in zip(self.ups, self.up_norms):
      h = nnx.relu(norm(conv(h)))
    return jnp.tanh(self.conv_out(h).astype(jnp.float32))
