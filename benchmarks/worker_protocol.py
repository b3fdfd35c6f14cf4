"""The line protocol between benchmarks/vs_pytorch.py and its two workers (jaxgen's and
PyTorch's, in different venvs: this module imports nothing beyond the standard library).

After its warm-up a worker prints `ready {json}`; then `run N` runs N steps and answers
`time SECONDS`, and `quit` ends it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def serve(info: dict, run: Callable[[int], None]) -> None:
  """Announce `info`, then time `run(i)` (i counts from 1 over the whole session)."""
  print('ready ' + json.dumps(info), flush=True)
  i = 0
  for line in sys.stdin:
    command = line.split()
    if command[0] == 'quit':
      break
    start = time.perf_counter()
    for _ in range(int(command[1])):
      i += 1
      run(i)
    print(f'time {time.perf_counter() - start}', flush=True)
