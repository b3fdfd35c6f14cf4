"""Non-finite losses, gradients and parameters: caught inside the jitted step.

Every family's train step is wrapped by `guard`: when any metric the step reports (its
losses, gradient norms) or any value of the new state is NaN or Inf, the state is left as
it was (only its step counter advances), and the step's `nonfinite` metric is 1.

The guard reads the step's metrics and the new state except what follows from finite
gradients (`DERIVED`: the parameters, the optimizer's moments and the EMAs of the
parameters, about six times the parameters' size). Every family reports the global norm
of each gradient it applies (tests/test_failures.py holds every family to it), a norm is
finite only when every squared gradient is, and an optax update of finite gradients is
finite: so a state that was finite stays finite after a step whose metrics are, by
induction from the initial or restored one. What the guard still reads is the rest of the
state (counters, augmentation probabilities, statistics a family keeps beside its
parameters). Reading the moments and EMAs cost ~4% of the DDPM CIFAR-10 step on a 2-core
CPU (a profiler trace, issue 16); reading the parameters, 910 of that step's 5,074 fusions
and ~15% of its XLA compile time. No host sync is added: the flags travel with the
metrics. The loop then applies `config.nonfinite_policy`:

  skip  such steps are skipped and counted (`nonfinite_steps` in the logs); training goes on.
  stop  at the next log line or checkpoint, training stops with NonFiniteError naming the
        first bad step and what was non-finite; no checkpoint is written after it.

Either way a checkpoint never holds non-finite parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.objectives import Partial

POLICIES = ('skip', 'stop')


class NonFiniteError(RuntimeError):
  """A step produced NaN/Inf under nonfinite_policy='stop'."""


def all_finite(tree: Any) -> jax.Array:
  """True when every floating-point value in `tree` is finite."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


# What the optimizers make of the gradients; see the module docstring.
DERIVED = ('params', 'opt_state', 'ema_params', 'phema')


def metrics_finite(metrics: dict[str, Any]) -> jax.Array:
  """True when every metric is finite; a `Partial` one only counts where it is present."""
  checks = [jnp.logical_or(v.present == 0, jnp.isfinite(v.value)) if isinstance(v, Partial)
            else jnp.all(jnp.isfinite(v)) for v in metrics.values()]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def step_finite(metrics: dict[str, Any], read: Any) -> jax.Array:
  """The guard's rule: every metric and every value of `read` (the new state but DERIVED)
  is finite."""
  return jnp.logical_and(metrics_finite(metrics), all_finite(read))


def update_if_finite(update: Callable[[Any], Any], derived: Any, metrics: dict[str, Any],
                     read: Any) -> Any:
  """`update(derived)` on a step that is finite by the guard's rule, else `derived` as it
  was: for a family whose metrics and state beside DERIVED (`read`) are all known before
  it updates the parameters, moments and EMAs (it declares `Objective.gates_updates`).

  The update runs as a branch of a `lax.cond`, so XLA writes it over the donated state in
  place. The guard's own `lax.cond` picks between the new state and the old one after
  both exist, and XLA then copied every updated parameter, moment and EMA back into the
  donated buffers, each step: 1,217 copies, 37 ms of a core after the last convolution of
  the DDPM CIFAR-10 step at batch 8 on one CPU device, whose median went 1,289 ms ->
  1,215 ms with the update inside the cond (2-core Intel Xeon, alternating, issue 16)."""
  return jax.lax.cond(step_finite(metrics, read), update, lambda old: old, derived)


def guard(train_step: Callable, *, gates_updates: bool = False) -> Callable:
  """`train_step` that keeps the old state (all but 'step') when anything is non-finite.
  `gates_updates`: the step already keeps its DERIVED state on such a step
  (`update_if_finite`), so only the rest is chosen here."""

  def step(state, batch, rng, *frozen):
    new_state, metrics = train_step(state, batch, rng, *frozen)
    read = {k: v for k, v in new_state.items() if k not in DERIVED}
    ok = step_finite(metrics, read)
    # lax.cond, not a jnp.where per leaf: XLA:CPU took ~20x longer to compile the latter.
    if gates_updates:
      kept = {**new_state, **jax.lax.cond(ok, lambda new, old: new, lambda new, old: old,
                                          read, {k: state[k] for k in read})}
    else:
      kept = jax.lax.cond(ok, lambda new, old: new, lambda new, old: old, new_state, state)
    kept['step'] = new_state['step']
    return kept, {**metrics, 'nonfinite': 1.0 - ok.astype(jnp.float32)}

  return step


def describe_first(records: list[tuple[int, dict[str, Any]]]) -> str | None:
  """For [(step, metrics)] (device values), the first bad step and what was not finite."""
  for step, metrics in jax.device_get(records):
    if metrics['nonfinite'] > 0:
      bad = sorted(k for k, v in metrics.items() if k != 'nonfinite' and not (
          np.isfinite(v.value) or not v.present if isinstance(v, Partial) else np.isfinite(v)))
      what = ', '.join(bad) if bad else 'values in the updated state'
      return f'step {step}: non-finite {what}'
  return None
