"""NNX image models, built from `config.model` (+ image shape from `config.data`)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxgen.models.functional import FunctionalModel
from jaxgen.models.unet import UNet


def _unet(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict):
  def factory(rngs: nnx.Rngs) -> UNet:
    return UNet(image_size=data_cfg.image_size, in_channels=data_cfg.channels, ch=model_cfg.ch,
                ch_mult=tuple(model_cfg.ch_mult), num_res_blocks=model_cfg.num_res_blocks,
                attn_resolutions=tuple(model_cfg.attn_resolutions), dropout=model_cfg.dropout,
                num_classes=model_cfg.num_classes, remat=model_cfg.remat,
                dtype=jnp.dtype(model_cfg.compute_dtype), rngs=rngs)
  return factory


MODELS = {'unet': _unet}


def build(model_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict
          ) -> FunctionalModel:
  return FunctionalModel(MODELS[model_cfg.name](model_cfg, data_cfg))
