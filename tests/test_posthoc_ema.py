"""EDM2's power-function EMA: its tracking, its post-hoc reconstruction in closed form and
through a run's snapshots."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_trees_equal, run_cli, tiny_run_resumes_exactly
from jaxgen import posthoc_ema


def test_sigma_rel_and_the_exponent_in_closed_form():
  # EDM2's quoted pairs: sigma_rel 0.05 is gamma ~ 16.97, 0.10 is gamma ~ 6.94.
  np.testing.assert_allclose(posthoc_ema.std_to_exp([0.05, 0.10]), [16.97, 6.94], atol=0.01)
  gammas = np.array([0.5, 3.0, 20.0])
  np.testing.assert_allclose(posthoc_ema.std_to_exp(posthoc_ema.exp_to_std(gammas)), gammas)


def _profile(sigma_rel: float, steps: int) -> np.ndarray:
  """The weight each step's parameters get in the power EMA tracked by the train step after
  `steps` updates: track() applied to unit impulses."""
  gamma = float(posthoc_ema.std_to_exp(sigma_rel))
  betas = np.asarray([posthoc_ema.power_beta(jnp.asarray(t), gamma) for t in range(steps)],
                     np.float64)
  keep_after = np.concatenate([np.cumprod(betas[::-1])[::-1][1:], [1.0]])
  return (1 - betas) * keep_after


@pytest.mark.parametrize('sigma_rel', [0.05, 0.10])
def test_the_tracked_ema_has_the_power_profile_of_its_width(sigma_rel):
  """After t steps the weights sum to 1, grow like tau^gamma, and their std relative to t
  is sigma_rel."""
  t = 2000
  weights = _profile(sigma_rel, t)
  tau = np.arange(1, t + 1)
  assert weights.sum() == pytest.approx(1.0, abs=1e-5)
  mean = (weights * tau).sum()
  std = np.sqrt((weights * (tau - mean) ** 2).sum())
  assert std / t == pytest.approx(sigma_rel, rel=0.01)
  gamma = posthoc_ema.std_to_exp(sigma_rel)
  ideal = tau**gamma / (tau**gamma).sum()
  assert np.abs(weights - ideal).sum() < 0.01


def test_snapshots_of_two_widths_reconstruct_a_third():
  """Snapshots of the 0.05 and 0.10 EMAs every 100 of 1,000 steps, combined with
  coefficients(), give the weight profile of a 0.07 EMA tracked directly (and of the tracked
  0.05 one exactly), far closer than either tracked profile."""
  t, every = 1000, 100
  steps = list(range(every, t + 1, every))
  tracked = (0.05, 0.10)
  profiles, in_steps, in_stds = [], [], []
  for step in steps:
    for std in tracked:
      profiles.append(np.pad(_profile(std, step), (0, t - step)))
      in_steps.append(step)
      in_stds.append(std)
  profiles = np.stack(profiles)
  target = _profile(0.07, t)
  rebuilt = posthoc_ema.coefficients(in_steps, in_stds, t, 0.07) @ profiles
  error = np.abs(rebuilt - target).sum()
  assert error < 0.05, error
  for std in tracked:
    assert np.abs(_profile(std, t) - target).sum() > 5 * error
  itself = posthoc_ema.coefficients(in_steps, in_stds, t, 0.05) @ profiles
  np.testing.assert_allclose(itself, _profile(0.05, t), atol=1e-6)


def test_an_edm_run_with_snapshots_resumes_exactly_and_reconstructs_post_hoc(tmp_path):
  """The tiny EDM config tracks two power EMAs with snapshots every 2 steps: the run resumes
  exactly (EMAs included), `jaxgen-eval posthoc_ema` writes a run whose EMA is the weighted
  sum of the snapshots, reconstructing a tracked width gives that EMA, and nothing written
  is overwritten."""
  from jaxgen import checkpoint, inference

  _, state = tiny_run_resumes_exactly('edm_fashion_mnist', tmp_path)
  run = str(tmp_path / 'b')
  snaps = checkpoint.Checkpointer(run, read_only=True, subdir=checkpoint.SNAPSHOT_DIR)
  assert snaps.all_steps() == [1, 2, 4, 6]  # the trainer also keeps the first step's
  proc = run_cli('jaxgen.eval.main', 'posthoc_ema', f'--workdir={run}', '--sigma_rel=0.05,0.08',
                 '--num_cpu_devices=2')
  assert proc.returncode == 0, proc.stderr[-2000:]
  written = [str(tmp_path / 'b' / 'posthoc_ema' / f'sigma_rel_{x}') for x in ('0.050', '0.080')]
  assert proc.stdout.split() == [part for out in written for part in
                                 ('wrote', f'{out}:', 'evaluate', 'it', 'with',
                                  'jaxgen-eval', f'--workdir={out}')]

  _, same, step, _ = inference.restore_for_sampling(written[0])
  assert step == 6
  for got, want in zip(jax.tree_util.tree_leaves(same['ema_params']),
                       jax.tree_util.tree_leaves(state['phema'][0])):
    np.testing.assert_allclose(got, want, atol=2e-5)
  assert_trees_equal(same['params'], state['params'])

  s, rebuilt, _, _ = inference.restore_for_sampling(written[1])
  record = json.loads((tmp_path / 'b' / 'posthoc_ema' / 'sigma_rel_0.080' /
                       'posthoc_ema.json').read_text())
  assert sum(x['weight'] for x in record['snapshots']) == pytest.approx(1.0)
  expected = None
  for x in record['snapshots']:
    profile = snaps.restore(x['step'], {'phema': s.restore_target['phema']})['phema'][
        [0.05, 0.1].index(x['sigma_rel'])]
    part = jax.tree_util.tree_map(lambda p, w=x['weight']: w * np.asarray(p), profile)
    expected = part if expected is None else jax.tree_util.tree_map(np.add, expected, part)
  for got, want in zip(jax.tree_util.tree_leaves(rebuilt['ema_params']),
                       jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, atol=1e-5)
  again = run_cli('jaxgen.eval.main', 'posthoc_ema', f'--workdir={run}', '--sigma_rel=0.08',
                  '--num_cpu_devices=2')
  assert again.returncode != 0 and 'already holds a reconstruction' in again.stderr
  assert 'Traceback' not in again.stderr
  with pytest.raises(ValueError, match='no power-EMA snapshot at step 3'):
    posthoc_ema.reconstruct(run, [0.08], step=3, output=str(tmp_path / 'x'))
