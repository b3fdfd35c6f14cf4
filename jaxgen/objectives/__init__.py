"""Model families as objectives: small bundles of pure functions the trainer calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

State = dict[str, Any]
Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the training loop needs from a model family.

  init(rng) -> state: the whole train state (params, optimizer state, EMA, step).
  train_step(state, batch, rng) -> (state, metrics): one update; metrics are scalars.
  sample(params, rng, n) -> uint8 images [n, H, W, C].
  sample_params(state) -> the parameters `sample` uses (EMA weights where there are any).
  batch_shapes(global_batch_size) -> {name: (shape, dtype)} of a training batch, so a step
    can be compiled ahead of time without data.
  """

  init: Callable[[jax.Array], State]
  train_step: Callable[[State, Batch, jax.Array], tuple[State, dict[str, jax.Array]]]
  sample: Callable[..., jax.Array]
  sample_params: Callable[[State], Any]
  batch_shapes: Callable[[int], dict[str, tuple[tuple[int, ...], Any]]]
