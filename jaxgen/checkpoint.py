"""orbax CheckpointManager holding train state, data-iterator state and config together."""

from __future__ import annotations

import json
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp

from jaxgen import paths

CHECKPOINT_DIR = 'checkpoints'


def _to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json())


class Checkpointer:
  """Saves every `every` steps (async), keeps the newest `keep`, restores the latest."""

  def __init__(self, workdir: str, *, every: int = 1, keep: int | None = None,
               use_async: bool = True, read_only: bool = False):
    """`read_only` is for readers of a run that may still be training (sample, eval): they
    never create directories or clean up the trainer's in-progress saves."""
    self.directory = paths.workdir_path(workdir) / CHECKPOINT_DIR
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

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None,
           config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
    if not force and not self.manager.should_save(step):
      return False
    items = {'state': ocp.args.StandardSave(state),
             'config': ocp.args.JsonSave(_to_json(config))}
    if data_iterator is not None:
      # Every process iterates the same global sequence of batches (see data/pipeline.py),
      # so one JSON position serves any number of processes; grain's own per-process
      # files would tie the checkpoint to the process count.
      items['data'] = ocp.args.JsonSave(data_iterator.get_state())
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, target: Any, data_iterator: grain.DatasetIterator | None = None
              ) -> Any:
    """State restored onto `target` (ShapeDtypeStructs with shardings); iterator in place."""
    items = {'state': ocp.args.StandardRestore(target)}
    if data_iterator is not None:
      items['data'] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if data_iterator is not None:
      data_iterator.set_state(restored['data'])
    return restored['state']

  def restore_config(self, step: int) -> ml_collections.ConfigDict:
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored['config'])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
