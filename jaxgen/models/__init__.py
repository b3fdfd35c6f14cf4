"""NNX image models, built from `config.model` and the input shape the objective passes.

The shape is explicit: a denoiser of autoencoder latents or a conditional discriminator
(2C channels) sees inputs other than `config.data`'s images.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxgen.models import cyclegan, dcgan, dit, pix2pix, stylegan2
from jaxgen.models.functional import FunctionalModel
from jaxgen.models.patchgan import PatchDiscriminator
from jaxgen.models.unet import UNet
from jaxgen.models.vae import VAE

Shape = tuple[int, int, int]  # (H, W, C) of one input


def _unet(cfg: ml_collections.ConfigDict, input_shape: Shape):
  def factory(rngs: nnx.Rngs) -> UNet:
    return UNet(image_size=input_shape[0], in_channels=input_shape[2], ch=cfg.ch,
                ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
                attn_resolutions=tuple(cfg.attn_resolutions), dropout=cfg.dropout,
                num_classes=cfg.num_classes, remat=cfg.remat,
                dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
  return factory


def _dit(cfg: ml_collections.ConfigDict, input_shape: Shape):
  """`model.size` 'S' | 'B' | 'L' | 'XL' (the published widths and depths), or 'custom' with
  `model.hidden`, `.depth`, `.heads`; `model.patch` 2, 4 or 8."""
  if cfg.size == 'custom':
    hidden, depth, heads = cfg.hidden, cfg.depth, cfg.heads
  else:
    hidden, depth, heads = dit.SIZES[cfg.size]

  def factory(rngs: nnx.Rngs) -> dit.DiT:
    return dit.DiT(image_size=input_shape[0], in_channels=input_shape[2], patch=cfg.patch,
                   hidden=hidden, depth=depth, heads=heads, mlp_ratio=cfg.mlp_ratio,
                   num_classes=cfg.num_classes, remat=cfg.remat,
                   dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
  return factory


def _vae(cfg: ml_collections.ConfigDict, input_shape: Shape, *, out_channels: int):
  def factory(rngs: nnx.Rngs) -> VAE:
    return VAE(image_size=input_shape[0], in_channels=input_shape[2],
               out_channels=out_channels, ch=cfg.ch, ch_mult=tuple(cfg.ch_mult),
               num_res_blocks=cfg.num_res_blocks, latent=cfg.latent,
               latent_dim=cfg.latent_dim, dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
  return factory


def _patchgan(cfg: ml_collections.ConfigDict, input_shape: Shape):
  def factory(rngs: nnx.Rngs) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels=input_shape[2], ch=cfg.ch, num_layers=cfg.num_layers,
                              norm=cfg.get('norm', 'group'), dtype=jnp.dtype(cfg.compute_dtype),
                              rngs=rngs)
  return factory


def _pix2pix_unet(cfg: ml_collections.ConfigDict, input_shape: Shape):
  def factory(rngs: nnx.Rngs) -> pix2pix.UNetGenerator:
    return pix2pix.UNetGenerator(
        image_size=input_shape[0], in_channels=input_shape[2], out_channels=input_shape[2],
        ch=cfg.ch, num_downs=cfg.num_downs, norm=cfg.norm, dropout_blocks=cfg.dropout_blocks,
        dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
  return factory


def _dcgan(cfg: ml_collections.ConfigDict, input_shape: Shape, *, role: str,
           num_classes: int = 0):
  """`role`: 'generator' (config.model) or 'discriminator' (config.discriminator)."""
  size, channels, dtype = input_shape[0], input_shape[2], jnp.dtype(cfg.compute_dtype)

  def factory(rngs: nnx.Rngs):
    if role == 'generator':
      return dcgan.Generator(image_size=size, channels=channels, z_dim=cfg.z_dim, ch=cfg.ch,
                             norm=cfg.norm, num_classes=cfg.num_classes, dtype=dtype, rngs=rngs)
    return dcgan.Discriminator(image_size=size, channels=channels, ch=cfg.ch, norm=cfg.norm,
                               num_classes=num_classes, cmap_dim=cfg.cmap_dim,
                               mbstd_group_size=cfg.get('mbstd_group_size', 0), dtype=dtype,
                               rngs=rngs)
  return factory


def _stylegan2(cfg: ml_collections.ConfigDict, input_shape: Shape, *, role: str,
               num_classes: int = 0):
  """`role`: 'generator' (config.model) or 'discriminator' (config.discriminator)."""
  size, channels, dtype = input_shape[0], input_shape[2], jnp.dtype(cfg.compute_dtype)
  widths = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max)

  def factory(rngs: nnx.Rngs):
    if role == 'generator':
      return stylegan2.Generator(
          image_size=size, channels=channels, z_dim=cfg.z_dim, w_dim=cfg.w_dim,
          mapping_layers=cfg.mapping_layers, mapping_lr_multiplier=cfg.mapping_lr_multiplier,
          num_classes=cfg.num_classes, dtype=dtype, rngs=rngs, **widths)
    return stylegan2.Discriminator(
        image_size=size, channels=channels, num_classes=num_classes, cmap_dim=cfg.cmap_dim,
        mbstd_group_size=cfg.mbstd_group_size, mbstd_channels=cfg.mbstd_channels,
        mapping_layers=cfg.mapping_layers, residual=cfg.architecture == 'resnet', dtype=dtype,
        rngs=rngs, **widths)
  return factory


def _cyclegan_resnet(cfg: ml_collections.ConfigDict, input_shape: Shape):
  def factory(rngs: nnx.Rngs) -> cyclegan.ResnetGenerator:
    return cyclegan.ResnetGenerator(
        image_size=input_shape[0], in_channels=input_shape[2], out_channels=input_shape[2],
        ch=cfg.ch, num_blocks=cfg.num_blocks, norm=cfg.norm,
        dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
  return factory


MODELS = {'unet': _unet, 'dit': _dit, 'vae': _vae, 'patchgan': _patchgan, 'dcgan': _dcgan,
          'stylegan2': _stylegan2, 'pix2pix_unet': _pix2pix_unet,
          'cyclegan_resnet': _cyclegan_resnet}


def build(model_cfg: ml_collections.ConfigDict, input_shape: Shape,
          **family_args) -> FunctionalModel:
  """`input_shape` is (H, W, C) of one input; `family_args` are what the objective decides,
  e.g. a VAE decoder's `out_channels`."""
  if len(input_shape) != 3:
    raise ValueError(f'input_shape must be (height, width, channels), got {input_shape}')
  return FunctionalModel(MODELS[model_cfg.name](model_cfg, tuple(input_shape), **family_args))
