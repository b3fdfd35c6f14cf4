"""Power-function EMA and its post-hoc reconstruction (EDM2: Karras et al. 2024, "Analyzing
and Improving the Training Dynamics of Diffusion Models", section 3 and appendix C).

A power-function EMA at step t averages the parameters of steps tau <= t with weights
proportional to tau^gamma. Its width relative to the run so far, sigma_rel (0.05 to 0.10 in
EDM2), fixes gamma: sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)). It is tracked
step by step with decay beta_t = (1 - 1/t)^(gamma + 1).

A run that tracks two of them (config.ema.power_sigma_rels) and keeps snapshots of both at
intervals (config.ema.snapshot_every, in <workdir>/snapshots) can be averaged after training
at any other sigma_rel: the snapshots' weight profiles are combined linearly to match the
wanted profile in least squares (the inner products of power functions in closed form), so
the EMA length is chosen by measuring, not guessed before training.

  jaxgen-eval posthoc_ema --workdir=runs/edm --sigma_rel=0.06,0.08

writes, per sigma_rel, a run directory `<workdir>/posthoc_ema/sigma_rel_0.060` whose latest
checkpoint is the run's at that step with the reconstruction as its EMA: jaxgen-eval and
jaxgen-sample take it as --workdir.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import checkpoint, paths
from jaxgen import state as state_lib

OUTPUT_DIR = 'posthoc_ema'


def exp_to_std(gamma):
  """sigma_rel of the power function tau^gamma (EDM2 eq. 123)."""
  gamma = np.float64(gamma)
  return np.sqrt((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3))


def std_to_exp(sigma_rel):
  """gamma of a relative width: the real root of gamma^3 + 7 gamma^2 + (16 - s^-2) gamma +
  (12 - s^-2) = 0 (EDM2 eq. 126)."""
  sigma_rel = np.asarray(sigma_rel, np.float64)
  inv = sigma_rel.reshape(-1) ** -2
  roots = [np.roots([1, 7, 16 - v, 12 - v]).real.max() for v in inv]
  return np.asarray(roots).reshape(sigma_rel.shape)


def power_beta(step: jax.Array, gamma: float) -> jax.Array:
  """The decay of the update after step `step` (0-based): (1 - 1/t)^(gamma + 1), t = step + 1;
  0 at the first update, which copies the parameters."""
  t = step.astype(jnp.float32) + 1.0
  return jnp.power(1.0 - 1.0 / t, gamma + 1.0)


def correlation(a_t, a_std, b_t, b_std):
  """Inner products of the normalised weight profiles of power EMAs (a_std at step a_t) and
  (b_std at step b_t) over [0, max(a_t, b_t)] (EDM2 eq. 151)."""
  a_exp, b_exp = std_to_exp(a_std), std_to_exp(b_std)
  ratio = np.asarray(a_t, np.float64) / b_t
  exponent = np.where(a_t < b_t, b_exp, -a_exp)
  return ((a_exp + 1) * (b_exp + 1) * ratio ** exponent
          / ((a_exp + b_exp + 1) * np.maximum(a_t, b_t)))


def coefficients(in_steps, in_stds, out_step: int, out_std: float) -> np.ndarray:
  """Weights of the snapshots (power EMAs in_stds at in_steps) whose combination best
  matches the power EMA out_std at out_step in least squares, normalised to sum to 1."""
  col = lambda x: np.asarray(x, np.float64).reshape(-1, 1)
  row = lambda x: np.asarray(x, np.float64).reshape(1, -1)
  gram = correlation(col(in_steps), col(in_stds), row(in_steps), row(in_stds))
  target = correlation(col(in_steps), col(in_stds), row([out_step]), row([out_std]))
  # Least squares rather than a solve: the first snapshot (step 1, which the trainer also
  # keeps) is the same profile at every width, so the Gram matrix can be singular.
  x = np.linalg.lstsq(gram, target, rcond=None)[0][:, 0]
  return x / x.sum()


def _snapshots(workdir: str) -> checkpoint.Checkpointer:
  directory = paths.workdir_path(workdir) / checkpoint.SNAPSHOT_DIR
  if not directory.is_dir():
    raise FileNotFoundError(
        f'no power-EMA snapshots in {directory}: train with config.ema.power_sigma_rels '
        '(two widths, e.g. (0.05, 0.1)) and config.ema.snapshot_every > 0')
  return checkpoint.Checkpointer(workdir, use_async=False, read_only=True,
                               subdir=checkpoint.SNAPSHOT_DIR)


def reconstruct(workdir: str, sigma_rels: list[float], step: int | None = None,
                output: str | None = None) -> list[str]:
  """Writes, per sigma_rel, a run directory holding the run's checkpoint at `step` (default:
  the latest) with its EMA parameters replaced by the post-hoc power EMA of that width,
  built from the snapshots up to `step`. Returns the directories."""
  from jaxgen import inference  # (it builds objectives, which use this module)

  s, state, step, config = inference.restore_for_sampling(workdir, step)
  tracked = tuple(config.ema.power_sigma_rels)
  snaps = _snapshots(workdir)
  steps = [t for t in snaps.all_steps() if 0 < t <= step]
  if step not in steps:
    raise ValueError(f'no power-EMA snapshot at step {step} in {snaps.directory} (it has '
                     f'{steps}): reconstruct at a step that has one, with --step')
  for sigma_rel in sigma_rels:
    if not 0 < sigma_rel < 0.28:
      raise ValueError(f'sigma_rel={sigma_rel}: a power-function EMA has 0 < sigma_rel < 0.28')
  in_steps = np.repeat(steps, len(tracked))
  in_stds = np.tile(tracked, len(steps))
  weights = np.stack([coefficients(in_steps, in_stds, step, std) for std in sigma_rels])
  target = {'phema': s.restore_target['phema']}
  sums = [None] * len(sigma_rels)
  for i, t in enumerate(steps):  # one snapshot in memory at a time
    profiles = snaps.restore(t, target)['phema']
    for j, profile in enumerate(profiles):
      for k in range(len(sigma_rels)):
        w = weights[k, i * len(tracked) + j]
        add = jax.tree_util.tree_map(lambda x, w=w: w * x, profile)
        sums[k] = add if sums[k] is None else jax.tree_util.tree_map(jnp.add, sums[k], add)
  written = []
  for sigma_rel, params, w in zip(sigma_rels, sums, weights):
    out = os.path.join(output or os.path.join(workdir, OUTPUT_DIR), f'sigma_rel_{sigma_rel:.3f}')
    if (paths.workdir_path(out) / checkpoint.CHECKPOINT_DIR).exists():
      raise FileExistsError(f'{out} already holds a reconstruction; remove it or choose '
                            'another --output')
    ckpt = checkpoint.Checkpointer(out, use_async=False)
    ckpt.save(step, {**state, 'ema_params': params}, None, config, force=True)
    ckpt.close()
    record = {'source': os.path.abspath(workdir), 'step': step, 'sigma_rel': sigma_rel,
              'snapshots': [{'step': int(a), 'sigma_rel': float(b), 'weight': float(c)}
                            for a, b, c in zip(in_steps, in_stds, w)]}
    with (paths.workdir_path(out) / 'posthoc_ema.json').open('w') as f:
      json.dump(record, f, indent=1)
    written.append(out)
  snaps.close()
  return written


def track(phema: list[Any], params: Any, step: jax.Array, gammas: tuple[float, ...]) -> list:
  """One step of each tracked power EMA (inside the jitted train step)."""
  return [state_lib.ema_update(e, params, power_beta(step, g)) for e, g in zip(phema, gammas)]
