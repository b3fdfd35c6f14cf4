"""Fault injection: NaN/Inf steps, SIGTERM, and kill -9 mid-save, mid-sampling and at random."""

import json
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, assert_trees_equal, tiny_config_with
from jaxgen import build, checkpoint, nonfinite, train, validate
from jaxgen.data import pipeline


def _nan_batch_at(monkeypatch, call: int) -> None:
  """The `call`-th global batch (counting across runs in this test) is all NaN."""
  original, calls = pipeline.global_batch, [0]

  def global_batch(local, sharding):
    calls[0] += 1
    if calls[0] == call:
      local = {**local, 'image': np.full_like(local['image'], np.nan)}
    return original(local, sharding)
  monkeypatch.setattr(pipeline, 'global_batch', global_batch)


def _without_step(state):
  return {k: v for k, v in state.items() if k != 'step'}


def _leaves(state):
  return jax.tree_util.tree_leaves(jax.device_get(_without_step(state)))


def test_skip_policy_leaves_the_state_of_a_nan_step_unchanged_and_goes_on(
    tmp_path, monkeypatch, fake_fmnist):
  config = tiny_config_with(**fake_fmnist, nonfinite_policy='skip', log_every=1)
  before = train.run(config, str(tmp_path / 'clean'), stop_at_step=2)

  _nan_batch_at(monkeypatch, 3)
  after_bad = train.run(config, str(tmp_path / 'nan'), stop_at_step=3)
  assert int(after_bad['step']) == 3
  assert_trees_equal(_without_step(before), _without_step(after_bad))  # params, EMA, Adam

  final = train.run(config, str(tmp_path / 'nan'))  # resumes at 3 and finishes
  assert int(final['step']) == 6
  assert all(np.all(np.isfinite(x)) for x in _leaves(final))
  lines = [json.loads(line) for line in (tmp_path / 'nan' / 'metrics.jsonl').read_text()
           .splitlines()]
  assert [line['nonfinite_steps'] for line in lines] == [0, 0, 1, 0, 0, 0]
  assert all(np.isfinite(line['loss']) for i, line in enumerate(lines) if i != 2)


def test_stop_policy_names_the_step_and_saves_nothing_after_it(
    tmp_path, monkeypatch, fake_fmnist):
  config = tiny_config_with(**fake_fmnist, nonfinite_policy='stop')  # checkpoint_every=3
  _nan_batch_at(monkeypatch, 3)
  workdir = str(tmp_path / 'run')
  with pytest.raises(nonfinite.NonFiniteError,
                     match=r'step 3: non-finite grad_norm, loss \(config.nonfinite_policy="stop"'):
    train.run(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, use_async=False)
  steps = ckpt.all_steps()
  assert steps and max(steps) < 3
  s = build.setup(config)
  state = ckpt.restore(max(steps), s.restore_target)
  ckpt.close()
  assert all(np.all(np.isfinite(x)) for x in _leaves(state))


def test_guard_catches_non_finite_state_beside_the_parameters_with_finite_metrics():
  # Parameters follow from finite gradient norms (nonfinite.DERIVED); state a family keeps
  # beside them (here an augmentation probability) is read by the guard itself.
  def step(state, batch, rng):
    return ({'step': state['step'] + 1, 'params': state['params'] + 1.0,
             'gan': {'aug_p': state['gan']['aug_p'] / batch}}, {'loss': batch})

  guarded = jax.jit(nonfinite.guard(step))
  state = {'step': np.int32(0), 'params': np.ones(3, np.float32),
           'gan': {'aug_p': np.float32(0.5)}}
  new, metrics = guarded(state, np.float32(0.0), jax.random.key(0))  # 0.5/0 = inf
  assert float(metrics['nonfinite']) == 1.0 and int(new['step']) == 1
  np.testing.assert_array_equal(new['params'], state['params'])
  assert float(new['gan']['aug_p']) == 0.5
  records = [(1, jax.device_get(metrics))]
  assert nonfinite.describe_first(records) == 'step 1: non-finite values in the updated state'
  new, metrics = guarded(state, np.float32(2.0), jax.random.key(0))
  assert float(metrics['nonfinite']) == 0.0 and float(new['gan']['aug_p']) == 0.25


