"""Explicit name -> factory tables: what a config's string fields may name.

The trainer, sampler and eval program look families up here and never import one
themselves. A family is a module with `make_objective(config) -> Objective` and
`known_values(config) -> {field: allowed values}` for the config fields it reads.
"""

from __future__ import annotations

import ml_collections

from jaxgen import models, nonfinite
from jaxgen.models.unet import REMAT_POLICIES
from jaxgen.objectives import Objective, autoencoder, cyclegan, diffusion, gan, pix2pix, vae

FAMILIES = {'diffusion': diffusion, 'vae': vae, 'autoencoder_kl': autoencoder, 'gan': gan,
            'pix2pix': pix2pix, 'cyclegan': cyclegan}


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config's named fields, for start-up validation: the shared
  ones, then those the config's family declares."""
  known = {'objective': tuple(FAMILIES), 'model.name': tuple(models.MODELS),
           'model.compute_dtype': ('float32', 'bfloat16')}
  if 'nonfinite_policy' in config:  # absent from configs saved by older versions
    known['nonfinite_policy'] = nonfinite.POLICIES
  if 'remat' in config.model:
    known['model.remat'] = tuple(REMAT_POLICIES)
  if config.objective in FAMILIES:
    known.update(FAMILIES[config.objective].known_values(config))
  return known


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  return FAMILIES[config.objective].make_objective(config)
