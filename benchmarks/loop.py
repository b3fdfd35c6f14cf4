r"""What jaxgen's training loop costs beyond its jitted step, on this machine.

  python benchmarks/loop.py [--config=configs/edm_fashion_mnist.py:demo] [--steps=200]

Four numbers, each next to the bare step measured in the same run:

  loop        images/s of the training loop itself (jaxgen/train.py: TFDS + grain input,
              the non-finite guard, the on-device metric averages, progress lines and
              TensorBoard records) over --steps steps in a fresh workdir, counted from its
              first progress line to its last (so without the compile), against the same
              step (batch split over all devices, as benchmarks/train_step.py builds it)
              called on one batch already on the devices. Alternating,
              --rounds times each. Also the system time as a fraction of this process's
              CPU time (getrusage, all threads) and its minor page faults per step, over the
              same windows. With 4 or more rounds, the median ratio, its quartiles and a
              90% bootstrap interval of the median (one round moves by ~10% with a
              shared machine's speed: ~30 rounds pin a 5% question down).
  input       batches/s of the input pipeline alone (grain iterator and host-to-device
              transfer), as a multiple of the step rate.
  checkpoint  an asynchronous orbax save of the train state (jaxgen/checkpoint.py) started
              between steps, with the EMA snapshots' save when the config keeps them (as
              jaxgen/train.py saves both): how long the saves hold the loop, how much longer the
              --window steps after it take than the --window steps before it (median over
              --rounds saves), both as a fraction of one step.

The loop runs with progress lines every --steps/10 steps, no sample grids and no checkpoint
inside the measured window. Not a test: the numbers hold for this machine only.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxgen import config_files, runtime  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/edm_fashion_mnist.py:demo'
config_files.allow_sibling_imports(DEFAULT_CONFIG)  # --config= does that for others
config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                'Config file, optionally path.py:variant; fields can be '
                                'overridden (--config.global_batch_size=32).')
flags.DEFINE_integer('steps', 200, 'Steps per loop run (and per bare-step round).')
flags.DEFINE_integer('rounds', 2, 'Alternating rounds of loop and bare step; saves timed.')
flags.DEFINE_integer('window', 8, 'Steps timed before and after each checkpoint save.')
flags.DEFINE_integer('input_batches', 200, 'Batches read to time the input pipeline.')


class Usage:
  """CPU seconds (user, system) and minor page faults of this process, all threads."""

  def __init__(self):
    r = resource.getrusage(resource.RUSAGE_SELF)
    self.user, self.sys, self.faults = r.ru_utime, r.ru_stime, r.ru_minflt
    self.time = time.perf_counter()

  def __sub__(self, other: Usage) -> dict[str, float]:
    return {'user': self.user - other.user, 'sys': self.sys - other.sys,
            'faults': self.faults - other.faults, 'seconds': self.time - other.time}


def watch_metrics(path: str, first_step: int, last_step: int, marks: dict) -> threading.Thread:
  """Records Usage when the progress record of `first_step` and of `last_step` appears."""

  def poll():  # re-reads the file only when it grew, so it barely competes with the loop
    size = 0
    while 'last' not in marks:
      time.sleep(0.05)
      if not os.path.exists(path) or os.path.getsize(path) == size:
        continue
      size = os.path.getsize(path)
      with open(path) as f:
        steps = [json.loads(line)['step'] for line in f if line.strip()]
      if first_step in steps and 'first' not in marks:
        marks['first'] = Usage()
      if last_step in steps:
        marks['last'] = Usage()

  thread = threading.Thread(target=poll, daemon=True)
  thread.start()
  return thread


def loop_round(config, steps: int) -> dict[str, float]:
  """The training loop for `steps` steps in a fresh workdir: its rate after the first
  progress line, and the CPU usage over that window."""
  from jaxgen import metrics, train

  config = config.copy_and_resolve_references()
  every = max(steps // 10, 1)
  with config.unlocked():
    config.total_steps = steps
    config.log_every = every
    config.sample_every = 0
    config.checkpoint_every = 10 * steps  # only the final, forced save (after the window)
    if 'snapshot_every' in config.get('ema', {}):
      config.ema.snapshot_every = 10 * steps
  with tempfile.TemporaryDirectory() as workdir:
    marks = {}
    thread = watch_metrics(os.path.join(workdir, metrics.METRICS_FILE), every,
                           steps - steps % every, marks)
    train.run(config, workdir)
    thread.join(timeout=5)
    with open(os.path.join(workdir, metrics.METRICS_FILE)) as f:
      records = [json.loads(line) for line in f if line.strip()]
  timed = [r for r in records[1:] if 'steps_per_sec' in r]  # the first includes the compile
  seconds = sum(every / r['steps_per_sec'] for r in timed)
  usage = marks['last'] - marks['first']
  return {'images_per_sec': len(timed) * every * config.global_batch_size / seconds,
          'steps': len(timed) * every, **usage}


def bare_round(compiled, state, batch, key, steps: int):
  import jax

  before = Usage()
  for i in range(steps):
    state, _ = compiled(state, batch, jax.random.fold_in(key, i))
  jax.block_until_ready(state)
  usage = Usage() - before
  return state, {'images_per_sec': steps * batch_size(batch) / usage['seconds'],
                 'steps': steps, **usage}


def batch_size(batch) -> int:
  import jax
  return jax.tree_util.tree_leaves(batch)[0].shape[0]


def input_rate(config, s, num_batches: int) -> float:
  """Batches/s of the grain iterator plus the host-to-device transfer of each batch."""
  import jax

  from jaxgen.data import pipeline

  data = pipeline.make_iterator(
      pipeline.make_dataset(config.data, config.global_batch_size, config.seed),
      config.data.num_threads)
  for _ in range(5):
    next(data)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = pipeline.global_batch(next(data), s.batch_sharding)
  jax.block_until_ready(batch)
  return num_batches / (time.perf_counter() - start)


def checkpoint_stall(config, compiled, state, batch, key, window: int, rounds: int,
                     snapshot=None):
  """(seconds the saves hold the loop, extra seconds of the `window` steps after them over
  the `window` before), one pair per save; `snapshot(state)`: also save what it returns
  in the snapshots series, as the trainer does (power-function EMAs)."""
  import jax

  from jaxgen import checkpoint

  def steps(state, offset, save_step=None):
    start = time.perf_counter()
    for i in range(window):
      state, _ = compiled(state, batch, jax.random.fold_in(key, offset + i))
    if save_step:  # as jaxgen/train.py: the save's copy queued behind the step
      ckpt.prepare(save_step, state, force=True)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start

  out = []
  with tempfile.TemporaryDirectory() as workdir:
    ckpt = checkpoint.Checkpointer(workdir, every=1, use_async=True)
    snapshots = snapshot and checkpoint.Checkpointer(workdir, every=1, use_async=True,
                                                     subdir=checkpoint.SNAPSHOT_DIR)
    for r in range(rounds + 1):
      state, before = steps(state, 1000 * r, save_step=r + 1)
      start = time.perf_counter()
      with checkpoint.start_together():  # as jaxgen/train.py saves
        ckpt.save(r + 1, state, None, config, force=True)
        if snapshots:
          snapshots.save(r + 1, snapshot(state), None, config, force=True, within=ckpt)
      held = time.perf_counter() - start
      state, after = steps(state, 1000 * r + window)
      ckpt.wait()
      if snapshots:
        snapshots.wait()
      if r:  # the first save also builds orbax's handlers
        out.append((held, after - before))
    ckpt.close()
    if snapshots:
      snapshots.close()
  return state, out


def median_interval(values: list[float], level: float = 0.9, resamples: int = 10_000,
                    seed: int = 0) -> tuple[float, float]:
  """A percentile-bootstrap interval of the median of `values`. The machine's speed drifts
  by ~10% from one round to the next on a shared VM, so one round says little; this says how
  well --rounds pairs pin the loop's cost down."""
  import numpy as np

  draws = np.random.default_rng(seed).choice(values, size=(resamples, len(values)))
  medians = np.median(draws, axis=1)
  tail = (1 - level) / 2
  return float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def fmt(u: dict[str, float]) -> str:
  cpu = u['user'] + u['sys']
  return (f"{u['images_per_sec']:.1f} images/s, system time {100 * u['sys'] / cpu:.1f}% of "
          f"{cpu / u['seconds']:.2f} busy cores, {u['faults'] / u['steps']:.0f} minor page "
          'faults per step')


