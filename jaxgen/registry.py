"""Explicit name -> factory tables: what a config's string fields may name.

train.py looks objectives up here and never imports a model family itself.
"""

from __future__ import annotations

import ml_collections

from jaxgen import models
from jaxgen.models.unet import REMAT_POLICIES
from jaxgen.objectives import Objective, diffusion
from jaxgen.samplers import SAMPLERS
from jaxgen.samplers.schedules import SCHEDULES

OBJECTIVES = {'diffusion': diffusion.make_objective}


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple[str, ...]]:
  """Allowed values of the config's named fields, for start-up validation."""
  known = {'objective': tuple(OBJECTIVES), 'model.name': tuple(models.MODELS),
           'model.compute_dtype': ('float32', 'bfloat16'),
           'model.remat': tuple(REMAT_POLICIES)}
  if config.objective == 'diffusion' and 'diffusion' in config:
    known.update({'diffusion.sampler': tuple(SAMPLERS), 'diffusion.schedule': tuple(SCHEDULES),
                  'diffusion.prediction': ('eps', 'v')})
  return known


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  model = models.build(config.model, config.data)
  return OBJECTIVES[config.objective](config, model)
