r"""Training-step throughput of a config, as a fraction of this machine's matmul peak.

  python benchmarks/train_step.py --config=configs/ddpm_cifar10.py --batch_size=8

Prints compile time, median step time, images/s and achieved FLOP/s (XLA's cost
analysis of the whole step) over the float32 matmul peak measured in the same run
(jnp.dot of two 4096x4096 matrices, best of several). On CPU the run defaults
to one simulated device per core with the batch sharded over them. Not a test:
speeds are only comparable side by side on one machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxgen import runtime  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
  """This program's flags (not defined on import: benchmarks/vs_pytorch.py imports it)."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally path.py:variant.')
  flags.DEFINE_integer('batch_size', 8, 'Global batch size of the benchmarked step.')
  flags.DEFINE_integer('steps', 5, 'Timed steps (after one warm-up step).')
  flags.DEFINE_integer('matmul_size', 4096, 'Side of the square matrices for the peak.')
  flags.mark_flags_as_required(['config'])


def matmul_peak(size: int, repeats: int = 5) -> float:
  """Best float32 FLOP/s of one large jnp.dot on the default device."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def step_flops(s, state, batch, rng) -> float:
  """FLOPs of one whole step: XLA's cost analysis of the unpartitioned program, with XLA's
  own convolutions (its count does not see into the oneDNN calls)."""
  import jax

  from jaxgen.models import onednn

  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    (state, batch, rng))
  with onednn.off():
    cost = jax.jit(s.objective.train_step).lower(*abstract).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost['flops'])


def random_batch(s, batch_size: int):
  """A batch of the shapes the family declares (images in [-1, 1], labels in 0..9), laid
  out on the mesh."""
  import numpy as np

  from jaxgen.data import pipeline

  rng = np.random.default_rng(0)
  return pipeline.global_batch(
      {name: (rng.uniform(-1, 1, shape) if np.dtype(dtype).kind == 'f' else
              rng.integers(0, 10, shape)).astype(dtype)
       for name, (shape, dtype) in s.objective.batch_shapes(batch_size).items()},
      s.batch_sharding)


def compiled_step(config, batch_size: int):
  """(setup, state, batch, key, compiled step, FLOPs per step, compile seconds) of
  `config` at `batch_size`, the batch split over all devices; one step already run."""
  import jax

  from jaxgen import build

  with config.unlocked():
    config.global_batch_size = batch_size
    config.mesh.data, config.mesh.fsdp = -1, 1
  s = build.setup(config)
  state = build.init_state(s, jax.random.key(0))
  batch = random_batch(s, batch_size)
  key = jax.random.key(1)
  flops = step_flops(s, state, batch, key)
  start = time.perf_counter()
  compiled = build.jit_train_step(s).lower(state, batch, key).compile()
  compile_s = time.perf_counter() - start
  state, _ = compiled(state, batch, key)
  jax.block_until_ready(state)
  return s, state, batch, key, compiled, flops, compile_s


def main(argv):
  del argv
  runtime.configure_jax()
  import jax

  from jaxgen import state as state_lib

  config = FLAGS.config
  s, state, batch, key, compiled, flops, compile_s = compiled_step(config, FLAGS.batch_size)
  times = []
  for i in range(FLAGS.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  peak = matmul_peak(FLAGS.matmul_size)
  median = statistics.median(times)
  achieved = flops / median
  config_file = config_flags.get_config_filename(FLAGS['config'])
  print(f'config: {config_file}  batch {FLAGS.batch_size}  devices '
        f'{jax.device_count()} x {jax.devices()[0].platform}  params '
        f'{state_lib.count_params(state["params"]) / 1e6:.2f}M')
  print(f'compile: {compile_s:.1f} s')
  print(f'step: median {median * 1e3:.0f} ms over {FLAGS.steps} (min {min(times) * 1e3:.0f}, '
        f'max {max(times) * 1e3:.0f}); {FLAGS.batch_size / median:.1f} images/s')
  print(f'FLOPs/step (XLA cost analysis): {flops / 1e9:.1f} GFLOP; achieved '
        f'{achieved / 1e9:.1f} GFLOP/s')
  print(f'matmul peak ({FLAGS.matmul_size}^2 float32 jnp.dot): {peak / 1e9:.1f} GFLOP/s')
  print(f'fraction of peak: {achieved / peak:.2f}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=runtime.parse_flags)