def test_a_step_that_gates_its_own_update_is_guarded_like_one_that_does_not():
  # The same step written both ways (objective.gates_updates): the guard's outputs agree on
  # a finite step, a non-finite metric and non-finite state beside the parameters.
  def step(gated):
    def train_step(state, batch, rng):
      new = {'step': state['step'] + 1, 'gan': {'aug_p': state['gan']['aug_p'] / batch}}
      metrics = {'loss': batch * jnp.sum(state['params']), 'grad_norm': jnp.sqrt(batch)}
      update = lambda old: {'params': old['params'] + batch,
                            'opt_state': {'mu': old['opt_state']['mu'] * 0.5 + batch}}
      derived = {'params': state['params'], 'opt_state': state['opt_state']}
      new.update(nonfinite.update_if_finite(update, derived, metrics, new) if gated
                 else update(derived))
      return new, metrics
    return jax.jit(nonfinite.guard(train_step, gates_updates=gated))

  state = {'step': np.int32(4), 'params': np.ones(3, np.float32),
           'opt_state': {'mu': np.full(3, 2.0, np.float32)}, 'gan': {'aug_p': np.float32(0.5)}}
  gated, plain = step(True), step(False)
  for batch, bad in ((2.0, 0.0), (-1.0, 1.0), (0.0, 1.0)):  # sqrt(-1) = nan; 0.5 / 0 = inf
    new, metrics = gated(state, np.float32(batch), jax.random.key(0))
    assert_trees_equal(new, plain(state, np.float32(batch), jax.random.key(0))[0])
    assert float(metrics['nonfinite']) == bad and int(new['step']) == 5
    if bad:
      assert_trees_equal(_without_step(new), _without_step(state))
  np.testing.assert_array_equal(new['params'], state['params'])
  new, _ = gated(state, np.float32(2.0), jax.random.key(0))
  np.testing.assert_array_equal(new['opt_state']['mu'], np.full(3, 3.0, np.float32))


@pytest.mark.parametrize('config_name', ('edm_fashion_mnist', 'vae_fashion_mnist'))
def test_a_family_that_gates_its_update_keeps_its_whole_state_on_a_nan_batch(config_name):
  s = build.setup(tiny_config_with(config_name))
  assert s.objective.gates_updates
  step = build.jit_train_step(s)
  shapes = s.objective.batch_shapes(s.config.global_batch_size)
  rng = np.random.default_rng(0)
  good = {name: (rng.uniform(-1, 1, shape) if name == 'image' else np.zeros(shape)
                 ).astype(dtype) for name, (shape, dtype) in shapes.items()}
  bad = {**good, 'image': np.full_like(good['image'], np.nan)}
  init = jax.device_get(build.init_state(s, jax.random.key(0)))
  state, m = step(build.init_state(s, jax.random.key(0)), bad, jax.random.key(1))
  assert float(m['nonfinite']) == 1.0 and int(state['step']) == 1
  assert_trees_equal(_without_step(init), _without_step(jax.device_get(state)))
  state, m = step(state, good, jax.random.key(2))
  assert float(m['nonfinite']) == 0.0
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(init['params']),
      jax.tree_util.tree_leaves(jax.device_get(state['params']))))


def test_a_workdir_of_another_model_is_refused_and_left_untouched(tmp_path, fake_fmnist):
  workdir = tmp_path / 'run'
  train.run(tiny_config_with(**fake_fmnist), str(workdir), stop_at_step=3)

  def snapshot():
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in workdir.rglob('*') if p.is_file()}
  before = snapshot()
  wider = tiny_config_with(**fake_fmnist, **{'model.ch': 16})
  with pytest.raises(validate.ConfigError,
                     match=r'holds checkpoints \(step 3\) of a different model: params/\S+ is '
                           r'\(\d+,.*there but .* with this config \(differing fields: '
                           r'model.ch=8 there, 16 here\)'):
    train.run(wider, str(workdir))
  assert snapshot() == before


