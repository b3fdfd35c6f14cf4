"""The one training loop. It knows meshes, state, data, checkpoints and metrics, and
nothing about any model family: those are objectives from the registry."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from jaxgen import (
  checkpoint,
  metrics,
  nonfinite,
  objectives,
  paths,
  preemption,
  registry,
  sharding,
  validate,
  workdir_lock,
)
from jaxgen import state as state_lib
from jaxgen.data import pipeline
from jaxgen.objectives import Objective

SAMPLES_DIR = 'samples'


@dataclasses.dataclass
class Setup:
  """Everything derived from a config before training: mesh, objective, shardings."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  objective: Objective
  abstract_state: Any
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding

  @property
  def restore_target(self) -> Any:
    return sharding.with_shardings(self.abstract_state, self.state_shardings)


def setup(config: ml_collections.ConfigDict, devices=None) -> Setup:
  """Validate the config, build the mesh and the objective, lay out the state."""
  devices = list(devices if devices is not None else jax.devices())
  validate.validate(config, len(devices), jax.process_count(), registry.known_values(config))
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = registry.build_objective(config)
  abstract_state = jax.eval_shape(objective.init, jax.random.key(0))
  state_shardings = sharding.tree_shardings(abstract_state, mesh, config.sharding)
  return Setup(config, mesh, objective, abstract_state, state_shardings,
               sharding.batch_sharding(mesh))


def init_state(s: Setup, rng: jax.Array) -> Any:
  """The state created directly in its sharded layout (never whole on one device)."""
  return jax.jit(s.objective.init, out_shardings=s.state_shardings)(rng)


def jit_train_step(s: Setup):
  rep = sharding.replicated(s.mesh)
  # The guard leaves the state unchanged on a step with NaN/Inf, and flags it in the metrics.
  return jax.jit(nonfinite.guard(s.objective.train_step),
                 in_shardings=(s.state_shardings, s.batch_sharding, rep),
                 out_shardings=(s.state_shardings, rep), donate_argnums=(0,))


def _output_sharding(s: Setup, num_images: int) -> jax.sharding.NamedSharding:
  # Images are split over the devices like a batch when they divide evenly (XLA propagates
  # that layout back through a sampler loop: 2 devices sample ~2x faster).
  return s.batch_sharding if num_images % s.mesh.size == 0 else sharding.replicated(s.mesh)


def jit_sample(s: Setup, num_images: int, **sample_kwargs):
  """Samples of `sample_params(state)` as a host uint8 array, the same on every process."""
  rep = sharding.replicated(s.mesh)

  def fn(state, rng):
    return s.objective.sample(s.objective.sample_params(state), rng, num_images, **sample_kwargs)
  compiled = jax.jit(fn, in_shardings=(s.state_shardings, rep),
                     out_shardings=_output_sharding(s, num_images))

  def sample(state, rng) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(compiled(state, rng), tiled=True))
  return sample


def jit_reconstruct(s: Setup, images: np.ndarray):
  """decode(encode(images)) of `sample_params(state)` as a host uint8 array."""
  layout = _output_sharding(s, len(images))
  images = jax.device_put(images, layout)

  def fn(state, images):
    params = s.objective.sample_params(state)
    return s.objective.decode(params, s.objective.encode(params, images))
  compiled = jax.jit(fn, in_shardings=(s.state_shardings, layout), out_shardings=layout)

  def reconstruct(state) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(compiled(state, images), tiled=True))
  return reconstruct


def paired_grid(originals: np.ndarray, reconstructions: np.ndarray, columns: int = 8
                ) -> np.ndarray:
  """Rows of up to `columns` originals, each followed by a row of their reconstructions."""
  rows = []
  for start in range(0, len(originals), columns):
    rows += [originals[start:start + columns], reconstructions[start:start + columns]]
  width = min(columns, len(originals))
  padded = [np.concatenate([r, np.zeros((width - len(r), *r.shape[1:]), np.uint8)])
            for r in rows]
  return metrics.image_grid(np.concatenate(padded), columns=width)


