"""orbax CheckpointManager holding train state, data-iterator state and config together."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxgen import metrics, packing, paths, validate

CHECKPOINT_DIR = 'checkpoints'
SNAPSHOT_DIR = 'snapshots'  # series kept beside the checkpoints (posthoc_ema.py)
UNREADABLE_DIR = 'unreadable_checkpoints'
ARRAYS_ITEM, LAYOUT_ITEM = 'arrays', 'layout'  # packed checkpoints; older ones hold `state`


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be written or read; the message says what is still intact."""


def cause(error: BaseException) -> str:
  """The useful part of an orbax/tensorstore error: the OS error, else the innermost status
  (e.g. 'OUT_OF_RANGE: ... not valid for value of size 100'), else its first line."""
  chain, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in chain:
    if isinstance(e, OSError) and e.strerror:
      return e.strerror
    os_error = re.search(r':\s*([^:\[\]]+?)\s*\[os_error_code', str(e))
    if os_error:
      return os_error.group(1)
  for e in reversed(chain):
    status = re.search(r'\b[A-Z_]{5,}: .*', str(e))
    if status:
      return status.group(0).splitlines()[0][:300]
  text = str(chain[0]).split(' See full TensorStore details')[0].strip()
  return (text.splitlines()[0] if text else type(chain[0]).__name__)[:300]


def _to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json())


# orbax splits every replicated array across its replicas so that each device writes a
# slice ("replica-parallel"): one device-side slice per array per replica. For small arrays
# that is pure overhead (4,000 slices and 1.7 s of host time per save of the tiny test
# model on 8 CPU devices); only arrays whose per-replica slice is at least this big are
# split, the rest are written whole by one replica.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _use_replica_parallel_for_large_arrays_only() -> None:
  handler = ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES)
  ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)



# One thread runs the background saves of every Checkpointer, in the order they were asked
# for: orbax's save() is not safe to run on two threads at once (its signals between the
# steps of a save are numbered per process), and the train state and the EMA snapshots save
# together. A standing thread, as starting one per save held the loop for milliseconds: the
# new thread takes the GIL before the loop gets it back.
_SAVER: concurrent.futures.ThreadPoolExecutor | None = None
_GATE: threading.Event | None = None  # set inside `start_together`: saves wait for its end


def _saver() -> concurrent.futures.ThreadPoolExecutor:
  global _SAVER
  if _SAVER is None:
    _SAVER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='jaxgen-save')
  return _SAVER


def _after(gate: threading.Event | None, save: Callable[[], Any]) -> Any:
  if gate is not None:
    gate.wait()
  return save()


@contextlib.contextmanager
def start_together():
  """Background saves asked for inside this start when it ends. Else the first one's orbax
  work holds the GIL against the packing of the next: the EMA snapshots' save held the loop
  3.0-3.2 ms instead of 1.5-1.8 ms (the demo, tcmalloc, alternating runs on a 2-core Intel
  Xeon)."""
  global _GATE
  previous, gate = _GATE, threading.Event()
  _GATE = gate
  try:
    yield
  finally:
    _GATE = previous
    gate.set()