def _launch(cmd):
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO)


def _complete_steps(ckpt_dir):
  return sorted(int(p.name) for p in ckpt_dir.glob('*') if p.name.isdigit())


def test_sigterm_then_kill_9_mid_save_mid_sampling_and_at_random_end_like_a_straight_run(
    tmp_path, fake_fmnist, capsys):
  """A preemption notice first: the trainer finishes the step, saves it, says so and exits
  0. Then kill -9 three times. Each rerun resumes from the newest complete checkpoint;
  half-written saves are never loaded and are cleaned up; the final parameters equal those
  of an uninterrupted run."""
  seed = random.randrange(2**32)
  rng = random.Random(seed)
  workdir = tmp_path / 'run'
  ckpt_dir = workdir / 'checkpoints'
  overrides = {'total_steps': 12, 'checkpoint_every': 2, 'sample_every': 4, 'log_every': 1,
               'num_sample_images': 8, **fake_fmnist}
  cmd = [sys.executable, '-u', '-m', 'jaxgen.main',
         f'--config={REPO}/configs/ddpm_fashion_mnist.py:tiny', f'--workdir={workdir}',
         '--num_cpu_devices=8'] + [f'--config.{k}={v}' for k, v in overrides.items()]
  log = []

  def kill_when(proc, ready, what):
    deadline = time.time() + 240
    while not ready():
      assert proc.poll() is None, f'(seed {seed}) the run ended before {what}: {log}'
      assert time.time() < deadline, f'(seed {seed}) timed out waiting for {what}'
      time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=30)
    log.append((what, _complete_steps(ckpt_dir),
                sorted(p.name for p in ckpt_dir.glob('*tmp*'))))

  def step_line(proc, predicate, newest):
    for line in proc.stdout:  # blocks until the trainer prints a step
      if line.startswith('resumed from'):
        assert line.strip() == f'resumed from checkpoint at step {newest}', (seed, log)
      if line.startswith('step ') and predicate(int(line.split()[1].split('/')[0])):
        return
    raise AssertionError(f'(seed {seed}) the run ended early: {log}')

  for moment in ('SIGTERM', 'mid-save', 'mid-sampling', 'at random'):
    newest = (_complete_steps(ckpt_dir) or [None])[-1] if ckpt_dir.exists() else None
    proc = _launch(cmd)
    if moment == 'SIGTERM':
      lines = []
      for line in proc.stdout:  # wait until it is training
        lines.append(line)
        if line.startswith('step 3/'):
          break
      proc.send_signal(signal.SIGTERM)
      out = ''.join(lines) + proc.communicate(timeout=120)[0]
      assert proc.returncode == 0, out[-3000:]
      saved = int(out.split('SIGTERM: stopped after step ')[1].split()[0])
      logged = [int(x.split()[1].split('/')[0]) for x in out.splitlines()
                if x.startswith('step ')]
      # The step it had reached, not an older one, is the newest checkpoint.
      assert saved >= 3 and saved == max(logged) == _complete_steps(ckpt_dir)[-1], out
      log.append((moment, _complete_steps(ckpt_dir), []))
    elif moment == 'mid-save':  # an async save of step >= 4 is being written
      kill_when(proc, lambda: any(int(p.name.split('.')[0]) >= 4
                                  for p in ckpt_dir.glob('*.orbax-checkpoint-tmp*')), moment)
    elif moment == 'mid-sampling':  # the sample grid follows the log line of step 8
      step_line(proc, lambda step: step == 8, newest)
      time.sleep(rng.uniform(0, 0.3))
      kill_when(proc, lambda: True, moment)
    else:
      step_line(proc, lambda step: True, newest)
      time.sleep(rng.uniform(0, 1.0))
      kill_when(proc, lambda: True, moment)
  newest = _complete_steps(ckpt_dir)[-1]
  capsys.readouterr()
  train.run(tiny_config_with(**overrides), str(workdir))  # the last rerun, in-process
  assert f'resumed from checkpoint at step {newest}' in capsys.readouterr().out, (seed, log)
  assert not list(ckpt_dir.glob('*tmp*')), 'a half-written checkpoint was left behind'
  # metrics.jsonl has each step once, as an uninterrupted run would.
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == list(range(1, 13))
  straight = train.run(tiny_config_with(**overrides), str(tmp_path / 'straight'))
  s = build.setup(tiny_config_with(**overrides))
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True, use_async=False)
  assert_trees_equal(_without_step(straight),
                     _without_step(ckpt.restore(12, s.restore_target)))
  ckpt.close()
  print(f'seed {seed}:', log)


