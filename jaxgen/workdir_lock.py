"""One trainer per workdir: an exclusive lock held while `jaxgen-train` runs.

Two trainers in one workdir would interleave their checkpoints, and the second one's
orbax start-up would delete the first one's in-progress save. The lock is an `flock` on
`<workdir>/.jaxgen-train.lock`, taken by process 0 before anything in the workdir is read or
written. The kernel drops it when the process ends in any way (kill -9 included), so a
crashed run never leaves a stale lock behind; the file only names the last holder.

Object stores (gs://) have no flock. There process 0 holds a lease instead: the object
`<workdir>/jaxgen-train.lease.json` names it and carries a heartbeat it rewrites every
HEARTBEAT_SECONDS. A second trainer refuses while the heartbeat is younger than
LEASE_SECONDS; a killed trainer's lease expires after that. Two trainers starting in the
same second are told apart by writing, waiting SETTLE_SECONDS and reading back (Cloud
Storage reads its own writes): only the last writer goes on.

Readers (jaxgen-eval --watch, jaxgen-sample) do not lock: they may run beside a trainer.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from jaxgen import paths

LOCK_FILE = '.jaxgen-train.lock'
LEASE_FILE = 'jaxgen-train.lease.json'
LEASE_SECONDS = 120.0
HEARTBEAT_SECONDS = 30.0
SETTLE_SECONDS = 2.0


class WorkdirLocked(RuntimeError):
  """Another trainer holds the workdir."""


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for this trainer (all its processes)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._fd: int | None = None
    self._lease_path: epath.Path | None = None

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
      return self._lease()
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

  def _lease(self) -> str | None:
    path = paths.workdir_path(self.workdir) / LEASE_FILE
    holder = _read_lease(path)
    if holder is not None:
      age = time.time() - holder['heartbeat']
      if age < LEASE_SECONDS:
        return (f'{paths.workdir_path(self.workdir)} is in use by another jaxgen-train '
                f'({_describe_holder(holder)}, last heartbeat {age:.0f} s ago); wait for it to '
                f'end or stop it, or use another --workdir. A killed trainer\'s lease expires '
                f'{LEASE_SECONDS:.0f} s after its last heartbeat (or delete {path})')
      logging.warning('%s: taking over the lease of a trainer silent for %.0f s (%s)', path, age,
                      _describe_holder(holder))
    self._token = uuid.uuid4().hex
    self._lease_path = path
    self._write_lease()
    time.sleep(SETTLE_SECONDS)
    holder = _read_lease(path)
    if holder is None or holder['token'] != self._token:
      self._lease_path = None
      return (f'{paths.workdir_path(self.workdir)}: another jaxgen-train started at the same '
              f'moment and holds it ({_describe_holder(holder) if holder else "holder unknown"})')
    self._stop = threading.Event()
    self._heartbeat = threading.Thread(target=self._beat, daemon=True, name='jaxgen-lease')
    self._heartbeat.start()
    return None

  def _write_lease(self) -> None:
    self._lease_path.write_text(json.dumps({
        'host': socket.gethostname(), 'pid': os.getpid(), 'token': self._token,
        'since': time.strftime('%Y-%m-%d %H:%M:%S'), 'heartbeat': time.time()}))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._write_lease()
      except Exception as e:  # noqa: BLE001  (a flaky network: try again next beat)
        logging.warning('could not renew the workdir lease %s: %s', self._lease_path, e)

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
    if self._lease_path is not None:
      self._stop.set()
      self._heartbeat.join()
      holder = _read_lease(self._lease_path)
      if holder is not None and holder['token'] == self._token:
        self._lease_path.unlink(missing_ok=True)
      self._lease_path = None


def _describe_holder(holder: dict) -> str:
  return f'pid {holder["pid"]} on {holder["host"]}, since {holder["since"]}'


def _describe(content: bytes) -> str:
  try:
    return _describe_holder(json.loads(content))
  except (ValueError, KeyError, TypeError):
    return 'holder unknown'


def _read_lease(path: epath.Path, attempts: int = 3) -> dict | None:
  for attempt in range(attempts):
    try:
      holder = json.loads(path.read_text())
      float(holder['heartbeat']), str(holder['token']), _describe_holder(holder)
      return holder
    except FileNotFoundError:
      return None
    except (ValueError, KeyError, TypeError):
      if attempt + 1 < attempts:  # caught mid-rewrite by a store without atomic uploads
        time.sleep(0.2)
  logging.warning('%s is not a jaxgen lease; ignoring it', path)
  return None
