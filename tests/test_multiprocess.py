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


def _cmd(workdir, overrides, process_id=None, port=None, extra=()):
  cmd = [sys.executable, '-m', 'jaxgen.main',
         f'--config={REPO}/configs/ddpm_fashion_mnist.py:tiny', f'--workdir={workdir}',
         *[f'--config.{k}={v}' for k, v in overrides.items()], *extra]
  if process_id is None:
    return cmd + ['--num_cpu_devices=8']
  return cmd + ['--num_cpu_devices=4', f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2', f'--process_id={process_id}']


def _start_two(workdir, overrides, extra=(), only_first=False):
  port = free_port()
  return [subprocess.Popen(_cmd(workdir, overrides, i, port, extra), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=REPO)
          for i in ((0,) if only_first else (0, 1))]


def _run_two(workdir, overrides, timeout=300, only_first=False, extra=()):
  procs = _start_two(workdir, overrides, extra, only_first)
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


def test_two_processes_train_like_one_and_checkpoints_cross_over(tmp_path, prepared_fmnist):
  config = tiny_config_with(**prepared_fmnist)
  # (a) 2 processes x 4 devices for 6 steps == 1 process x 8 devices.
  two = tmp_path / 'two'
  for code, out in _run_two(two, prepared_fmnist):
    assert code == 0, out[-3000:]
  one = train.run(config, str(tmp_path / 'one'))
  two_state = _restore(two, config, 6)  # (b) written by 2 processes, read by 1
  assert_trees_close(jax.device_get(one['params']), two_state['params'])
  assert_trees_close(jax.device_get(one['opt_state']), two_state['opt_state'])
  # (b) written by 1 process (3 steps), resumed by 2 processes to step 6.
  mixed = tmp_path / 'mixed'  # the one-process run as it was at step 3
  shutil.copytree(tmp_path / 'one', mixed)
  shutil.rmtree(mixed / 'checkpoints' / '6')
  results = _run_two(mixed, prepared_fmnist)
  for code, out in results:
    assert code == 0, out[-3000:]
  assert 'resumed from checkpoint at step 3' in results[0][1]
  assert_trees_close(jax.device_get(one['params']), _restore(mixed, config, 6)['params'])


def test_a_missing_peer_fails_within_the_timeout(tmp_path, prepared_fmnist):
  start = time.time()
  [(code, out)] = _run_two(tmp_path / 'alone', prepared_fmnist, timeout=120, only_first=True,
                           extra=('--distributed_timeout_s=10',))
  assert code != 0
  assert time.time() - start < 120
  assert not (tmp_path / 'alone' / 'checkpoints').exists()


def test_preemption_of_one_process_then_a_peer_dying_then_a_rerun(tmp_path, prepared_fmnist):
  """(a) A preemption notice reaching only process 1 (as on a pod slice where one host is
  reclaimed): JAX's preemption sync point makes both processes save the same step and exit
  0. (b) The rerun resumes there; kill -9 of one process makes the other fail within the
  heartbeat timeout instead of hanging. (c) Rerunning both resumes from the newest complete
  checkpoint. One sequence, so the two-process programs compile (or load) once."""
  overrides = {**prepared_fmnist, 'total_steps': 100_000, 'checkpoint_every': 100_000,
               'log_every': 1}
  workdir = tmp_path / 'run'
  procs = _start_two(workdir, overrides, ('--distributed_timeout_s=30',))
  try:
    lines, deadline = [], time.time() + 240
    for line in procs[0].stdout:  # process 0 prints the progress lines
      lines.append(line)
      if line.startswith('step 3/') or time.time() > deadline:
        break
    procs[1].send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  out = ''.join(lines) + outputs[0]
  assert [proc.returncode for proc in procs] == [0, 0], out[-3000:] + outputs[1][-3000:]
  saved = int(out.split('SIGTERM: stopped after step ')[1].split()[0])
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True, use_async=False)
  assert ckpt.all_steps() == [1, saved]  # orbax's first save, and the agreed step
  ckpt.close()
  config = tiny_config_with(**overrides)
  straight = train.run(config, str(tmp_path / 'one'), stop_at_step=saved)
  assert_trees_close(jax.device_get(straight['params']), _restore(workdir, config, saved)['params'])

  # (b) Resumed from `saved`, saving every 2 steps; kill -9 process 1 after the next save.
  overrides = {**overrides, 'checkpoint_every': 2}
  procs = _start_two(workdir, overrides, ('--distributed_timeout_s=10',))
  try:
    deadline = time.time() + 240
    while len([p for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]) < 3:
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

  # (c) One more step is enough to show the resume.
  end = complete[-1] + 1
  results = _run_two(workdir, {**overrides, 'total_steps': end})
  for code, rerun in results:
    assert code == 0, rerun[-3000:]
  assert f'resumed from checkpoint at step {complete[-1]}' in results[0][1]
  assert not list((workdir / 'checkpoints').glob('*tmp*'))
  assert _restore(workdir, tiny_config_with(**overrides), end)['step'] == end
