"""benchmarks/loop.py runs end to end on a tiny config (its numbers are for README, not for
tests: this only checks that it still measures what it says against today's code)."""

import re
import subprocess
import sys

from conftest import REPO


def test_the_loop_benchmark_reports_the_loop_the_input_and_the_checkpoint_stall(fake_fmnist):
  overrides = [f'--config.{k}={v}' for k, v in fake_fmnist.items()]
  proc = subprocess.run(
      [sys.executable, 'benchmarks/loop.py', '--config=configs/edm_fashion_mnist.py:tiny',
       *overrides, '--steps=4', '--rounds=1', '--window=2', '--input_batches=4',
       '--num_cpu_devices=2', '--compilation_cache_dir='],
      capture_output=True, text=True, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert re.search(r'^configs/edm_fashion_mnist.py:tiny: batch 16, 2 cpu devices, 4 steps',
                   out, re.M), out
  assert re.search(r'^round 1: loop [\d.]+ images/s, system time [\d.]+% of', out, re.M), out
  ratio = float(re.search(r'^loop / bare step images/s: ([\d.]+)$', out, re.M).group(1))
  assert 0 < ratio < 10, out
  assert re.search(r'^input pipeline: [\d.]+ batches/s = [\d.]+x the step rate', out, re.M)
  # The EDM config keeps power-EMA snapshots: both saves are timed, as train.py makes them.
  assert re.search(r'^checkpoint: the state and EMA snapshot saves hold the loop [\d.]+ ms '
                   r'\([\d.]+% of a step\)', out, re.M), out