class Checkpointer:
  """Saves every `every` steps (async), keeps the newest `keep`, restores the latest."""

  def __init__(self, workdir: str, *, every: int = 1, keep: int | None = None,
               use_async: bool = True, read_only: bool = False, subdir: str = CHECKPOINT_DIR):
    """`read_only` is for readers of a run that may still be training (sample, eval): they
    never create directories or clean up the trainer's in-progress saves. `subdir`: where in
    the workdir (another name for other series, e.g. power-EMA snapshots)."""
    _use_replica_parallel_for_large_arrays_only()
    self.directory = paths.workdir_path(workdir) / subdir
    self._pending: int | None = None  # the step of an async save not yet known to be complete
    self._size, self._sized = 0, None  # bytes of a checkpoint of this run, and its step
    self._background = use_async and not read_only and jax.process_count() == 1
    self._saving: concurrent.futures.Future | None = None  # the save on the saver thread
    self._gate: threading.Event | None = None  # what holds that save back, if anything
    self._packed: tuple | None = None  # what the last save packed, for `within`
    self._prepared: tuple | None = None  # (step, treedef, pack_for_reuse's result): `prepare`
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=use_async,
        cleanup_tmp_directories=not read_only, create=not read_only, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """Complete checkpoints on disk now (re-read, so a reader sees a trainer's new saves)."""
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def prepare(self, step: int, state: Any, *, force: bool = False) -> None:
    """Dispatches, without waiting, the packed copy that `save(step, state, ...)` would
    make. The loop calls it right after dispatching the step, so the copy queues behind the
    step on the devices; made in `save`, after the loop's checks have waited for the step,
    it ran while the devices idled. `save` takes it when given the same state's leaves;
    otherwise it is dropped."""
    self._prepared = None
    if self._background and (force or self.manager.should_save(step)):
      self._prepared = (step, jax.tree_util.tree_structure(state), packing.pack_for_reuse(state))

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None,
           config: ml_collections.ConfigDict, *, force: bool = False,
           within: Checkpointer | None = None) -> bool:
    """Saves `state` at `step` (async where it can); False when this is no step to save.
    `within`: a Checkpointer that has just saved a state holding `state`'s leaves (the EMA
    snapshots are part of the train state): `state` is then saved from slices of that save's
    packed copy, taken on the saver thread, instead of being copied again here."""
    self._packed = None
    prepared, self._prepared = self._prepared, None
    if not force and not self.manager.should_save(step):
      return False
    self._join()
    if step in self.manager.all_steps():
      return False  # saved before a crash and recomputed since: resumes are exact
    self._check_space(step)
    derived = within and packing.derive(within._packed, state)
    if derived:
      layout, make_arrays = derived
      within._packed = None  # the saves free the copy: not the loop, at its next save
    else:
      if (prepared and prepared[:2] == (step, jax.tree_util.tree_structure(state))
          and packing.same_leaves(prepared[2][2][0], state)):
        arrays, layout, self._packed = prepared[2]
      else:
        arrays, layout, self._packed = packing.pack_for_reuse(state)
      make_arrays = lambda: arrays  # noqa: E731
    items = {}
    if data_iterator is not None:
      # Every process iterates the same global sequence of batches (see data/pipeline.py),
      # so one JSON position serves any number of processes; grain's own per-process
      # files would tie the checkpoint to the process count.
      items['data'] = ocp.args.JsonSave(data_iterator.get_state())
    # Built where the save runs (the saver thread, mostly): the config's JSON and the slices
    # of `within`'s copy are host work the loop need not wait for.
    args = lambda: ocp.args.Composite(**items, **{  # noqa: E731
        ARRAYS_ITEM: ocp.args.StandardSave(make_arrays()), LAYOUT_ITEM: ocp.args.JsonSave(layout),
        'config': ocp.args.JsonSave(_to_json(config))})
    if self._background and (derived or not any(isinstance(x, jax.Array)
                                                for x in arrays.get('plain', {}).values())):
      # Every array saved is a copy `pack` made, which the next steps cannot donate: orbax's
      # own host work (~20 ms for the demo) runs beside them. One process only: orbax's
      # barriers are device computations, which must not interleave with the steps'.
      self._gate = _GATE
      self._saving = _saver().submit(
          _after, _GATE, functools.partial(self._save_and_free, step, args, force))
      self._pending = step
      return True
    try:
      saved = self.manager.save(step, args=args(), force=force)
    except Exception as e:  # noqa: BLE001  (a failed async save surfaces at the next save)
      self._failed(self._pending or step, e)
    self._pending = step if saved else self._pending
    return saved

  def _save_and_free(self, step: int, args: Callable[[], Any], force: bool) -> bool:
    try:
      return self.manager.save(step, args=args(), force=force)
    finally:
      # Freeing the packed copy here, not in the loop's next save, took ~1.2 ms off that
      # save's hold for the demo. `within` finds None and packs anew: always correct.
      self._packed = None

  def _join(self) -> None:
    """Waits for this Checkpointer's save on the saver thread; raises its error, if any."""
    if self._saving is not None:
      if self._gate is not None:  # held back inside `start_together`: start it now
        self._gate.set()
      saving, self._saving = self._saving, None
      error = saving.exception()
      if error is not None:
        self._failed(self._pending, error)

  def restore(self, step: int, target: Any, data_iterator: grain.DatasetIterator | None = None
              ) -> Any:
    """State restored onto `target` (ShapeDtypeStructs with shardings); iterator in place."""
    packed = (self.directory / str(step) / LAYOUT_ITEM).exists()
    if packed:
      layout = self.manager.restore(step, args=ocp.args.Composite(
          **{LAYOUT_ITEM: ocp.args.JsonRestore()}))[LAYOUT_ITEM]
      items = {ARRAYS_ITEM: ocp.args.StandardRestore(packing.restore_target(layout, target))}
    else:  # written before checkpoints were packed
      items = {'state': ocp.args.StandardRestore(target)}
    if data_iterator is not None:
      items['data'] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if data_iterator is not None:
      data_iterator.set_state(restored['data'])
    return packing.unpack(restored[ARRAYS_ITEM], layout, target) if packed else restored['state']

  def restore_newest(self, target: Any, data_iterator: grain.DatasetIterator | None = None,
                     check: Callable[[int], None] | None = None) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that reads back, or (None, None) if none exist.

    `check(step)` runs first and its errors (e.g. another model's checkpoint) propagate. A
    checkpoint that fails to read (truncated, deleted files) is skipped with a warning; once a
    readable older one is found the unreadable newer ones are moved to `unreadable_checkpoints/`
    (kept, not deleted) so training can save those steps again. If none reads, nothing moves.
    """
    unreadable = []
    for step in reversed(self.all_steps()):
      try:  # a config that cannot be read fails inside `check`, and counts as unreadable
        if check is not None:
          check(step)
        state = self.restore(step, target, data_iterator)
      except Exception as e:  # noqa: BLE001  (tensorstore raises bare Exception)
        if isinstance(e, validate.ConfigError):  # another model: refuse, not skip
          raise
        logging.warning('checkpoint %d in %s is unreadable: %s', step, self.directory, cause(e))
        unreadable.append((step, cause(e)))
        continue
      if unreadable:
        aside = self.directory.parent / UNREADABLE_DIR
        if jax.process_index() == 0:
          aside.mkdir(parents=True, exist_ok=True)
          for bad, _ in unreadable:
            (self.directory / str(bad)).rename(aside / f'{bad}.{time.strftime("%Y%m%d-%H%M%S")}')
        multihost_utils.sync_global_devices('jaxgen_unreadable_checkpoints_moved')
        self.manager.reload()
        if jax.process_index() == 0:
          metrics.print_line(
            f'warning: checkpoint(s) {[b for b, _ in unreadable]} in {self.directory} are '
            f'unreadable ({unreadable[0][1]}); moved to {aside}; resuming from step {step}')
      return step, state
    if unreadable:
      raise CheckpointError(
          f'no checkpoint in {self.directory} can be read (step {unreadable[0][0]}: '
          f'{unreadable[0][1]}; {len(unreadable)} tried). Nothing was changed: restore the '
          'directory from a backup, or move it away to start from scratch')
    return None, None

  def check_compatible(self, step: int, abstract_state: Any, config: ml_collections.ConfigDict,
                       abstract_state_of: Callable[[ml_collections.ConfigDict], Any]) -> None:
    """Refuse (ConfigError, before anything is touched) a checkpoint at `step` whose state
    differs in any path, shape or dtype from `abstract_state`, the one `config` builds:
    another model's. `abstract_state_of(saved_config)` builds the state of the saved one."""
    saved_config = self.restore_config(step)
    where = f'{self.directory} holds checkpoints (step {step})'
    try:
      saved = packing.flat(abstract_state_of(saved_config))
    except (KeyError, ValueError, AttributeError) as e:  # a config from an older jaxgen
      logging.warning('%s whose saved config cannot be rebuilt (%s); restoring by shape', where,
                      e)
      return
    here = packing.flat(abstract_state)
    layout = lambda leaves: {k: (v.shape, v.dtype) for k, v in leaves.items()}
    if layout(saved) == layout(here):
      return
    first = next(k for k in sorted(saved.keys() | here.keys(),
                                   key=lambda k: (not k.startswith('params'), k))
                 if k not in saved or k not in here or saved[k].shape != here[k].shape or
                 saved[k].dtype != here[k].dtype)

    def describe(leaves):
      return f'{leaves[first].shape} {leaves[first].dtype}' if first in leaves else 'absent'
    old_fields, new_fields = (packing.flat(c.to_dict(), '.') for c in (saved_config, config))
    changed = [f'{k}={old_fields.get(k)!r} there, {new_fields.get(k)!r} here'
               for k in sorted(old_fields.keys() | new_fields.keys())
               if old_fields.get(k) != new_fields.get(k)][:6]
    raise validate.ConfigError(
        f'{where} of a different model: {first} is {describe(saved)} there but '
        f'{describe(here)} with this config (differing fields: {"; ".join(changed)}). Use a '
        'new --workdir, or the config that wrote it; nothing in the workdir was changed')

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored['config'])

  def wait(self) -> None:
    self._join()
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._failed(self._pending, e)
    self._pending = None

  def _check_space(self, step: int) -> None:
    """Refuse, before orbax writes a byte, a save that cannot fit: a new checkpoint needs about
    the size of the others (old ones are deleted only after it completes), measured once per
    run on the newest (the state's structure is fixed). Process 0 measures the (shared)
    directory and every process gets its answer, so all stop together.
    Object stores have no free space to measure: a failed save there is reported by
    `_failed`."""
    if paths.is_remote(self.directory):
      return
    self.wait()  # orbax waits for the previous save before a new one anyway
    newest = self.manager.latest_step()
    if newest is None:
      return
    need = free = 0.0
    if self._sized is None:
      self._sized = newest
      if jax.process_index() == 0:
        self._size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in
                         os.walk(os.fspath(self.directory / str(newest))) for name in names)
    if jax.process_index() == 0:
      need, free = 1.1 * self._size, float(shutil.disk_usage(self.directory).free)
    if jax.process_count() > 1:
      need, free = (float(v) for v in multihost_utils.broadcast_one_to_all(
          np.array([need, free], np.float32)))
    if free < need:
      raise CheckpointError(
          f'no space to save the checkpoint of step {step} in {self.directory}: it needs about '
          f'{need / 1.1 / 2**20:.1f} MiB (the size of checkpoint {self._sized}) and '
          f'{free / 2**20:.1f} MiB are free. The newest complete checkpoint is step {newest} '
          '(intact). Free space, then rerun the same command to resume')

  def _failed(self, step: int | None, error: BaseException) -> None:
    """A save failed (full disk, lost bucket access): clean up and say what is intact."""
    if jax.process_index() == 0:
      for tmp in self.directory.glob('*.orbax-checkpoint-tmp*'):  # our half-written save
        try:
          tmp.rmtree()
        except OSError:
          pass
    try:
      self.manager.reload()
      intact = self.manager.latest_step()
      self.manager.close()
    except Exception:  # noqa: BLE001  (the message below is what matters)
      intact = 'unknown'
    raise CheckpointError(
        f'saving the checkpoint of step {step} in {self.directory} failed: {cause(error)}. '
        f'The newest complete checkpoint is {"none" if intact is None else f"step {intact}"}'
        ' (intact; the half-written one was removed). Free space or fix the storage, then rerun '
        'the same command to resume') from error

  def close(self) -> None:
    self._join()  # a background save that failed is reported, not dropped
    self.manager.close()
