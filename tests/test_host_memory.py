"""The host memory XLA frees on CPU is kept, so a step does not fault its buffers in again:
by glibc with jax_setup.keep_freed_host_memory, or by tcmalloc (which the Makefile preloads,
and which keeps it anyway)."""

import functools
import os
import subprocess
import sys

import pytest

from conftest import REPO
from jaxgen import runtime

TCMALLOC = [path for path in [runtime.tcmalloc_path()] if path]

# Two devices, each with a 64 MiB output (and temporaries) per call: above the 64 MiB a
# glibc thread arena holds, so by default each call maps fresh pages for them.
SCRIPT = r"""
import resource, sys
import jax, jax.numpy as jnp
from jaxgen import jax_setup
if sys.argv[1] == 'keep':  # as every program does (the suite runs with JAX_PLATFORMS=cpu)
  assert jax_setup.runs_on_cpu()
  jax_setup.configure_jax(num_cpu_devices=2, compilation_cache_dir=None)
else:
  jax.config.update('jax_num_cpu_devices', 2)
sharding = jax.sharding.NamedSharding(jax.make_mesh((2,), ('d',)), jax.sharding.PartitionSpec('d'))
x = jax.device_put(jnp.ones((2, 2**24), jnp.float32), sharding)
f = jax.jit(lambda x: jnp.cumsum(jnp.exp(x), axis=1) * 2)
f(x).block_until_ready()
faults = []
for _ in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


@functools.cache  # the glibc default is measured once for both tests
def faults_per_call(mode: str, preload: str = '') -> float:
  """The fewest page faults of 8 calls: on a loaded machine XLA may free one call's
  buffers only after the next has allocated its own, so a call now and then grows the
  heap (a CI run measured 10,486 faults per call on average with the setting); the point is
  that calls that find their memory free do not fault it in again."""
  env = {**os.environ, 'LD_PRELOAD': preload}  # '': glibc's malloc, whatever the suite runs on
  proc = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                        cwd=REPO, timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return float(proc.stdout.split()[-1])


def test_freed_host_memory_is_reused_by_the_next_call():
  churn, kept = faults_per_call('default'), faults_per_call('keep')
  assert churn > 32_768, churn  # the 128 MiB of outputs, page by page, on every call
  assert kept < churn / 8, (kept, churn)


@pytest.mark.skipif(not TCMALLOC, reason='tcmalloc is not installed (scripts/get_tcmalloc.sh)')
def test_tcmalloc_keeps_freed_host_memory_without_the_glibc_settings():
  churn, kept = faults_per_call('default'), faults_per_call('default', TCMALLOC[0])
  assert kept < churn / 8, (kept, churn)


RERUN = """
import os, sys
from jaxgen import runtime
runtime.rerun_with_tcmalloc()
with open('/proc/self/maps') as f:
  print('tcmalloc' in f.read(), repr(os.environ.get('LD_PRELOAD')), sys.argv[1:], sep='|')
"""


@pytest.mark.skipif(not TCMALLOC, reason='tcmalloc is not installed (scripts/get_tcmalloc.sh)')
@pytest.mark.parametrize('preload', [None, ''])
def test_a_program_started_without_ld_preload_restarts_itself_on_tcmalloc(preload):
  """As `make` runs them, with its arguments; LD_PRELOAD set (even empty) is left alone."""
  env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'JAXGEN_PRELOADED')}
  if preload is not None:
    env['LD_PRELOAD'] = preload
  out = subprocess.run([sys.executable, '-c', RERUN, 'a', '--b=c'], env=env, check=True,
                       capture_output=True, text=True).stdout.strip().split('|')
  if preload is None:
    assert out == ['True', repr(TCMALLOC[0]), "['a', '--b=c']"]
  else:
    assert out == ['False', "''", "['a', '--b=c']"]
