"""Train-state pytree helpers: the state is a plain dict of arrays."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

State = dict[str, Any]


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
  """The EMA decay at `step`; with warm-up, min(decay, (1 + step) / (10 + step))."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_decay_images(step: jax.Array, batch_size: int, half_life_kimg: float,
                     rampup: float) -> jax.Array:
  """StyleGAN's EMA decay: the average's half-life is `half_life_kimg` thousand images,
  and with `rampup` > 0 at most rampup x the images seen so far (step x batch_size), so
  early averages do not drag in the random initialisation. Independent of the batch size:
  decay = 0.5 ** (batch_size / half-life in images)."""
  half_life = jnp.asarray(half_life_kimg * 1000.0, jnp.float32)
  if rampup > 0:
    half_life = jnp.minimum(half_life, step.astype(jnp.float32) * batch_size * rampup)
  return jnp.power(0.5, batch_size / jnp.maximum(half_life, 1e-8))


def ema_update(ema_params: Any, params: Any, decay: jax.Array) -> Any:
  return jax.tree_util.tree_map(lambda e, p: e + (1.0 - decay) * (p - e), ema_params, params)


def count_params(tree: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
