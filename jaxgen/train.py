"""The one training loop. It knows meshes, state, data, checkpoints and metrics, and
nothing about any model family: those are objectives from the registry, built into a run
by jaxgen/build.py."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from jaxgen import build, checkpoint, grids, metrics, nonfinite, paths, preemption, workdir_lock
from jaxgen import state as state_lib
from jaxgen.data import pipeline


class StepWindow:
  """At most `size` dispatched steps wait for the devices: adding step n's outputs blocks
  until step n - size has finished. JAX dispatches asynchronously, so without a bound the
  host runs ahead by up to `log_every` steps (holding their batches; XLA:CPU's collectives
  time out with many queued); this costs no sync per step beyond that one wait."""

  def __init__(self, size: int):
    self.size, self._pending = size, collections.deque()

  def add(self, outputs: Any) -> None:
    self._pending.append(outputs)
    if len(self._pending) > self.size:
      jax.block_until_ready(self._pending.popleft())


def _stop_if_nonfinite(records: list, ckpt: checkpoint.Checkpointer) -> None:
  first = nonfinite.describe_first(records)
  if first is not None:
    ckpt.wait()
    saved = ckpt.latest_step()
    raise nonfinite.NonFiniteError(
        f'{first} (config.nonfinite_policy="stop"); that update was not applied and nothing '
        f'after it was saved (newest checkpoint: {saved}). Lower the learning rate or check '
        'the data, or set --config.nonfinite_policy=skip to skip such steps')


def run(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
        ) -> Any:
  """Train `config` in `workdir`, resuming from its latest checkpoint; returns the state.

  `stop_at_step` ends the run early with a checkpoint (as a preemption would) without
  changing the config, so the learning-rate schedule stays that of the full run.
  """
  s = build.setup(config)
  # A missing or empty dataset fails here, before the workdir is even created.
  dataset = pipeline.make_dataset(config.data, config.global_batch_size, config.seed)
  data_iter = pipeline.make_iterator(dataset, config.data.num_threads)
  with workdir_lock.WorkdirLock(workdir) as lock:  # before anything in the workdir is touched
    return _train(s, workdir, stop_at_step, lock, data_iter)


def _train(s: build.Setup, workdir: str, stop_at_step: int | None, lock: workdir_lock.WorkdirLock,
           data_iter) -> Any:
  config = s.config
  is_chief = jax.process_index() == 0
  root_rng = jax.random.key(config.seed)
  init_rng, train_rng, sample_rng = jax.random.split(root_rng, 3)

  ckpt = checkpoint.Checkpointer(workdir, every=config.checkpoint_every,
                                 keep=config.keep_checkpoints,
                                 use_async=config.async_checkpointing)
  snapshots = None
  if s.objective.snapshot is not None and s.objective.snapshot_every:
    snapshots = checkpoint.Checkpointer(workdir, every=s.objective.snapshot_every,
                                        use_async=config.async_checkpointing,
                                        subdir=checkpoint.SNAPSHOT_DIR)
  with jax.set_mesh(s.mesh):
    latest, state = ckpt.restore_newest(
        s.restore_target, data_iter, check=lambda step: ckpt.check_compatible(
            step, s.abstract_state, config, build.abstract_state))
    if latest is not None:
      logging.info('Resumed from %s at step %d', ckpt.directory, latest)
      if is_chief:
        metrics.print_line(f'resumed from checkpoint at step {latest}')
    else:
      state = build.init_state(s, init_rng)
    # Read the first batch before writing anything: bad data fails with the workdir untouched.
    first_batch = next(data_iter)
    lock.record_holder()
    start_step = int(jax.device_get(state['step']))
    # A fresh start (step 0) drops the records of a run that crashed before its first save.
    writer = metrics.MetricWriter(workdir, enabled=is_chief, resume_step=latest or 0)
    if is_chief:
      params = s.objective.sample_params(s.abstract_state)
      metrics.print_line(f'{config.objective}: {state_lib.count_params(params) / 1e6:.2f}M '
                         f'parameters; mesh {dict(s.mesh.shape)}; global batch '
                         f'{config.global_batch_size}; workdir {paths.workdir_path(workdir)}')

    train_step = build.jit_train_step(s)
    image_grids = grids.Grids(s, workdir, sample_rng)
    accumulator = metrics.Accumulator()
    stop_on_nonfinite = config.nonfinite_policy == 'stop'
    unchecked = []  # (step, metrics) on device since the last non-finite check
    in_flight = StepWindow(config.get('max_steps_in_flight', 2))
    shown = s.objective.progress_metrics
    progress = metrics.Progress(start_step, config.total_steps, config.global_batch_size, shown)
    compile_start = time.perf_counter()
    preempted, watcher, done = False, preemption.Watcher(), start_step
    try:
      for step in range(start_step, config.total_steps):
        local, first_batch = first_batch or next(data_iter), None
        batch = pipeline.global_batch(local, s.batch_sharding)
        state, step_metrics = train_step(state, batch, jax.random.fold_in(train_rng, step))
        accumulator.add(step_metrics)
        in_flight.add(step_metrics)
        done = step + 1
        preempted = watcher.reached(done)
        last = preempted or done in (config.total_steps, stop_at_step)
        ckpt.prepare(done, state, force=last)  # the save's copy, queued behind the step
        if stop_on_nonfinite:
          unchecked.append((done, step_metrics))
          if done % config.log_every == 0 or done % config.checkpoint_every == 0 or last:
            _stop_if_nonfinite(unchecked, ckpt)
            unchecked = []
        if step == start_step:
          jax.block_until_ready(state)
          logging.info('First step (compile + run) took %.1fs', time.perf_counter() - compile_start)
          progress = metrics.Progress(done, config.total_steps, config.global_batch_size, shown)
        if done % config.log_every == 0 or done == config.total_steps:
          scalars = accumulator.flush()
          rates = progress.rates(done)
          if rates:
            scalars.update(rates)
            if is_chief:
              metrics.print_line(progress.line(done, scalars, rates))
          writer.write_scalars(done, scalars)
        if config.sample_every and (done % config.sample_every == 0 or done == config.total_steps):
          written = image_grids.write(state, done, writer)
          if is_chief:
            metrics.print_line('grids: ' + ', '.join(map(str, written)))
        with checkpoint.start_together():
          ckpt.save(done, state, data_iter, config, force=last)
          if snapshots:
            snapshots.save(done, s.objective.snapshot(state), None, config, force=last,
                           within=ckpt)
        if last:
          break
    except pipeline.DataError:
      ckpt.wait()  # a bad record mid-run: let the save in flight (a good state) complete
      raise
    except OSError as e:  # a full disk or lost storage while writing metrics or grids
      ckpt.wait()  # a failed checkpoint save is usually the cause: it reports itself
      raise checkpoint.CheckpointError(
          f'step {done}: {e}. The newest complete checkpoint is step {ckpt.latest_step()} '
          '(intact): fix the cause and rerun the same command to resume') from e
    finally:
      watcher.close()  # the default signal handlers again, also after an error
    ckpt.wait()
    if snapshots:
      snapshots.wait()
      snapshots.close()
    if preempted and is_chief:
      metrics.print_line(f'{watcher.signal_name}: stopped after step {done} and saved its '
                         f'checkpoint in {ckpt.directory}; rerun the same command to resume')
    ckpt.close()
    writer.close()
    multihost_utils.sync_global_devices('jaxgen_train_done')
  return state
