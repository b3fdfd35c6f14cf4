"""One trainer per workdir: an exclusive lock held while `jaxgen-train` runs.

Two trainers in one workdir would interleave their checkpoints, and the second one's
orbax start-up would delete the first one's in-progress save. The lock is an `flock` on
`<workdir>/.jaxgen-train.lock`, taken by process 0 before anything in the workdir is read or
written. The kernel drops it when the process ends in any way (kill -9 included), so a
crashed run never leaves a stale lock behind; the file only names the last holder.

Object stores (gs://) have no such lock: there the check is skipped with a warning.
Readers (jaxgen-eval --watch, jaxgen-sample) do not lock: they may run beside a trainer.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxgen import paths

LOCK_FILE = '.jaxgen-train.lock'


class WorkdirLocked(RuntimeError):
  """Another trainer holds the workdir."""


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for this trainer (all its processes)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._fd: int | None = None

  def __enter__(self) -> WorkdirLock:
    error = self._acquire() if jax.process_index() == 0 else None
    if jax.process_count() > 1:  # every process learns whether process 0 got it
      got = multihost_utils.broadcast_one_to_all(np.int32(error is None))
      if not int(got):
        raise WorkdirLocked(error or f'{paths.workdir_path(self.workdir)} is used by another '
                            'trainer (see the error of process 0)')
    elif error:
      raise WorkdirLocked(error)
    return self

  def _acquire(self) -> str | None:
    if paths.is_remote(self.workdir):
      logging.warning('%s: no lock against a second trainer on an object store; make sure '
                      'only one jaxgen-train uses it', self.workdir)
      return None
    directory = paths.workdir_path(self.workdir)
    directory.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fspath(directory), LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(os.read(fd, 4096))
      os.close(fd)
      return (f'{directory} is in use by another jaxgen-train ({holder}); wait for it to end '
              'or stop it, or use another --workdir. Nothing in the workdir was changed')
    self._fd = fd
    return None

  def record_holder(self) -> None:
    """Name this trainer in the lock file, for the error of a second one. Called once the
    run has started, so that a refused run (e.g. another model's workdir) changes no file."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.pwrite(self._fd, json.dumps({'host': socket.gethostname(), 'pid': os.getpid(),
                                      'since': time.strftime('%Y-%m-%d %H:%M:%S')}).encode(), 0)

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the flock
      self._fd = None


def _describe(content: bytes) -> str:
  try:
    holder = json.loads(content)
    return f'pid {holder["pid"]} on {holder["host"]}, since {holder["since"]}'
  except (ValueError, KeyError, TypeError):
    return 'holder unknown'
