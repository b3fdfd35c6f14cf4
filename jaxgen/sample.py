"""jaxgen-sample: draw images from a trained run's checkpoint (EMA parameters).

  jaxgen-sample --workdir=runs/demo --num_images=64 --sampler=ddim --steps=100

Writes `<output>.png` (a grid) and `<output>.npz` (`images`: uint8 [N, H, W, C]).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from jaxgen import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A training workdir (holds checkpoints/).')
flags.DEFINE_integer('step', None, 'Checkpoint step to sample from (default: the latest).')
flags.DEFINE_integer('num_images', 64, 'How many images.')
flags.DEFINE_string('sampler', None, 'Sampler name (default: the config\'s), e.g. ddim, ddpm.')
flags.DEFINE_integer('steps', None, 'Sampler steps (default: the config\'s).')
flags.DEFINE_float('eta', None, 'DDIM eta: 0 deterministic, 1 ancestral (default: the config\'s).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_string('output', None, 'Output path without extension '
                    '(default: <workdir>/samples/sample_<step>_<sampler><steps>).')
flags.mark_flags_as_required(['workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}')
  runtime.configure_jax()
  from jaxgen import metrics

  try:
    from jaxgen import inference, paths

    images, step, config = inference.sample_from_workdir(
        FLAGS.workdir, step=FLAGS.step, num_images=FLAGS.num_images, seed=FLAGS.seed,
        sampler=FLAGS.sampler, steps=FLAGS.steps, eta=FLAGS.eta)
  except (FileNotFoundError, ValueError) as e:
    runtime.fail(str(e))
  sampler = FLAGS.sampler or config.diffusion.sampler
  steps = FLAGS.steps or config.diffusion.sample_steps
  output = paths.workdir_path(
      FLAGS.output or f'{FLAGS.workdir}/samples/sample_{step:07d}_{sampler}{steps}')
  output.parent.mkdir(parents=True, exist_ok=True)
  metrics.save_png(f'{output}.png', metrics.image_grid(images))
  with paths.workdir_path(f'{output}.npz').open('wb') as f:
    np.savez_compressed(f, images=images)
  print(f'wrote {output}.png and {output}.npz ({len(images)} images, step {step})')


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
