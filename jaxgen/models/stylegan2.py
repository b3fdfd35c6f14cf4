"""StyleGAN2 (Karras et al. 2020) in NNX and plain JAX: no custom CUDA kernels.

Follows stylegan2-ada-pytorch's `networks.py` (config F: skip generator, residual
discriminator), NHWC:

- Equalised learning rate everywhere: weights are stored as N(0, 1) (the mapping network's
  divided by its lr multiplier, 0.01) and scaled at run time by 1/sqrt(fan_in) (times the
  multiplier), so Adam's steps are the same size for every layer.
- Mapping: z (and a class embedding, each normalised to unit second moment) through
  `mapping_layers` fully connected LeakyReLU layers to w, broadcast to every layer's style.
  The tracked mean `w_avg` (truncation's centre) lives in the GAN train state.
- Synthesis: a learned 4x4 constant, then per resolution a 2x FIR upsampling conv and a
  conv, each a modulated convolution with demodulation (w' = s w, d = (sum w'^2 + 1e-8)^-1/2,
  computed as a scaling of the activations before and after a shared convolution: the
  same result as the grouped convolution, without per-example weights), per-pixel noise
  with a learned strength (zero at init), bias and LeakyReLU (gain sqrt(2)); and a 1x1
  unmodulated-demodulated ToRGB whose output is added to the FIR-upsampled image so far
  (the "skip" architecture).
- Discriminator: FromRGB at full resolution, then residual blocks (two 3x3 convs, the
  second with FIR [1, 3, 3, 1] downsampling; a 1x1 downsampling skip; both scaled by
  sqrt(1/2)) down to 4x4, then the epilogue: minibatch standard deviation, a conv, a dense
  layer, and the output: one logit, or with classes a `cmap_dim` vector projected on the
  label's mapped embedding, (x . cmap).sum / sqrt(cmap_dim).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.fir import upfirdn2d, upsample2d
from jaxgen.models import conv

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def conv2d(x: jax.Array, weight: jax.Array, *, stride: int = 1, padding: str = 'SAME'
           ) -> jax.Array:
  """'SAME' or 'VALID' convolution through `conv.conv2d` (fast gradients under lax.cond)."""
  k = weight.shape[0]
  pads = conv.same_padding(k) if padding == 'SAME' else ((0, 0), (0, 0))
  return conv.conv2d(x, weight.astype(x.dtype), stride, pads)


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array, *, demodulate: bool,
                     up: bool = False) -> jax.Array:
  """conv(x, w'), w'_kio = s_i w_kio, then with `demodulate` each output channel divided by
  (sum_{k,i} w'_kio^2 + 1e-8)^1/2; `up` upsamples 2x (FIR) before the conv. Computed as a
  scaling of the activations before and after one shared convolution: the same as
  StyleGAN2's grouped convolution of per-example weights, without forming them."""
  x = x * styles[:, None, None, :].astype(x.dtype)
  if up:
    x = upsample2d(x)
  x = conv2d(x, weight)
  if demodulate:
    demod = jax.lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)
    x = x * demod[:, None, None, :].astype(x.dtype)
  return x


class Dense(nnx.Module):
  """Equalised-learning-rate fully connected layer (FullyConnectedLayer)."""

  def __init__(self, cin: int, cout: int, rngs: nnx.Rngs, *, bias_init: float = 0.0,
               lr_multiplier: float = 1.0, activation: str = 'linear'):
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (cin, cout)) / lr_multiplier)
    self.bias = nnx.Param(jnp.full((cout,), bias_init, jnp.float32))
    self.weight_gain = lr_multiplier / math.sqrt(cin)
    self.lr_multiplier, self.activation = lr_multiplier, activation

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x @ (self.weight[...] * self.weight_gain).astype(x.dtype)
    x = x + (self.bias[...] * self.lr_multiplier).astype(x.dtype)
    return lrelu(x) if self.activation == 'lrelu' else x


