"""Preemption: on SIGTERM (or Ctrl-C) the trainer finishes its step, saves, and exits 0.

One process: Python handlers for SIGTERM and SIGINT set a flag that the loop reads after
each step; a second Ctrl-C interrupts at once. Several processes: JAX's preemption sync
manager (started by jax.distributed.initialize) catches SIGTERM on any process and
`multihost_utils.reached_preemption_sync_point` makes every process agree on the step at
which to save (Python must not install its own SIGTERM handler there, or the notice would
never reach the manager).
"""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils


class Watcher:
  """`reached(step)`: whether the run should save at `step` and stop."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}
    self._multiprocess = jax.process_count() > 1
    signals = [signal.SIGINT] if self._multiprocess else [signal.SIGTERM, signal.SIGINT]
    for signum in signals:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (e.g. a notebook's worker): no handlers
        pass

  def _handle(self, signum, frame) -> None:
    self.signal_name = signal.Signals(signum).name
    # A second Ctrl-C stops at once, as users expect.
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def reached(self, step: int) -> bool:
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'SIGTERM'
        return True
      if self.signal_name == 'SIGINT':
        # Ctrl-C on one process cannot be agreed on without a sync every step.
        raise KeyboardInterrupt
      return False
    return self.signal_name is not None

  def close(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
