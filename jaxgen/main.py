"""jaxgen-train: train a config in a workdir (resuming from its last checkpoint).

  jaxgen-train --config=configs/ddpm_fashion_mnist.py:demo --workdir=runs/demo
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from jaxgen import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, optionally `path.py:variant`.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, samples and metrics go.')
flags.DEFINE_bool('compile_only', False,
                  'Compile the train step for the config\'s mesh, print FLOPs and per-device '
                  'memory, and exit without training (no workdir needed).')
flags.DEFINE_float('device_memory_gb', None,
                   'With --compile_only: per-device memory to check the step against (GiB).')
flags.mark_flag_as_required('config')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}; flags look like --config.x=y')
  if runtime.sample_options:
    runtime.fail('--sample.NAME=VALUE options are for jaxgen-sample and jaxgen-eval')
  runtime.configure_jax()
  # After configure_jax: these import JAX programs.
  from jaxgen import build, checkpoint, compile_report, nonfinite, train, validate, workdir_lock
  from jaxgen.data import pipeline

  try:
    if FLAGS.compile_only:
      memory = int(FLAGS.device_memory_gb * 2**30) if FLAGS.device_memory_gb else None
      report = compile_report.compile_report(build.setup(FLAGS.config), memory)
      print(compile_report.format_report(report), flush=True)
      if report.get('fits') is False:
        sys.exit(1)
      return
    if not FLAGS.workdir:
      runtime.fail('--workdir is required to train (only --compile_only runs without one)')
    train.run(FLAGS.config, FLAGS.workdir)
  except (validate.ConfigError, pipeline.DataError, nonfinite.NonFiniteError,
          workdir_lock.WorkdirLocked) as e:
    runtime.fail(str(e))
  except checkpoint.CheckpointError as e:
    # orbax's and TensorBoard's background writers may still hold the failed storage: exit
    # without running their exit hooks (they would only add tracebacks after the message).
    runtime.fail(str(e), hard=True)


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
