"""Explicit name -> factory tables: what a config's string fields may name.

train.py looks objectives up here and never imports a model family itself.
"""

from __future__ import annotations

import ml_collections

from jaxgen import models, nonfinite
from jaxgen.models.unet import REMAT_POLICIES
from jaxgen.objectives import Objective, autoencoder, diffusion, likelihoods, vae
from jaxgen.samplers import SAMPLERS
from jaxgen.samplers.schedules import SCHEDULES

OBJECTIVES = {'diffusion': diffusion.make_objective, 'vae': vae.make_objective,
              'autoencoder_kl': autoencoder.make_objective}


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple[str, ...]]:
  """Allowed values of the config's named fields, for start-up validation."""
  known = {'objective': tuple(OBJECTIVES), 'model.name': tuple(models.MODELS),
           'model.compute_dtype': ('float32', 'bfloat16')}
  if 'nonfinite_policy' in config:  # absent from configs saved by older versions
    known['nonfinite_policy'] = nonfinite.POLICIES
  if config.model.name == 'unet':
    known['model.remat'] = tuple(REMAT_POLICIES)
  if config.objective == 'diffusion' and 'diffusion' in config:
    known.update({'diffusion.sampler': tuple(SAMPLERS), 'diffusion.schedule': tuple(SCHEDULES),
                  'diffusion.prediction': ('eps', 'v')})
  if config.objective == 'vae' and 'vae' in config:
    known.update({'vae.likelihood': likelihoods.LIKELIHOODS, 'model.latent': ('dense',)})
  if config.objective == 'autoencoder_kl' and 'autoencoder' in config:
    known.update({'autoencoder.reconstruction': ('l1', 'l2'), 'model.latent': ('spatial',),
                  'discriminator.name': ('patchgan',)})
  return known


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  return OBJECTIVES[config.objective](config)
