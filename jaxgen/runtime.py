"""Process start-up shared by the command-line programs: JAX devices, multi-process init,
and one-line fatal errors."""

from __future__ import annotations

import glob
import os
import sys

from absl import flags, logging

from jaxgen import config_files

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


# Where Debian-family systems keep tcmalloc (scripts/get_tcmalloc.sh installs it there).
TCMALLOC_GLOBS = ('/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4',
                  '/usr/lib64/libtcmalloc_minimal.so.4')
_REEXEC_ENV = 'JAXGEN_PRELOADED'


def tcmalloc_path() -> str | None:
  """The installed tcmalloc library, if any."""
  found = sorted(path for pattern in TCMALLOC_GLOBS for path in glob.glob(pattern))
  return found[0] if found else None


def rerun_with_tcmalloc() -> None:
  """Restart this program with tcmalloc preloaded, as the Makefile runs it, when it is
  installed and LD_PRELOAD is unset (set, even empty, it is the user's choice): with glibc's
  malloc, XLA:CPU compiled ~1.7x slower and the steps after an in-process compile ran ~1.2x
  slower on a 2-core Intel Xeon (README, "Host memory"). Only for whole programs started
  from a command line (the process is replaced, with the same arguments); never in a
  notebook. Once per process tree: a restarted program does not restart again."""
  if (not sys.platform.startswith('linux') or 'LD_PRELOAD' in os.environ
      or os.environ.get(_REEXEC_ENV) or not getattr(sys, 'orig_argv', None)
      or sys.flags.interactive or {'pytest', 'IPython', 'ipykernel'} & sys.modules.keys()):
    return
  path = tcmalloc_path()
  if path is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  env = {**os.environ, 'LD_PRELOAD': path, _REEXEC_ENV: '1'}
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def configure_jax() -> None:
  """jax_setup.configure_jax with this program's flags; must run before JAX picks a backend.
  Restarts the program with tcmalloc first where `rerun_with_tcmalloc` says so."""
  rerun_with_tcmalloc()
  from jaxgen import jax_setup

  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  jax_setup.configure_jax(
      num_cpu_devices=FLAGS.num_cpu_devices, compilation_cache_dir=FLAGS.compilation_cache_dir,
      coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id, distributed_timeout_s=FLAGS.distributed_timeout_s)


SAMPLE_PREFIX = '--sample.'
# `--sample.NAME=VALUE` flags of jaxgen-sample / jaxgen-eval, filled by `parse_flags`.
sample_options: dict[str, str] = {}


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one line instead of a traceback for a bad `--config.x=y`.

  `--sample.NAME=VALUE` flags are taken out first into `sample_options`: which names exist
  depends on the model in the checkpoint, so the program checks them once it is loaded.
  """
  rest = []
  for previous, arg in zip(['', *argv], argv):
    if arg.startswith('--config=') or previous == '--config':
      config_files.allow_sibling_imports(arg.removeprefix('--config='))
    if arg.startswith(SAMPLE_PREFIX):
      name, sep, value = arg[len(SAMPLE_PREFIX):].partition('=')
      if not sep or not name:
        fail(f'{arg}: sample options look like --sample.NAME=VALUE')
      sample_options[name] = value
    else:
      rest.append(arg)
  try:
    return FLAGS(rest)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:  # ml_collections: a field the config does not have
    named = [a.split('=')[0].removeprefix('--config.') for a in rest
             if a.startswith('--config.')]
    fail(config_files.missing_field(e, named))
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
