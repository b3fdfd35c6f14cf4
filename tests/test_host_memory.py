"""glibc keeps the host memory XLA frees on CPU, so a step does not fault its buffers in
again (jax_setup.keep_freed_host_memory)."""

import subprocess
import sys

from conftest import REPO

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


def faults_per_call(mode: str) -> float:
  """The fewest page faults of 8 calls: on a loaded machine XLA may free one call's
  buffers only after the next has allocated its own, so a call now and then grows the
  heap (a CI run measured 10,486 faults per call on average with the setting); the point is
  that calls that find their memory free do not fault it in again."""
  proc = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                        cwd=REPO, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return float(proc.stdout.split()[-1])


def test_freed_host_memory_is_reused_by_the_next_call():
  churn, kept = faults_per_call('default'), faults_per_call('keep')
  assert churn > 32_768, churn  # the 128 MiB of outputs, page by page, on every call
  assert kept < churn / 8, (kept, churn)