class Conv(nnx.Module):
  """Equalised-learning-rate convolution with optional FIR downsampling (Conv2dLayer)."""

  def __init__(self, cin: int, cout: int, k: int, rngs: nnx.Rngs, *, bias: bool = True,
               activation: str = 'lrelu', down: bool = False):
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (k, k, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None
    self.weight_gain = 1.0 / math.sqrt(cin * k * k)
    self.k, self.activation, self.down = k, activation, down

  def __call__(self, x: jax.Array, gain: float = 1.0) -> jax.Array:
    weight = self.weight[...] * self.weight_gain
    if not self.down:
      x = conv2d(x, weight)
    elif self.k == 1:  # blur and subsample, then the 1x1 conv
      x = conv2d(upfirdn2d(x, down=2, pad=(1, 1)), weight)
    else:  # blur (padded so a valid strided conv halves the size), then the strided conv
      pad = (self.k - 1) // 2 + 1
      x = conv2d(upfirdn2d(x, pad=(pad, pad)), weight, stride=2, padding='VALID')
    if self.bias is not None:
      x = x + self.bias[...].astype(x.dtype)
    return (lrelu(x) if self.activation == 'lrelu' else x) * gain


class MappingNetwork(nnx.Module):
  """z (and a label) -> w. `z_dim=0` gives the discriminator's label mapping."""

  def __init__(self, *, z_dim: int, num_classes: int, w_dim: int, num_layers: int,
               lr_multiplier: float, rngs: nnx.Rngs):
    self.z_dim, self.num_classes = z_dim, num_classes
    # A dense layer on one-hot labels, i.e. an equalised embedding (ADA's `embed`).
    self.embed = Dense(num_classes, w_dim, rngs) if num_classes else None
    widths = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
    self.layers = nnx.List([Dense(widths[i], widths[i + 1], rngs, lr_multiplier=lr_multiplier,
                                  activation='lrelu') for i in range(num_layers)])

  def __call__(self, z: jax.Array | None, labels: jax.Array | None) -> jax.Array:
    parts = []
    if self.z_dim:
      parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
    if self.embed is not None:
      onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
      parts.append(normalize_2nd_moment(self.embed(onehot)))
    x = jnp.concatenate(parts, axis=-1)
    for layer in self.layers:
      x = layer(x)
    return x


class SynthesisLayer(nnx.Module):
  """Modulated 3x3 conv (optionally after 2x FIR upsampling), noise, bias, LeakyReLU."""

  def __init__(self, cin: int, cout: int, w_dim: int, rngs: nnx.Rngs, *, up: bool = False,
               demodulate: bool = True, k: int = 3, noise: bool = True):
    self.affine = Dense(w_dim, cin, rngs, bias_init=1.0)
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (k, k, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
    self.noise_strength = nnx.Param(jnp.zeros((), jnp.float32)) if noise else None
    self.up, self.demodulate = up, demodulate
    # ToRGB (no demodulation) scales its styles instead: 1 / sqrt(fan_in).
    self.style_gain = 1.0 if demodulate else 1.0 / math.sqrt(cin * k * k)

  def __call__(self, x: jax.Array, w: jax.Array, noise_rng: jax.Array | None) -> jax.Array:
    styles = self.affine(w.astype(jnp.float32)) * self.style_gain  # [B, cin]
    x = modulated_conv2d(x, self.weight[...], styles, demodulate=self.demodulate, up=self.up)
    if self.noise_strength is not None and noise_rng is not None:
      noise = jax.random.normal(noise_rng, (*x.shape[:3], 1), jnp.float32)
      x = x + (noise * self.noise_strength[...]).astype(x.dtype)
    x = x + self.bias[...].astype(x.dtype)
    return lrelu(x) if self.demodulate else x


class Generator(nnx.Module):
  """Mapping + skip synthesis network for `image_size` (a power of two >= 8) images."""

  def __init__(self, *, image_size: int, channels: int, z_dim: int, w_dim: int,
               mapping_layers: int, mapping_lr_multiplier: float, channel_base: int,
               channel_max: int, num_classes: int, rngs: nnx.Rngs, dtype=None):
    levels = int(round(math.log2(image_size)))
    if image_size < 8 or 2**levels != image_size:
      raise ValueError(f'StyleGAN2 needs a power-of-two image size >= 8, got {image_size}; '
                       'pad Fashion-MNIST to 32 (data.resize="pad", data.image_size=32)')
    self.z_dim, self.w_dim, self.dtype = z_dim, w_dim, dtype or jnp.float32
    self.mapping_network = MappingNetwork(z_dim=z_dim, num_classes=num_classes, w_dim=w_dim,
                                          num_layers=mapping_layers,
                                          lr_multiplier=mapping_lr_multiplier, rngs=rngs)
    widths = [min(channel_base // 2**level, channel_max) for level in range(2, levels + 1)]
    self.const = nnx.Param(jax.random.normal(rngs.params(), (4, 4, widths[0])))
    convs, torgbs = [SynthesisLayer(widths[0], widths[0], w_dim, rngs)], []
    torgbs.append(SynthesisLayer(widths[0], channels, w_dim, rngs, demodulate=False, k=1,
                                 noise=False))
    for cin, cout in zip(widths[:-1], widths[1:]):
      convs += [SynthesisLayer(cin, cout, w_dim, rngs, up=True),
                SynthesisLayer(cout, cout, w_dim, rngs)]
      torgbs.append(SynthesisLayer(cout, channels, w_dim, rngs, demodulate=False, k=1,
                                   noise=False))
    self.convs, self.torgbs = nnx.List(convs), nnx.List(torgbs)
    # Block b uses ws[2b-1], ws[2b] for its convs and ws[2b+1] for its ToRGB (block 0: 0, 1).
    self.num_ws = 2 * len(widths)

  def mapping(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    w = self.mapping_network(z, labels)
    return jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))

  def synthesis(self, ws: jax.Array, noise_rng: jax.Array | None = None) -> jax.Array:
    keys = (list(jax.random.split(noise_rng, len(self.convs))) if noise_rng is not None
            else [None] * len(self.convs))
    batch = ws.shape[0]
    x = jnp.broadcast_to(self.const[...].astype(self.dtype), (batch, *self.const[...].shape))
    x = self.convs[0](x, ws[:, 0], keys[0])
    image = self.torgbs[0](x, ws[:, 1], None).astype(jnp.float32)
    for block in range(1, len(self.torgbs)):
      x = self.convs[2 * block - 1](x, ws[:, 2 * block - 1], keys[2 * block - 1])
      x = self.convs[2 * block](x, ws[:, 2 * block], keys[2 * block])
      image = upsample2d(image) + self.torgbs[block](x, ws[:, 2 * block + 1], None).astype(
          jnp.float32)
    return image

  def __call__(self, z: jax.Array, labels: jax.Array | None = None,
               noise_rng: jax.Array | None = None) -> jax.Array:
    return self.synthesis(self.mapping(z, labels), noise_rng)


def minibatch_stddev(x: jax.Array, group_size: int, num_channels: int) -> jax.Array:
  """Appends the std over groups of examples (examples n, n + B/G, n + 2B/G, ... form a
  group, as ADA's reshape does), averaged over features and pixels, as `num_channels`
  feature maps."""
  batch, height, width, channels = x.shape
  group = min(group_size, batch)
  if batch % group:
    raise ValueError(f'minibatch stddev: batch {batch} is not divisible by the group size '
                     f'{group}')
  y = x.astype(jnp.float32).reshape(group, batch // group, height, width, num_channels,
                                    channels // num_channels)
  y = jnp.sqrt(jnp.mean(jnp.square(y - jnp.mean(y, axis=0)), axis=0) + 1e-8)
  y = jnp.mean(y, axis=(1, 2, 4))  # [B / G, num_channels]
  y = jnp.tile(y[:, None, None, :], (group, height, width, 1))
  return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class DiscriminatorBlock(nnx.Module):
  """Two 3x3 convs (the second downsampling); `residual` adds a 1x1 downsampling skip, each
  path x sqrt(1/2) (StyleGAN2's 'resnet'; without it, 'orig' as ADA's cifar config)."""

  def __init__(self, cin: int, cout: int, rngs: nnx.Rngs, residual: bool = True):
    self.conv0 = Conv(cin, cin, 3, rngs)
    self.conv1 = Conv(cin, cout, 3, rngs, down=True)
    self.skip = (Conv(cin, cout, 1, rngs, bias=False, activation='linear', down=True)
                 if residual else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.skip is None:
      return self.conv1(self.conv0(x))
    half = math.sqrt(0.5)
    return self.skip(x, gain=half) + self.conv1(self.conv0(x), gain=half)


class Discriminator(nnx.Module):
  def __init__(self, *, image_size: int, channels: int, channel_base: int, channel_max: int,
               num_classes: int, cmap_dim: int, mbstd_group_size: int, mbstd_channels: int,
               mapping_layers: int, rngs: nnx.Rngs, residual: bool = True, dtype=None):
    levels = int(round(math.log2(image_size)))
    if image_size < 8 or 2**levels != image_size:
      raise ValueError(f'StyleGAN2 needs a power-of-two image size >= 8, got {image_size}')
    self.dtype = dtype or jnp.float32
    widths = [min(channel_base // 2**level, channel_max) for level in range(levels, 1, -1)]
    self.fromrgb = Conv(channels, widths[0], 1, rngs)
    self.blocks = nnx.List([DiscriminatorBlock(cin, cout, rngs, residual)
                            for cin, cout in zip(widths[:-1], widths[1:])])
    last = widths[-1]
    self.mbstd_group_size, self.mbstd_channels = mbstd_group_size, mbstd_channels
    self.conv = Conv(last + mbstd_channels, last, 3, rngs)
    self.fc = Dense(last * 16, last, rngs, activation='lrelu')
    self.cmap_dim = (cmap_dim or last) if num_classes else 0
    self.out = Dense(last, self.cmap_dim or 1, rngs)
    self.mapping_network = (MappingNetwork(z_dim=0, num_classes=num_classes, w_dim=self.cmap_dim,
                                           num_layers=mapping_layers, lr_multiplier=0.01,
                                           rngs=rngs) if num_classes else None)

  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    x = self.fromrgb(x.astype(self.dtype))
    for block in self.blocks:
      x = block(x)
    if self.mbstd_channels:
      x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_channels)
    x = self.conv(x)
    x = self.out(self.fc(x.reshape(x.shape[0], -1))).astype(jnp.float32)
    if self.mapping_network is None:
      return x[:, 0]
    cmap = self.mapping_network(None, labels)
    return jnp.sum(x * cmap, axis=-1) / math.sqrt(self.cmap_dim)
