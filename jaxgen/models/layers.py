"""Layers and initialisers shared by the NNX models (UNet, VAE, discriminators)."""

from __future__ import annotations

import math

from flax import nnx

from jaxgen.models import conv as conv_lib

ZERO_INIT = nnx.initializers.zeros_init()
# DDPM / score_sde's default_init: variance scaling 1.0, fan_avg, uniform.
DEFAULT_INIT = nnx.initializers.variance_scaling(1.0, 'fan_avg', 'uniform')


def conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, *, stride: int = 1, zero: bool = False,
         dtype=None) -> nnx.Conv:
  """A k x k 'SAME' convolution; `zero` initialises the kernel to zeros (residual branches
  and output heads that should start as the identity / zero)."""
  return nnx.Conv(cin, cout, kernel_size=(k, k), strides=(stride, stride), padding='SAME',
                  kernel_init=ZERO_INIT if zero else DEFAULT_INIT, dtype=dtype,
                  conv_general_dilated=conv_lib.conv_general_dilated, rngs=rngs)


def num_groups(channels: int, max_groups: int = 32) -> int:
  """GroupNorm groups: 32 where the width allows it, else the largest divisor of both."""
  return math.gcd(channels, max_groups)


def group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  """GroupNorm (batch-free, so models hold no running statistics)."""
  return nnx.GroupNorm(channels, num_groups=num_groups(channels), rngs=rngs)


NORMS = ('instance', 'group', 'layer', 'none')


def norm_layer(kind: str, channels: int, rngs: nnx.Rngs):
  """Batch-free norms (no running statistics, no mixing of a batch's examples): 'instance'
  (one group per channel, with an affine scale and shift: pix2pix/CycleGAN's InstanceNorm),
  'group' (32 groups where the width allows), 'layer' (one group) or 'none'."""
  if kind == 'none':
    return lambda x: x
  groups = {'instance': channels, 'group': num_groups(channels), 'layer': 1}[kind]
  return nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
