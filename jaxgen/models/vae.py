"""Convolutional encoder/decoder pair (NNX) for VAEs and the KL autoencoder.

The encoder maps an image to the mean and log-variance of a diagonal Gaussian
posterior; the decoder maps a latent to the parameters of a pixel likelihood
(`out_channels` per pixel, chosen by the objective). The latent is either a
vector (`latent='dense'`: a VAE) or a feature map downsampled by
2**(len(ch_mult) - 1) (`latent='spatial'`: the latent-diffusion first stage,
as in the LDM/taming autoencoders). GroupNorm only, so the module is pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import layers


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-conv twice, with a 1x1 projection on the skip when widths differ."""

  def __init__(self, cin: int, cout: int, rngs: nnx.Rngs, dtype=None):
    self.norm1 = layers.group_norm(cin, rngs)
    self.conv1 = layers.conv(cin, cout, 3, rngs, dtype=dtype)
    self.norm2 = layers.group_norm(cout, rngs)
    self.conv2 = layers.conv(cout, cout, 3, rngs, zero=True, dtype=dtype)
    self.skip = layers.conv(cin, cout, 1, rngs, dtype=dtype) if cin != cout else None

  def __call__(self, x):
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = self.conv2(nnx.silu(self.norm2(h)))
    return (self.skip(x) if self.skip is not None else x) + h


class Encoder(nnx.Module):
  def __init__(self, *, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
               rngs: nnx.Rngs, dtype=None):
    self.conv_in = layers.conv(in_channels, ch, 3, rngs, dtype=dtype)
    blocks, downs, cin = [], [], ch
    for level, mult in enumerate(ch_mult):
      for _ in range(num_res_blocks):
        blocks.append(ResBlock(cin, ch * mult, rngs, dtype))
        cin = ch * mult
      if level < len(ch_mult) - 1:
        downs.append(layers.conv(cin, cin, 3, rngs, stride=2, dtype=dtype))
    self.blocks = nnx.List(blocks)
    self.downs = nnx.List(downs)
    self.norm_out = layers.group_norm(cin, rngs)
    self.out_channels = cin
    self.num_res_blocks = num_res_blocks

  def __call__(self, x):
    h = self.conv_in(x)
    for level in range(len(self.downs) + 1):
      for i in range(self.num_res_blocks):
        h = self.blocks[level * self.num_res_blocks + i](h)
      if level < len(self.downs):
        h = self.downs[level](h)
    return nnx.silu(self.norm_out(h))


class Decoder(nnx.Module):
  def __init__(self, *, out_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
               rngs: nnx.Rngs, dtype=None):
    cin = ch * ch_mult[-1]
    self.in_channels = cin
    blocks, ups = [], []
    for level, mult in reversed(list(enumerate(ch_mult))):
      for _ in range(num_res_blocks):
        blocks.append(ResBlock(cin, ch * mult, rngs, dtype))
        cin = ch * mult
      if level > 0:
        ups.append(layers.conv(cin, cin, 3, rngs, dtype=dtype))  # after nearest-neighbour 2x
    self.blocks = nnx.List(blocks)
    self.ups = nnx.List(ups)
    self.norm_out = layers.group_norm(cin, rngs)
    self.conv_out = layers.conv(cin, out_channels, 3, rngs, dtype=dtype)
    self.num_res_blocks = num_res_blocks

  def head(self, h):
    """The last layer alone: the KL autoencoder weighs its GAN loss by gradients here."""
    return self.conv_out(h)

  def trunk(self, h):
    for level in range(len(self.ups) + 1):
      for i in range(self.num_res_blocks):
        h = self.blocks[level * self.num_res_blocks + i](h)
      if level < len(self.ups):
        b, height, width, c = h.shape
        h = jax.image.resize(h, (b, 2 * height, 2 * width, c), 'nearest')
        h = self.ups[level](h)
    return nnx.silu(self.norm_out(h))


class VAE(nnx.Module):
  """encode(x) -> (mean, logvar); decode(z) -> likelihood parameters, float32."""

  def __init__(self, *, image_size: int, in_channels: int, out_channels: int, ch: int,
               ch_mult: Sequence[int], num_res_blocks: int, latent: str, latent_dim: int,
               rngs: nnx.Rngs, dtype=None):
    factor = 2 ** (len(ch_mult) - 1)
    if image_size % factor:
      raise ValueError(f'image_size {image_size} is not divisible by the downsampling factor '
                       f'{factor} of ch_mult={tuple(ch_mult)}')
    if latent not in ('dense', 'spatial'):
      raise ValueError(f'latent={latent!r} must be "dense" or "spatial"')
    self.latent = latent
    self.grid = image_size // factor
    self.latent_dim = latent_dim
    kw = {'ch': ch, 'ch_mult': ch_mult, 'num_res_blocks': num_res_blocks, 'rngs': rngs,
          'dtype': dtype}
    self.encoder = Encoder(in_channels=in_channels, **kw)
    self.decoder = Decoder(out_channels=out_channels, **kw)
    width = self.encoder.out_channels
    if latent == 'dense':
      flat = self.grid * self.grid * width
      self.to_moments = nnx.Linear(flat, 2 * latent_dim, kernel_init=layers.DEFAULT_INIT,
                                   dtype=dtype, rngs=rngs)
      self.from_latent = nnx.Linear(latent_dim, flat, kernel_init=layers.DEFAULT_INIT, dtype=dtype,
                                    rngs=rngs)
    else:
      self.to_moments = layers.conv(width, 2 * latent_dim, 3, rngs, dtype=dtype)
      self.from_latent = layers.conv(latent_dim, self.decoder.in_channels, 3, rngs, dtype=dtype)

  def latent_shape(self) -> tuple[int, ...]:
    if self.latent == 'dense':
      return (self.latent_dim,)
    return (self.grid, self.grid, self.latent_dim)

  def encode(self, x):
    h = self.encoder(x)
    if self.latent == 'dense':
      h = h.reshape(h.shape[0], -1)
    moments = self.to_moments(h).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    # The clip keeps exp(logvar) finite early in training (as the LDM autoencoder does).
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    return self.decode_head(self.decode_trunk(z))

  def decode_trunk(self, z):
    """Decoder features before its last layer (see `decode_head`)."""
    h = self.from_latent(z)
    if self.latent == 'dense':
      h = h.reshape(z.shape[0], self.grid, self.grid, self.decoder.in_channels)
    return self.decoder.trunk(h)

  def decode_head(self, h):
    return self.decoder.head(h).astype(jnp.float32)
