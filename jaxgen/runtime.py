"""Process start-up shared by the command-line programs: JAX devices, multi-process init,
and one-line fatal errors."""

from __future__ import annotations

import os
import sys

from absl import flags, logging

flags.DEFINE_integer('num_cpu_devices', None,
                     'Simulated CPU devices (default: one per core). Ignored on TPU/GPU.')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for multi-process runs outside Cloud TPU / SLURM.')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process\'s index (with --coordinator_address).')
flags.DEFINE_integer('distributed_timeout_s', 300,
                     'Seconds to wait for all processes to join, and for a silent peer before '
                     'the job fails (instead of hanging).')
flags.DEFINE_string('compilation_cache_dir', '~/.cache/jaxgen/xla',
                    'JAX persistent compilation cache (local or gs://): a restarted or resumed '
                    'program loads its compiled steps instead of compiling them again. \'\' '
                    'turns it off; the JAX_COMPILATION_CACHE_DIR environment variable wins.')
FLAGS = flags.FLAGS


def configure_jax() -> None:
  """Set devices and join a multi-process job; must run before JAX picks a backend."""
  import jax

  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    cache = FLAGS.compilation_cache_dir
    jax.config.update('jax_compilation_cache_dir',
                      cache if cache.startswith(('gs://', 's3://')) else os.path.expanduser(cache))
    if jax.config.jax_compilation_cache_max_size < 0:  # unbounded by default: keep the newest
      jax.config.update('jax_compilation_cache_max_size', 4 * 2**30)  # 4 GiB
  # On CPU, XLA uses the cores better with the batch sharded one device per core.
  jax.config.update('jax_num_cpu_devices', FLAGS.num_cpu_devices or os.cpu_count() or 1)
  timeouts = {'initialization_timeout': FLAGS.distributed_timeout_s,
              'heartbeat_timeout_seconds': FLAGS.distributed_timeout_s}
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               **timeouts)
  elif (int(os.environ.get('SLURM_NTASKS', '1')) > 1 or
        len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1):
    jax.distributed.initialize(**timeouts)  # auto-detects SLURM / multi-host Cloud TPU


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that turns a bad `--config.x=y` into one line instead of a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:  # ml_collections: a field the config does not have
    key = str(e).strip('"\'')
    culprits = [a for a in argv[1:] if a.startswith('--config.') and key in a.split('=')[0]]
    where = culprits[0] if culprits else key
    fail(f'{where}: the config has no field {key!r}; check the spelling against the config file')
  return []


def fail(message: str, hard: bool = False) -> None:
  """Exit with one line naming the problem (no traceback: the message says the fix).
  `hard` skips the exit hooks of libraries whose background writers failed."""
  message = message.split('\n-----')[0]  # grain appends a note on its traceback filtering
  print(f'jaxgen: error: {message}', file=sys.stderr, flush=True)
  if hard:
    sys.stdout.flush()
    os._exit(2)
  sys.exit(2)
