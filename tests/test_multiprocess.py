"""Two local processes x 4 simulated CPU devices, against one process x 8 devices.

Workers are subprocesses under hard timeouts: a JAX process whose peer never comes
aborts (uncatchable), so it must never run inside pytest itself.
"""

import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

from conftest import REPO, assert_trees_close, free_port, tiny_config_with
from jaxgen import build, checkpoint, train
from jaxgen.data import fashion_mnist

pytestmark = pytest.mark.slow


@pytest.fixture
def prepared_fmnist(fake_fmnist):
  """Small IDX files, prepared as TFDS once here so the workers do not race to build it."""
  fashion_mnist.data_source('train', fake_fmnist['data.data_dir'],
                            fake_fmnist['data.manual_dir'])
  return {**fake_fmnist, 'sample_every': 0, 'total_steps': 6, 'checkpoint_every': 3}


def _cmd(workdir, overrides, process_id=None, port=None, extra=(), config='ddpm_fashion_mnist'):
  cmd = [sys.executable, '-m', 'jaxgen.main',
         f'--config={REPO}/configs/{config}.py:tiny', f'--workdir={workdir}',
         *[f'--config.{k}={v}' for k, v in overrides.items()], *extra]
  if process_id is None:
    return cmd + ['--num_cpu_devices=8']
  return cmd + ['--num_cpu_devices=4', f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2', f'--process_id={process_id}']


def _start_two(workdir, overrides, extra=(), only_first=False, config='ddpm_fashion_mnist'):
  port = free_port()
  return [subprocess.Popen(_cmd(workdir, overrides, i, port, extra, config),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=REPO)
          for i in ((0,) if only_first else (0, 1))]


def _run_two(workdir, overrides, timeout=300, only_first=False, extra=(),
             config='ddpm_fashion_mnist'):
  procs = _start_two(workdir, overrides, extra, only_first, config)
  deadline = time.time() + timeout
  outputs = []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise AssertionError('a worker hung past the timeout') from None
    outputs.append((proc.returncode, out))
  return outputs


def _restore(workdir, config, step):
  s = build.setup(config)
  ckpt = checkpoint.Checkpointer(str(workdir), every=1, keep=10, use_async=False)
  state = ckpt.restore(step, s.restore_target)
  ckpt.close()
  return jax.device_get(state)


def test_a_missing_peer_fails_within_the_timeout(tmp_path, prepared_fmnist):
  start = time.time()
  [(code, out)] = _run_two(tmp_path / 'alone', prepared_fmnist, timeout=120, only_first=True,
                           extra=('--distributed_timeout_s=10',))
  assert code != 0
  assert time.time() - start < 120
  assert not (tmp_path / 'alone' / 'checkpoints').exists()


def test_two_processes_train_like_one_across_a_preemption_a_peer_death_and_reruns(
    tmp_path, prepared_fmnist):
  """One sequence, so the two-process programs compile (or load) once:
  (a) 1 process x 8 devices trains to step 2; 2 processes x 4 devices resume from that
      checkpoint (it crosses over from 1 process to 2);
  (b) a preemption notice reaches only process 1 (as on a pod slice where one host is
      reclaimed): JAX's preemption sync point makes both save the same step and exit 0, and
      that checkpoint, read by 1 process, equals a 1-process run to the same step;
  (c) the rerun resumes there; kill -9 of one process makes the other fail within the
      heartbeat timeout instead of hanging;
  (d) rerunning both resumes from the newest complete checkpoint."""
  overrides = {**prepared_fmnist, 'total_steps': 100_000, 'checkpoint_every': 100_000,
               'log_every': 1}
  config = tiny_config_with(**overrides)
  one, workdir = tmp_path / 'one', tmp_path / 'run'
  train.run(config, str(one), stop_at_step=2)
  shutil.copytree(one, workdir)
  procs = _start_two(workdir, overrides, ('--distributed_timeout_s=30',))
  try:
    lines, deadline = [], time.time() + 240
    for line in procs[0].stdout:  # process 0 prints the progress lines
      lines.append(line)
      if line.startswith('step 4/') or time.time() > deadline:
        break
    procs[1].send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  out = ''.join(lines) + outputs[0]
  assert [proc.returncode for proc in procs] == [0, 0], out[-3000:] + outputs[1][-3000:]
  assert 'resumed from checkpoint at step 2' in out
  saved = int(out.split('SIGTERM: stopped after step ')[1].split()[0])
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True, use_async=False)
  assert ckpt.all_steps() == [1, 2, saved]  # the 1-process run's, and the agreed step
  ckpt.close()
  straight = train.run(config, str(one), stop_at_step=saved)  # resumes from 2 in 1 process
  two = _restore(workdir, config, saved)  # written by 2 processes, read by 1
  assert_trees_close(jax.device_get(straight['params']), two['params'])
  assert_trees_close(jax.device_get(straight['opt_state']), two['opt_state'])

  # (c) Resumed from `saved`, saving every 2 steps; kill -9 process 1 after the next save.
  overrides = {**overrides, 'checkpoint_every': 2}
  procs = _start_two(workdir, overrides, ('--distributed_timeout_s=10',))
  try:
    deadline = time.time() + 240
    while max(int(p.name) for p in (workdir / 'checkpoints').iterdir()
              if p.name.isdigit()) <= saved:
      assert time.time() < deadline and procs[0].poll() is None, 'training did not resume'
      time.sleep(0.2)
    procs[1].kill()
    killed_at = time.time()
    out, _ = procs[0].communicate(timeout=90)
  finally:
    for proc in procs:
      proc.kill()
  assert procs[0].returncode != 0
  assert time.time() - killed_at < 90
  assert f'resumed from checkpoint at step {saved}' in out
  assert 'another task died' in out or 'stopped sending heartbeats' in out, out[-3000:]
  complete = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert complete[-1] > saved

  # (d) One more step is enough to show the resume.
  end = complete[-1] + 1
  results = _run_two(workdir, {**overrides, 'total_steps': end})
  for code, rerun in results:
    assert code == 0, rerun[-3000:]
  assert f'resumed from checkpoint at step {complete[-1]}' in results[0][1]
  assert not list((workdir / 'checkpoints').glob('*tmp*'))
  assert _restore(workdir, tiny_config_with(**overrides), end)['step'] == end


def test_a_gan_on_two_processes_trains_like_one(tmp_path, prepared_fmnist):
  """The GAN step across processes: two optimizers, R1 and path length (step 0), DiffAugment
  per example, G's EMA and the gan/ state, class-conditional with minibatch stddev over
  groups that span devices, 2 processes x 4 devices against 1 x 8."""
  overrides = {**prepared_fmnist, 'total_steps': 3, 'model.num_classes': 10,
               'discriminator.mbstd_group_size': 4}
  config = tiny_config_with('dcgan_fashion_mnist', **overrides)
  straight = jax.device_get(train.run(config, str(tmp_path / 'one')))
  for code, out in _run_two(tmp_path / 'two', overrides, config='dcgan_fashion_mnist'):
    assert code == 0, out[-3000:]
  two = _restore(tmp_path / 'two', config, 3)
  for key in ('params', 'opt_state', 'ema_params', 'gan'):
    assert_trees_close(straight[key], two[key])
