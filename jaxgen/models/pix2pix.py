"""The pix2pix U-Net generator (Isola et al. 2017, the `unet_256` of pytorch-CycleGAN-and-pix2pix).

`num_downs` 4x4 stride-2 convolutions halve the image down to 1 pixel at full size (8 for
256 px; 5 for Fashion-MNIST padded to 32 px), widths ch, 2ch, 4ch, 8ch, then 8ch. Going
up, each 4x4 stride-2 transposed convolution's output is concatenated with the encoder's
activation of the same size (the skip connections), so the decoder sees the source image's
details at every scale. Down: LeakyReLU(0.2), conv, norm (none on the first and the
innermost); up: ReLU, transposed conv, norm, with dropout 0.5 on the `dropout_blocks`
blocks next to the innermost (pix2pix's only noise source: a U-Net given noise z learns to
ignore it); the outermost ends in tanh.

Dropout stays on when translating, as in pix2pix, which draws its outputs with dropout
active: pass a key to `__call__` for that; without one the network is deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import dcgan, layers

_INIT = nnx.initializers.normal(0.02)  # pix2pix's initialisation
DROPOUT_RATE = 0.5


def down_conv(cin: int, cout: int, rngs: nnx.Rngs, *, bias: bool, dtype=None) -> nnx.Conv:
  return nnx.Conv(cin, cout, kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=bias, kernel_init=_INIT, dtype=dtype, rngs=rngs)


class UNetGenerator(nnx.Module):
  def __init__(self, *, image_size: int, in_channels: int, out_channels: int, ch: int,
               num_downs: int, norm: str, dropout_blocks: int, rngs: nnx.Rngs, dtype=None):
    if image_size % 2**num_downs:
      raise ValueError(f'model.num_downs={num_downs} halvings need an image size divisible by '
                       f'{2**num_downs}, got {image_size} (pad Fashion-MNIST to 32: '
                       'data.resize="pad", data.image_size=32)')
    if not 0 <= dropout_blocks <= num_downs - 2:
      raise ValueError(f'model.dropout_blocks={dropout_blocks} must be in [0, {num_downs - 2}]'
                       ' (blocks between the outermost and the innermost)')
    widths = [ch * min(2**i, 8) for i in range(num_downs)]
    innermost = num_downs - 1
    # Down block i maps widths[i-1] (the image for i = 0) to widths[i].
    self.downs = nnx.List([
        down_conv(widths[i - 1] if i else in_channels, widths[i], rngs, dtype=dtype,
                  bias=i in (0, innermost) or norm == 'none') for i in range(num_downs)])
    self.down_norms = nnx.List([
        layers.norm_layer('none' if i in (0, innermost) else norm, widths[i], rngs)
        for i in range(num_downs)])
    # Up block i maps the innermost output (i = innermost) or the concatenation of up block
    # i + 1's output with down block i's, back to down block i's input width.
    self.ups = nnx.List([
        dcgan.UpConv(widths[i] * (1 if i == innermost else 2),
                     widths[i - 1] if i else out_channels, rngs, dtype=dtype,
                     use_bias=i == 0 or norm == 'none') for i in range(num_downs)])
    self.up_norms = nnx.List([
        layers.norm_layer('none' if i == 0 else norm, widths[i - 1] if i else out_channels, rngs)
        for i in range(num_downs)])
    self.dropout = tuple(innermost - 1 - j for j in range(dropout_blocks))

  def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
    """float [B, H, W, in_channels] in [-1, 1] -> [B, H, W, out_channels] in [-1, 1]."""
    skips, h = [], x
    for i, (conv, norm) in enumerate(zip(self.downs, self.down_norms)):
      h = norm(conv(h if i == 0 else nnx.leaky_relu(h, 0.2)))
      skips.append(h)
    for i in reversed(range(len(self.ups))):
      if i < len(self.ups) - 1:
        h = jnp.concatenate([h, skips[i]], axis=-1)
      h = self.up_norms[i](self.ups[i](nnx.relu(h)))
      if i in self.dropout and dropout_rng is not None:
        keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, i), 1 - DROPOUT_RATE,
                                    h.shape)
        h = jnp.where(keep, h / (1 - DROPOUT_RATE), 0).astype(h.dtype)
    return jnp.tanh(h.astype(jnp.float32))