def main(argv):
  del argv
  runtime.configure_jax()
  import jax
  import train_step

  config = FLAGS.config
  s, state, batch, key, compiled, _, _ = train_step.compiled_step(
      config.copy_and_resolve_references(), config.global_batch_size)
  loops, bares = [], []
  for _ in range(FLAGS.rounds):
    loops.append(loop_round(config, FLAGS.steps))
    state, bare = bare_round(compiled, state, batch, key, FLAGS.steps)
    bares.append(bare)
  rate = statistics.median(b['images_per_sec'] for b in bares) / config.global_batch_size
  batches_per_sec = input_rate(config, s, FLAGS.input_batches)
  keeps_snapshots = s.objective.snapshot is not None and s.objective.snapshot_every
  state, saves = checkpoint_stall(config, compiled, state, batch, key, FLAGS.window,
                                  FLAGS.rounds, s.objective.snapshot if keeps_snapshots else None)
  jax.block_until_ready(state)

  name = config_flags.get_config_filename(FLAGS['config'])
  print(f'{name}: batch {config.global_batch_size}, {jax.device_count()} '
        f'{jax.devices()[0].platform} devices, {FLAGS.steps} steps per round')
  for i, (loop, bare) in enumerate(zip(loops, bares)):
    print(f'round {i + 1}: loop {fmt(loop)}')
    print(f'         bare step {fmt(bare)}')
  ratios = [lp['images_per_sec'] / b['images_per_sec'] for lp, b in zip(loops, bares)]
  print('loop / bare step images/s: ' + ', '.join(f'{r:.3f}' for r in ratios))
  if len(ratios) >= 4:
    low, high = median_interval(ratios)
    quarters = statistics.quantiles(ratios, n=4)
    print(f'  median {statistics.median(ratios):.3f}, quartiles {quarters[0]:.3f}-'
          f'{quarters[2]:.3f}; 90% bootstrap interval of the median {low:.3f}-{high:.3f}')
  print(f'input pipeline: {batches_per_sec:.1f} batches/s = {batches_per_sec / rate:.1f}x the '
        f'step rate ({rate:.2f} steps/s)')
  step_s = 1 / rate
  held = statistics.median(h for h, _ in saves)
  extra = statistics.median(e for _, e in saves)
  what = 'the state and EMA snapshot saves hold' if keeps_snapshots else 'save() holds'
  print(f'checkpoint: {what} the loop {1e3 * held:.1f} ms ({100 * held / step_s:.1f}% of '
        f'a step); the {FLAGS.window} steps after it took {1e3 * extra:+.0f} ms '
        f'({100 * extra / step_s:+.1f}% of a step) against the {FLAGS.window} before '
        f'(medians of {len(saves)} saves)')


if __name__ == '__main__':
  app.run(main, flags_parser=runtime.parse_flags)
