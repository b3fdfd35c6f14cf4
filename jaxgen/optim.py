"""optax optimizers and learning-rate schedules built from a config section."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay, a constant rate, or 'linear':
  constant until `decay_start` (a fraction of total_steps), then a straight line to
  end_lr_ratio x lr at the last step (pix2pix and CycleGAN's n_epochs + n_epochs_decay)."""
  warmup = min(cfg.warmup_steps, total_steps)
  if cfg.decay == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_ratio)
  if cfg.decay == 'constant':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
         optax.constant_schedule(cfg.learning_rate)], [warmup])
  if cfg.decay == 'linear':
    start = max(int(total_steps * cfg.decay_start), warmup)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
         optax.constant_schedule(cfg.learning_rate),
         optax.linear_schedule(cfg.learning_rate, cfg.learning_rate * cfg.end_lr_ratio,
                               max(total_steps - start, 1))], [warmup, start])
  raise ValueError(f'optimizer.decay: unknown schedule {cfg.decay!r}')


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax transformation whose learning rate follows the train state's step.

  optax's own schedules count the updates they have applied; a step the non-finite guard
  skips is not applied, so that count falls behind `state['step']`, which drives every
  other schedule (EMA and KL warm-up, a discriminator's start). Here the transformation
  runs at learning rate 1 and `update` scales its output by `schedule(step)`: one counter,
  `state['step']`, for everything. Adam's bias correction still counts applied updates,
  which is what its moment estimates have seen.
  """

  tx: optax.GradientTransformation
  schedule: optax.Schedule

  def init(self, params: Any) -> Any:
    return self.tx.init(params)

  def learning_rate(self, step: jax.Array) -> jax.Array:
    """The learning rate of the update at `step`."""
    return jnp.asarray(self.schedule(step), jnp.float32)

  def update(self, grads: Any, opt_state: Any, params: Any, step: jax.Array,
             grad_norm: jax.Array | None = None) -> tuple[Any, Any, jax.Array]:
    """(new params, new optimizer state, the learning rate used) for the update at `step`.
    `grad_norm`: `optax.tree.norm(grads)` when the step has it already (a metric), so that
    clipping does not read every gradient again (`clip_by_global_norm`)."""
    extra = {} if grad_norm is None else {'grad_norm': grad_norm}
    updates, opt_state = self.tx.update(grads, opt_state, params, **extra)
    learning_rate = self.learning_rate(step)
    updates = jax.tree_util.tree_map(lambda u: (learning_rate * u).astype(u.dtype), updates)
    return optax.apply_updates(params, updates), opt_state, learning_rate


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """`optax.clip_by_global_norm` (the same clipping, to float rounding, and the same empty
  state, so checkpoints are interchangeable) that takes the gradients' global norm from the
  step when it passes one (`grad_norm=`, the norm it reports as a metric) instead of
  computing it again.

  Inside the non-finite guard's `lax.cond` (`nonfinite.update_if_finite`) XLA cannot share
  optax's norm with the metric's: reading the 35.7M gradients once more took ~20 ms of the
  DDPM CIFAR-10 update (Adam, EMA and clipping: 74-77 ms -> 57 ms, where PyTorch's fused
  AdamW with its foreach clip and EMA took 58 ms; the whole step at batch 8, alternating,
  1,282 -> 1,259 ms; one device of a 2-core Intel Xeon)."""

  def update_fn(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    norm = optax.tree.norm(updates) if grad_norm is None else grad_norm
    # One scalar factor, not optax's per-value select between t and t / norm * max_norm:
    # XLA then fuses the scaling into Adam's moment updates instead of writing the clipped
    # gradients out and reading both copies back (the update of the DDPM CIFAR-10 UNet's
    # parameters, moments and EMA on one device of the 2-core Intel Xeon, on a slower day
    # than the figures above: 72.9 -> 63.5 ms, median of 20 alternating; four passes over
    # the 35.7M gradients fewer).
    factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    return jax.tree.map(lambda t: t * factor.astype(t.dtype), updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def build_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> Optimizer:
  """AdamW with global-norm gradient clipping (clip <= 0 disables it), its learning rate
  scheduled by the train state's step."""
  parts = [clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  parts.append(optax.adamw(1.0, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  return Optimizer(optax.chain(*parts), learning_rate_schedule(cfg, total_steps))


def lazy_ratio(interval: int) -> float:
  """StyleGAN2's c = k / (k + 1) for a regulariser applied as its own update every k steps
  (1 when there is none): k main updates and one regulariser update per k steps."""
  return interval / (interval + 1) if interval > 0 else 1.0


def lazy_regularised(cfg: ml_collections.ConfigDict, interval: int) -> ml_collections.ConfigDict:
  """`cfg` with the learning rate x c and Adam's betas to the power c, c = lazy_ratio: the
  optimizer then moves as far per k steps as one without the extra regulariser updates
  (Karras et al. 2020, appendix B)."""
  c = lazy_ratio(interval)
  scaled = ml_collections.ConfigDict(cfg.to_dict())
  scaled.learning_rate, scaled.b1, scaled.b2 = cfg.learning_rate * c, cfg.b1**c, cfg.b2**c
  return scaled


def _micro_batches(x: jax.Array, num_micro: int) -> jax.Array:
  """[B, ...] -> [num_micro, B / num_micro, ...], micro-batch i = examples i, i+n, i+2n, ...

  Strided, not contiguous: the batch is sharded over devices along its first axis, so
  every micro-batch keeps an equal slice on every device.
  """
  return jnp.swapaxes(x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]), 0, 1)


def accumulate_gradients(loss_fn: Callable[..., Any], params: Any, batch: Any,
                         example_keys: jax.Array, num_micro: int, *, has_aux: bool = False
                         ) -> tuple[Any, Any]:
  """Mean loss and gradients of `loss_fn(params, batch, example_keys)` over the batch,
  computed in `num_micro` sequential micro-batches (`lax.scan`) to bound activation memory.

  With a loss that is a mean over examples and per-example randomness, the result equals
  one pass over the whole batch (up to float summation order). With `has_aux`, loss_fn
  returns (loss, scalars) and the result is ((loss, scalars), grads), scalars averaged too.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
  if num_micro == 1:
    return grad_fn(params, batch, example_keys)
  micro = jax.tree_util.tree_map(lambda x: _micro_batches(x, num_micro), (batch, example_keys))

  def body(carry, micro_batch):
    value, grads = grad_fn(params, *micro_batch)
    return jax.tree_util.tree_map(jnp.add, carry, (value, grads)), None

  abstract = jax.eval_shape(grad_fn, params, *jax.tree_util.tree_map(lambda x: x[0], micro))
  zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)
  total, _ = jax.lax.scan(body, zeros, micro)
  return jax.tree_util.tree_map(lambda x: x / num_micro, total)
