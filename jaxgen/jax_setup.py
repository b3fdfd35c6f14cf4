"""JAX process set-up with plain arguments: devices, the compilation cache, multi-process.

The command-line programs call it with their flags (jaxgen/runtime.py); a notebook calls it
directly, before anything touches a JAX device.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import sys

import jax

DEFAULT_CACHE_DIR = '~/.cache/jaxgen/xla'


def configure_jax(*, num_cpu_devices: int | None = None,
                  compilation_cache_dir: str | None = DEFAULT_CACHE_DIR,
                  coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, distributed_timeout_s: int = 300) -> None:
  """Set CPU devices (default: one per core; ignored on TPU/GPU), JAX's persistent
  compilation cache ('' or None: off; JAX_COMPILATION_CACHE_DIR wins), and join a
  multi-process job (explicitly, or as SLURM / a multi-host Cloud TPU says). On CPU it
  also makes glibc keep the memory XLA frees (`keep_freed_host_memory`), unless tcmalloc
  serves it (preloaded: README, "Host memory")."""
  if runs_on_cpu():
    keep_freed_host_memory()
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


def runs_on_cpu() -> bool:
  """Whether JAX will pick the CPU: JAX_PLATFORMS says so, or no accelerator plugin (a PJRT
  plugin such as CUDA's, or libtpu) is installed."""
  platforms = os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  return not (importlib.metadata.entry_points(group='jax_plugins') or
              importlib.util.find_spec('libtpu'))


# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
  """Serve XLA's CPU buffers from one glibc heap that keeps what is freed, so each step
  reuses the pages of the last one. Must run before JAX starts its device threads.

  On CPU every execution mallocs its temporary and output buffers (the demo's train step:
  151 MB per device) on the device's thread. glibc serves a block that size with a fresh
  mmap (a thread's arena heap holds at most 64 MB) and unmaps it on free, so every step
  faulted its pages in again: 74,000 minor faults and 21% of the CPU time in the kernel
  per demo step, 300,000 and 14-35% per DDPM CIFAR-10 step at batch 8. One arena (threads
  share the main heap), no mmap and no trimming keep those pages mapped: 14 and 72 faults
  per step, 0.2-0.3% system time. The process keeps its peak heap until it exits, which a
  training or sampling job reaches every step anyway.
  Returns whether glibc took all three settings (False elsewhere: macOS, musl; and when
  tcmalloc is preloaded, which keeps freed memory itself).

  One arena costs speed, though (all threads share its lock and its free lists): after an
  XLA compile in the same process the demo's step ran ~1.2x slower than after loading the
  same executable from the compilation cache, and the DDPM CIFAR-10 step compiled in 22.3 s
  against 12.9 s with tcmalloc (alternating runs on a 2-core Intel Xeon; README, "Host
  memory"). The Makefile therefore preloads tcmalloc; this is the fallback."""
  if not sys.platform.startswith('linux') or 'tcmalloc' in os.environ.get('LD_PRELOAD', ''):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  # A trim threshold of -1 is SIZE_MAX to glibc: the top of the heap is never given back.
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
  return all([mallopt(param, value) == 1 for param, value in settings])  # each one tried
