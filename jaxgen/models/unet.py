"""DDPM-style UNet (Ho et al. 2020) as a Flax NNX module, used functionally.

The layout follows the reference DDPM/score_sde `ddpm.py` so that the CIFAR-10
configuration (ch=128, ch_mult=(1, 2, 2, 2), 2 res blocks, attention at 16x16)
has the published 35.7M parameters. Dropout takes an explicit key so the
module carries no RNG state and can be called inside any jitted function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import layers

# Activation rematerialisation of the res/attention blocks: what the backward pass may keep.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute everything
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep conv/matmul outs
}


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) timesteps, shape [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-conv, plus a projection of the time embedding, twice."""

  def __init__(self, cin: int, cout: int, temb_dim: int, dropout: float, rngs: nnx.Rngs,
               dtype=None):
    self.norm1 = layers.group_norm(cin, rngs)
    self.conv1 = layers.conv(cin, cout, 3, rngs, dtype=dtype)
    self.temb = nnx.Linear(temb_dim, cout, kernel_init=layers.DEFAULT_INIT, dtype=dtype, rngs=rngs)
    self.norm2 = layers.group_norm(cout, rngs)
    self.conv2 = layers.conv(cout, cout, 3, rngs, zero=True, dtype=dtype)
    self.skip = layers.conv(cin, cout, 1, rngs, dtype=dtype) if cin != cout else None
    self.dropout = dropout

  def __call__(self, x, temb, rng):
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = h + self.temb(nnx.silu(temb))[:, None, None, :]
    h = nnx.silu(self.norm2(h))
    h = self.conv2(layers.dropout(h, self.dropout, rng))
    if self.skip is not None:
      x = self.skip(x)
    return x + h


class AttnBlock(nnx.Module):
  """Single-head self-attention over all spatial positions (as in DDPM)."""

  def __init__(self, channels: int, rngs: nnx.Rngs, dtype=None):
    self.norm = layers.group_norm(channels, rngs)
    self.qkv = layers.conv(channels, 3 * channels, 1, rngs, dtype=dtype)
    self.proj = layers.conv(channels, channels, 1, rngs, zero=True, dtype=dtype)

  def __call__(self, x):
    b, hgt, wid, c = x.shape
    q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, hgt * wid, 3 * c), 3, axis=-1)
    h = layers.attention(q, k, v).reshape(b, hgt, wid, c)
    return x + self.proj(h)


class UNet(nnx.Module):
  """Noise-prediction UNet: (x [B,H,W,C], t [B], labels [B] | None) -> [B,H,W,C]."""

  def __init__(self, *, image_size: int, in_channels: int, ch: int, ch_mult: Sequence[int],
               num_res_blocks: int, attn_resolutions: Sequence[int], dropout: float = 0.0,
               num_classes: int = 0, remat: str = 'none', rngs: nnx.Rngs, dtype=None):
    if remat not in REMAT_POLICIES:
      raise ValueError(f'remat={remat!r} is not one of {sorted(REMAT_POLICIES)}')
    self.remat = remat
    self.ch = ch
    self.num_levels = len(ch_mult)
    self.num_res_blocks = num_res_blocks
    temb_dim = 4 * ch
    self.temb1 = nnx.Linear(ch, temb_dim, kernel_init=layers.DEFAULT_INIT, rngs=rngs)
    self.temb2 = nnx.Linear(temb_dim, temb_dim, kernel_init=layers.DEFAULT_INIT, rngs=rngs)
    # Class-conditional models get one extra "null" label, for classifier-free guidance.
    self.label_emb = nnx.Embed(num_classes + 1, temb_dim, rngs=rngs) if num_classes else None
    self.conv_in = layers.conv(in_channels, ch, 3, rngs, dtype=dtype)

    down, skips, res = [], [ch], image_size
    cin = ch
    for level, mult in enumerate(ch_mult):
      cout = ch * mult
      for _ in range(num_res_blocks):
        down.append(ResBlock(cin, cout, temb_dim, dropout, rngs, dtype))
        down.append(AttnBlock(cout, rngs, dtype) if res in attn_resolutions else None)
        cin = cout
        skips.append(cin)
      if level != self.num_levels - 1:
        down.append(layers.conv(cin, cin, 3, rngs, stride=2, dtype=dtype))
        skips.append(cin)
        res //= 2
    self.down = nnx.List(down)

    self.mid1 = ResBlock(cin, cin, temb_dim, dropout, rngs, dtype)
    self.mid_attn = AttnBlock(cin, rngs, dtype)
    self.mid2 = ResBlock(cin, cin, temb_dim, dropout, rngs, dtype)

    up = []
    for level, mult in reversed(list(enumerate(ch_mult))):
      cout = ch * mult
      for _ in range(num_res_blocks + 1):
        up.append(ResBlock(cin + skips.pop(), cout, temb_dim, dropout, rngs, dtype))
        up.append(AttnBlock(cout, rngs, dtype) if res in attn_resolutions else None)
        cin = cout
      if level != 0:
        up.append(layers.conv(cin, cin, 3, rngs, dtype=dtype))
        res *= 2
    self.up = nnx.List(up)
    self.norm_out = layers.group_norm(cin, rngs)
    self.conv_out = layers.conv(cin, in_channels, 3, rngs, zero=True, dtype=dtype)

  def _block(self, block: nnx.Module, *args) -> jax.Array:
    if self.remat == 'none':
      return block(*args)
    return nnx.remat(lambda module, *a: module(*a), policy=REMAT_POLICIES[self.remat])(
        block, *args)

  def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    num_blocks = 2 * (self.num_levels * (2 * self.num_res_blocks + 1) + 1)
    rngs = (list(jax.random.split(dropout_rng, num_blocks)) if dropout_rng is not None
            else [None] * num_blocks)
    temb = self.temb2(nnx.silu(self.temb1(timestep_embedding(t, self.ch))))
    if self.label_emb is not None and labels is not None:
      temb = temb + self.label_emb(labels)

    h = self.conv_in(x)
    hs = [h]
    i = 0
    while i < len(self.down):
      block = self.down[i]
      if isinstance(block, ResBlock):
        h = self._block(block, h, temb, rngs.pop())
        if self.down[i + 1] is not None:
          h = self._block(self.down[i + 1], h)
        i += 2
      else:  # strided conv: downsample
        h = block(h)
        i += 1
      hs.append(h)

    h = self._block(self.mid1, h, temb, rngs.pop())
    h = self._block(self.mid2, self._block(self.mid_attn, h), temb, rngs.pop())

    i = 0
    while i < len(self.up):
      block = self.up[i]
      if isinstance(block, ResBlock):
        h = self._block(block, jnp.concatenate([h, hs.pop()], axis=-1), temb, rngs.pop())
        if self.up[i + 1] is not None:
          h = self._block(self.up[i + 1], h)
        i += 2
      else:  # nearest-neighbour upsample, then conv
        b, hgt, wid, c = h.shape
        h = block(jax.image.resize(h, (b, 2 * hgt, 2 * wid, c), 'nearest'))
        i += 1
    return self.conv_out(nnx.silu(self.norm_out(h)))