def compile_report(s: Setup, device_memory_bytes: int | None = None) -> dict[str, Any]:
  """Lower and compile the train step for the config's mesh without running it.

  What users check before paying for a pod slice: FLOPs per step (XLA cost
  analysis, per device for a partitioned program) and the per-device memory
  analysis, and whether arguments + outputs + temporaries fit `device_memory_bytes`.
  """
  rep = sharding.replicated(s.mesh)
  batch_shapes = s.objective.batch_shapes(s.config.global_batch_size)
  abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=s.batch_sharding)
                    for k, (shape, dtype) in batch_shapes.items()}
  abstract_rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
  start = time.perf_counter()
  with jax.set_mesh(s.mesh):
    compiled = jit_train_step(s).lower(s.restore_target, abstract_batch, abstract_rng).compile()
  report: dict[str, Any] = {'compile_seconds': time.perf_counter() - start}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report['flops_per_device'] = float(cost.get('flops', 0.0)) if cost else 0.0
  memory = compiled.memory_analysis()
  for field in ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
                'temp_size_in_bytes', 'generated_code_size_in_bytes'):
    report[field] = int(getattr(memory, field, 0) or 0)
  # Donated state aliases its outputs: count those bytes once.
  report['peak_bytes_per_device'] = (report['argument_size_in_bytes'] +
                                     report['output_size_in_bytes'] -
                                     report['alias_size_in_bytes'] +
                                     report['temp_size_in_bytes'])
  if device_memory_bytes:
    report['device_memory_bytes'] = device_memory_bytes
    report['fits'] = report['peak_bytes_per_device'] <= device_memory_bytes
  return report


def format_report(report: dict[str, Any]) -> str:
  gib = 2**30
  lines = [f'compiled in {report["compile_seconds"]:.1f} s',
           f'FLOPs per step per device: {report["flops_per_device"] / 1e9:.2f} GFLOP']
  for field in ('argument', 'output', 'alias', 'temp'):
    lines.append(f'{field} bytes per device: {report[field + "_size_in_bytes"] / gib:.3f} GiB')
  lines.append(f'peak per device (arguments + outputs - aliased + temporaries): '
               f'{report["peak_bytes_per_device"] / gib:.3f} GiB')
  if 'fits' in report:
    verdict = 'fits' if report['fits'] else 'DOES NOT FIT'
    lines.append(f'{verdict} in {report["device_memory_bytes"] / gib:.1f} GiB per device')
  return '\n'.join(lines)


class Grids:
  """The periodic image grids of a run: samples, and reconstructions of fixed evaluation
  images for families that encode."""

  def __init__(self, s: Setup, workdir: str):
    config = s.config
    self.directory = paths.workdir_path(workdir) / SAMPLES_DIR
    self.sample = (jit_sample(s, config.num_sample_images) if s.objective.sample else None)
    self.reconstruct, self.originals = None, None
    if s.objective.encode is not None:
      images = pipeline.load_images(config.data, config.data.eval_split, config.num_sample_images)
      self.originals = np.asarray(jax.device_get(objectives.to_uint8(images)))
      self.reconstruct = jit_reconstruct(s, images)

  def write(self, state, rng, step: int, writer: metrics.MetricWriter) -> list[epath.Path]:
    grids = {}
    if self.sample:
      grids[f'step_{step:07d}.png'] = ('samples', metrics.image_grid(self.sample(state, rng)))
    if self.reconstruct:
      grids[f'reconstructions_step_{step:07d}.png'] = (
          'reconstructions', paired_grid(self.originals, self.reconstruct(state)))
    written = []
    for filename, (tag, grid) in grids.items():
      path = self.directory / filename
      if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics.save_png(path, grid)
        writer.write_image(step, tag, grid)
      written.append(path)
    return written


