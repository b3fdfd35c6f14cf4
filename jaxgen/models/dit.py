"""DiT (Peebles & Xie, 2023) as a Flax NNX module, used functionally.

Patchify (a p x p, stride-p convolution) plus fixed 2-D sin-cos position embeddings, then
transformer blocks conditioned by adaLN-Zero: the sum c of the timestep (and class)
embeddings regresses, per block, the shift, scale and gate of the attention and MLP branches
(6 x hidden, zero-initialised, so every block starts as the identity), then a final
adaLN layer and a zero-initialised linear map back to patches. The layout follows the
reference `models.py`, so that DiT-S/B/L/XL at patch 2 on 32 x 32 x 4 latents with 1,000
classes have the published 33M / 130M / 458M / 675M parameters (tests/test_dit.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgen.models.unet import REMAT_POLICIES, timestep_embedding

# (hidden size, depth, heads) of the published models.
SIZES = {'S': (384, 12, 6), 'B': (768, 12, 12), 'L': (1024, 24, 16), 'XL': (1152, 28, 16)}
FREQUENCY_DIM = 256  # the sinusoidal timestep embedding's width, before the MLP

XAVIER = nnx.initializers.xavier_uniform()
ZERO = nnx.initializers.zeros_init()
# The patch convolution is initialised as the linear map of a flattened patch.
PATCH_INIT = nnx.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                               out_axis=3)


def pos_embed_2d(dim: int, grid: int) -> np.ndarray:
  """MAE/DiT's fixed sin-cos embedding of a grid x grid patch layout: [grid^2, dim]."""
  def one_axis(positions, d):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  w, h = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
  return np.concatenate([one_axis(w, dim // 2), one_axis(h, dim // 2)], axis=1).astype(np.float32)


def _linear(cin: int, cout: int, rngs: nnx.Rngs, *, zero: bool = False, dtype=None):
  return nnx.Linear(cin, cout, kernel_init=ZERO if zero else XAVIER, bias_init=ZERO,
                    dtype=dtype, rngs=rngs)


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm without its own affine: adaLN provides the shift and scale."""
  return nnx.LayerNorm(dim, epsilon=1e-6, use_bias=False, use_scale=False, rngs=rngs)


def _modulate(x, shift, scale):
  return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class Attention(nnx.Module):
  def __init__(self, dim: int, heads: int, rngs: nnx.Rngs, dtype=None):
    self.heads = heads
    self.qkv = _linear(dim, 3 * dim, rngs, dtype=dtype)
    self.proj = _linear(dim, dim, rngs, dtype=dtype)

  def __call__(self, x):
    b, n, d = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3 * self.heads, d // self.heads), 3, axis=2)
    # Softmax in float32 whatever the compute dtype (XLA's reference implementation does).
    h = jax.nn.dot_product_attention(q, k, v)
    return self.proj(h.reshape(b, n, d))


class Block(nnx.Module):
  """x + gate * f(modulate(LN(x))), for f = attention then the MLP."""

  def __init__(self, dim: int, heads: int, mlp_ratio: float, rngs: nnx.Rngs, dtype=None):
    self.norm1 = _layer_norm(dim, rngs)
    self.attn = Attention(dim, heads, rngs, dtype)
    self.norm2 = _layer_norm(dim, rngs)
    hidden = int(dim * mlp_ratio)
    self.fc1 = _linear(dim, hidden, rngs, dtype=dtype)
    self.fc2 = _linear(hidden, dim, rngs, dtype=dtype)
    self.modulation = _linear(dim, 6 * dim, rngs, zero=True, dtype=dtype)  # adaLN-Zero

  def __call__(self, x, c):
    (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m) = jnp.split(
        self.modulation(nnx.silu(c)), 6, axis=-1)
    x = x + gate_a[:, None, :] * self.attn(_modulate(self.norm1(x), shift_a, scale_a))
    h = self.fc2(nnx.gelu(self.fc1(_modulate(self.norm2(x), shift_m, scale_m)),
                          approximate=True))
    return x + gate_m[:, None, :] * h


class DiT(nnx.Module):
  """Diffusion transformer: (x [B,H,W,C], t [B], labels [B] | None) -> [B,H,W,C].

  The published models also predict a variance (2C outputs); this one predicts what the
  formulation asks for, C channels, which changes the count by 4 p^2 (hidden + 1)."""

  def __init__(self, *, image_size: int, in_channels: int, patch: int, hidden: int, depth: int,
               heads: int, mlp_ratio: float = 4.0, num_classes: int = 0,
               remat: str = 'none', rngs: nnx.Rngs,
               dtype=None):
    if image_size % patch:
      raise ValueError(f'model.patch={patch} does not divide the input size {image_size}')
    if hidden % heads or (hidden // heads) % 2 or hidden % 4:
      raise ValueError(f'model.hidden={hidden} must split into model.heads={heads} heads of '
                       'even width, and be a multiple of 4 (the 2-D position embedding)')
    if remat not in REMAT_POLICIES:
      raise ValueError(f'remat={remat!r} is not one of {sorted(REMAT_POLICIES)}')
    self.patch, self.grid, self.remat = patch, image_size // patch, remat
    self.out_channels = in_channels
    self.hidden = hidden
    self.patch_embed = nnx.Conv(in_channels, hidden, kernel_size=(patch, patch),
                                strides=(patch, patch), padding='VALID', kernel_init=PATCH_INIT,
                                bias_init=ZERO, dtype=dtype, rngs=rngs)
    normal = nnx.initializers.normal(0.02)
    self.t_fc1 = nnx.Linear(FREQUENCY_DIM, hidden, kernel_init=normal, rngs=rngs)
    self.t_fc2 = nnx.Linear(hidden, hidden, kernel_init=normal, rngs=rngs)
    # Class-conditional models get one extra "null" label, for classifier-free guidance.
    self.label_emb = (nnx.Embed(num_classes + 1, hidden, embedding_init=normal, rngs=rngs)
                      if num_classes else None)
    self.blocks = nnx.List([Block(hidden, heads, mlp_ratio, rngs, dtype) for _ in range(depth)])
    self.norm_out = _layer_norm(hidden, rngs)
    self.modulation_out = _linear(hidden, 2 * hidden, rngs, zero=True, dtype=dtype)
    self.linear_out = _linear(hidden, patch * patch * self.out_channels, rngs, zero=True,
                              dtype=dtype)

  def condition(self, t: jax.Array, labels: jax.Array | None) -> jax.Array:
    """c: the timestep embedding, plus the class embedding for a conditional model."""
    c = self.t_fc2(nnx.silu(self.t_fc1(timestep_embedding(t, FREQUENCY_DIM))))
    if self.label_emb is not None and labels is not None:
      c = c + self.label_emb(labels)
    return c

  def embed(self, x: jax.Array) -> jax.Array:
    """Patch tokens with their position embedding: [B, grid^2, hidden]."""
    tokens = self.patch_embed(x)
    tokens = tokens.reshape(x.shape[0], -1, self.hidden)
    return tokens + jnp.asarray(pos_embed_2d(self.hidden, self.grid), tokens.dtype)

  def _block(self, block: Block, x, c):
    if self.remat == 'none':
      return block(x, c)
    return nnx.remat(lambda module, *a: module(*a), policy=REMAT_POLICIES[self.remat])(
        block, x, c)

  def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    del dropout_rng  # DiT trains without dropout
    c = self.condition(t, labels)
    h = self.embed(x)
    for block in self.blocks:
      h = self._block(block, h, c)
    shift, scale = jnp.split(self.modulation_out(nnx.silu(c)), 2, axis=-1)
    h = self.linear_out(_modulate(self.norm_out(h), shift, scale))
    b, p, g = x.shape[0], self.patch, self.grid
    h = h.reshape(b, g, g, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    return h.reshape(b, g * p, g * p, self.out_channels)
