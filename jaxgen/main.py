"""jaxgen-train: train a config in a workdir (resuming from its last checkpoint).

  jaxgen-train --config=configs/ddpm_fashion_mnist.py:demo --workdir=runs/demo
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from jaxgen import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, optionally `path.py:variant`.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, samples and metrics go.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}; flags look like --config.x=y')
  runtime.configure_jax()
  from jaxgen import train, validate  # after configure_jax
  from jaxgen.data import pipeline

  try:
    train.run(FLAGS.config, FLAGS.workdir)
  except (validate.ConfigError, pipeline.DataError) as e:
    runtime.fail(str(e))


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
