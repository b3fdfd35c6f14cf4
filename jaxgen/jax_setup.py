"""JAX process set-up with plain arguments: devices, the compilation cache, multi-process.

The command-line programs call it with their flags (jaxgen/runtime.py); a notebook calls it
directly, before anything touches a JAX device.
"""

from __future__ import annotations

import os

import jax

DEFAULT_CACHE_DIR = '~/.cache/jaxgen/xla'


def configure_jax(*, num_cpu_devices: int | None = None,
                  compilation_cache_dir: str | None = DEFAULT_CACHE_DIR,
                  coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, distributed_timeout_s: int = 300) -> None:
  """Set CPU devices (default: one per core; ignored on TPU/GPU), JAX's persistent
  compilation cache ('' or None: off; JAX_COMPILATION_CACHE_DIR wins), and join a
  multi-process job (explicitly, or as SLURM / a multi-host Cloud TPU says)."""
  if compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    cache = compilation_cache_dir
    jax.config.update('jax_compilation_cache_dir',
                      cache if cache.startswith(('gs://', 's3://')) else os.path.expanduser(cache))
    if jax.config.jax_compilation_cache_max_size < 0:  # unbounded by default: keep the newest
      jax.config.update('jax_compilation_cache_max_size', 4 * 2**30)  # 4 GiB
  # On CPU, XLA uses the cores better with the batch sharded one device per core.
  jax.config.update('jax_num_cpu_devices', num_cpu_devices or os.cpu_count() or 1)
  timeouts = {'initialization_timeout': distributed_timeout_s,
              'heartbeat_timeout_seconds': distributed_timeout_s}
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **timeouts)
  elif (int(os.environ.get('SLURM_NTASKS', '1')) > 1 or
        len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1):
    jax.distributed.initialize(**timeouts)  # auto-detects SLURM / multi-host Cloud TPU