def _flat(tree: Any, separator: str = '/') -> dict[str, Any]:
  return {jax.tree_util.keystr(path, simple=True, separator=separator): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_same_state(s: Setup, ckpt: checkpoint.Checkpointer, step: int) -> None:
  """Refuse (before touching anything) a workdir whose checkpoints hold another model."""
  saved_config = ckpt.restore_config(step)
  where = f'{ckpt.directory} holds checkpoints (step {step})'
  try:
    saved = _flat(jax.eval_shape(registry.build_objective(saved_config).init,
                                 jax.random.key(0)))
  except (KeyError, ValueError, AttributeError) as e:  # a config from an older jaxgen
    logging.warning('%s whose saved config cannot be rebuilt (%s); restoring by shape', where, e)
    return
  here = _flat(s.abstract_state)
  if {k: (v.shape, v.dtype) for k, v in saved.items()} == {
      k: (v.shape, v.dtype) for k, v in here.items()}:
    return
  first = next(k for k in sorted(saved.keys() | here.keys(),
                                 key=lambda k: (not k.startswith('params'), k))
               if k not in saved or k not in here or saved[k].shape != here[k].shape or
               saved[k].dtype != here[k].dtype)
  def describe(leaves):
    return f'{leaves[first].shape} {leaves[first].dtype}' if first in leaves else 'absent'
  old_fields, new_fields = (_flat(c.to_dict(), '.') for c in (saved_config, s.config))
  changed = [f'{k}={old_fields.get(k)!r} there, {new_fields.get(k)!r} here'
             for k in sorted(old_fields.keys() | new_fields.keys())
             if old_fields.get(k) != new_fields.get(k)][:6]
  raise validate.ConfigError(
      f'{where} of a different model: {first} is {describe(saved)} there but '
      f'{describe(here)} with this config (differing fields: {"; ".join(changed)}). Use a new '
      '--workdir, or the config that wrote it; nothing in the workdir was changed')


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
  s = setup(config)
  # A missing or empty dataset fails here, before the workdir is even created.
  dataset = pipeline.make_dataset(config.data, config.global_batch_size, config.seed)
  data_iter = pipeline.make_iterator(dataset, config.data.num_threads)
  with workdir_lock.WorkdirLock(workdir) as lock:  # before anything in the workdir is touched
    return _train(s, workdir, stop_at_step, lock, data_iter)


def _train(s: Setup, workdir: str, stop_at_step: int | None, lock: workdir_lock.WorkdirLock,
           data_iter) -> Any:
  config = s.config
  is_chief = jax.process_index() == 0
  root_rng = jax.random.key(config.seed)
  init_rng, train_rng, sample_rng = jax.random.split(root_rng, 3)

  ckpt = checkpoint.Checkpointer(workdir, every=config.checkpoint_every,
                                 keep=config.keep_checkpoints,
                                 use_async=config.async_checkpointing)
  with jax.set_mesh(s.mesh):
    latest, state = ckpt.restore_newest(s.restore_target, data_iter,
                                        check=lambda step: check_same_state(s, ckpt, step))
    if latest is not None:
      logging.info('Resumed from %s at step %d', ckpt.directory, latest)
      if is_chief:
        metrics.print_line(f'resumed from checkpoint at step {latest}')
    else:
      state = init_state(s, init_rng)
    # Read the first batch before writing anything: bad data fails with the workdir untouched.
    first_batch = next(data_iter)
    lock.record_holder()
    start_step = int(jax.device_get(state['step']))
    writer = metrics.MetricWriter(workdir, enabled=is_chief, resume_step=latest)
    if is_chief:
      params = s.objective.sample_params(s.abstract_state)
      metrics.print_line(f'{config.objective}: {state_lib.count_params(params) / 1e6:.2f}M '
                         f'parameters; mesh {dict(s.mesh.shape)}; global batch '
                         f'{config.global_batch_size}; workdir {paths.workdir_path(workdir)}')

    train_step = jit_train_step(s)
    grids = Grids(s, workdir)
    accumulator = metrics.Accumulator()
    stop_on_nonfinite = config.nonfinite_policy == 'stop'
    unchecked = []  # (step, metrics) on device since the last non-finite check
    progress = metrics.Progress(start_step, config.total_steps, config.global_batch_size)
    compile_start = time.perf_counter()
    preempted, watcher, done = False, preemption.Watcher(), start_step
    try:
      for step in range(start_step, config.total_steps):
        local, first_batch = first_batch or next(data_iter), None
        batch = pipeline.global_batch(local, s.batch_sharding)
        state, step_metrics = train_step(state, batch, jax.random.fold_in(train_rng, step))
        accumulator.add(step_metrics)
        done = step + 1
        preempted = watcher.reached(done)
        last = preempted or done in (config.total_steps, stop_at_step)
        if stop_on_nonfinite:
          unchecked.append((done, step_metrics))
          if done % config.log_every == 0 or done % config.checkpoint_every == 0 or last:
            _stop_if_nonfinite(unchecked, ckpt)
            unchecked = []
        if step == start_step:
          jax.block_until_ready(state)
          logging.info('First step (compile + run) took %.1fs', time.perf_counter() - compile_start)
          progress = metrics.Progress(done, config.total_steps, config.global_batch_size)
        if done % config.log_every == 0 or done == config.total_steps:
          scalars = accumulator.flush()
          rates = progress.rates(done)
          if rates:
            scalars.update(rates)
            if is_chief:
              metrics.print_line(progress.line(done, scalars, rates))
          writer.write_scalars(done, scalars)
        if config.sample_every and (done % config.sample_every == 0 or done == config.total_steps):
          written = grids.write(state, jax.random.fold_in(sample_rng, done), done, writer)
          if is_chief:
            metrics.print_line('grids: ' + ', '.join(map(str, written)))
        ckpt.save(done, state, data_iter, config, force=last)
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
    if preempted and is_chief:
      metrics.print_line(f'{watcher.signal_name}: stopped after step {done} and saved its '
                         f'checkpoint in {ckpt.directory}; rerun the same command to resume')
    ckpt.close()
    writer.close()
    multihost_utils.sync_global_devices('jaxgen_train_done')
  return state
