"""NNX image models, built from `config.model` (+ image shape from `config.data`)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxgen.models.functional import FunctionalModel
from jaxgen.models.patchgan import PatchDiscriminator
from jaxgen.models.unet import UNet
from jaxgen.models.vae import VAE


def _unet(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict):
  def factory(rngs: nnx.Rngs) -> UNet:
    return UNet(image_size=data_cfg.image_size, in_channels=data_cfg.channels, ch=model_cfg.ch,
                ch_mult=tuple(model_cfg.ch_mult), num_res_blocks=model_cfg.num_res_blocks,
                attn_resolutions=tuple(model_cfg.attn_resolutions), dropout=model_cfg.dropout,
                num_classes=model_cfg.num_classes, remat=model_cfg.remat,
                dtype=jnp.dtype(model_cfg.compute_dtype), rngs=rngs)
  return factory


def _vae(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict, *,
         out_channels: int):
  def factory(rngs: nnx.Rngs) -> VAE:
    return VAE(image_size=data_cfg.image_size, in_channels=data_cfg.channels,
               out_channels=out_channels, ch=model_cfg.ch, ch_mult=tuple(model_cfg.ch_mult),
               num_res_blocks=model_cfg.num_res_blocks, latent=model_cfg.latent,
               latent_dim=model_cfg.latent_dim, dtype=jnp.dtype(model_cfg.compute_dtype),
               rngs=rngs)
  return factory


def _patchgan(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict):
  def factory(rngs: nnx.Rngs) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels=data_cfg.channels, ch=model_cfg.ch,
                              num_layers=model_cfg.num_layers,
                              dtype=jnp.dtype(model_cfg.compute_dtype), rngs=rngs)
  return factory


MODELS = {'unet': _unet, 'vae': _vae, 'patchgan': _patchgan}


def build(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict,
          **family_args) -> FunctionalModel:
  """`family_args` are what the objective decides, e.g. a VAE decoder's `out_channels`."""
  return FunctionalModel(MODELS[model_cfg.name](model_cfg, data_cfg, **family_args))