def test_after_a_skipped_step_the_optimizer_follows_the_state_step():
  """One counter: a skipped (non-finite) step is not applied, yet the learning-rate
  schedule moves on with state['step'] like the EMA and KL warm-ups do."""
  config = tiny_config_with(nonfinite_policy='skip')  # warm-up from lr 0 over 2 steps
  s = build.setup(config)
  step = build.jit_train_step(s)
  rng = np.random.default_rng(0)
  good = {'image': rng.uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32),
          'label': np.zeros(16, np.int32)}
  bad = {**good, 'image': np.full_like(good['image'], np.nan)}
  init = jax.device_get(build.init_state(s, jax.random.key(0))['params'])

  state = build.init_state(s, jax.random.key(0))
  state, m = step(state, bad, jax.random.key(1))
  assert float(m['nonfinite']) == 1.0 and int(state['step']) == 1
  state, m = step(state, good, jax.random.key(2))
  assert float(m['learning_rate']) == pytest.approx(config.optimizer.learning_rate / 2)
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(state['params']))]
  assert any(changed), 'the update after the skipped step used the learning rate of step 0'
  # The same as a run whose counter reached step 1 without the NaN.
  reference = build.init_state(s, jax.random.key(0))
  reference['step'] = np.int32(1)
  reference, _ = step(reference, good, jax.random.key(2))
  assert_trees_equal(_without_step(state), _without_step(reference))


# One tiny config per family that trains without a frozen first stage (latent diffusion
# runs the diffusion objective, covered by edm).
FAMILY_CONFIGS = ('edm_fashion_mnist', 'vae_fashion_mnist', 'autoencoder_kl_fashion_mnist',
                  'dcgan_fashion_mnist', 'stylegan2_fashion_mnist', 'pix2pix_edges2fashion',
                  'cyclegan_sneaker2boot')


@pytest.mark.parametrize('config_name', FAMILY_CONFIGS)
def test_every_family_reports_the_gradient_norm_of_each_optimizer(config_name):
  # nonfinite.guard does not read the parameters, optimizer moments and EMAs
  # (nonfinite.DERIVED): they stay finite because every gradient that updates them has its
  # global norm in the step's metrics. Traced only (eval_shape), nothing compiled.
  s = build.setup(tiny_config_with(config_name))
  batch = {name: jax.ShapeDtypeStruct(shape, dtype)
           for name, (shape, dtype) in s.objective.batch_shapes(s.config.global_batch_size).items()}
  _, step_metrics = jax.eval_shape(s.objective.train_step, s.abstract_state, batch,
                                   jax.random.key(0))
  opt_state = s.abstract_state['opt_state']
  optimizers = len(opt_state) if isinstance(opt_state, dict) else 1
  norms = [name for name in step_metrics if name.endswith('grad_norm')]
  assert len(norms) == optimizers, (norms, optimizers)
  assert 'step' in set(s.abstract_state) - set(nonfinite.DERIVED)
