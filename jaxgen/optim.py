"""optax optimizers and learning-rate schedules built from a config section."""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay or a constant rate."""
  warmup = min(cfg.warmup_steps, total_steps)
  if cfg.decay == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_ratio)
  if cfg.decay == 'constant':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
         optax.constant_schedule(cfg.learning_rate)], [warmup])
  raise ValueError(f'optimizer.decay: unknown schedule {cfg.decay!r}')


def build_optimizer(cfg: ml_collections.ConfigDict, total_steps: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with global-norm gradient clipping (clip <= 0 disables it)."""
  schedule = learning_rate_schedule(cfg, total_steps)
  parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  return optax.chain(*parts), schedule
