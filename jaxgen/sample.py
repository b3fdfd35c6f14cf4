"""jaxgen-sample: draw images from a trained run's checkpoint (EMA parameters).

  jaxgen-sample --workdir=runs/demo --num_images=64 --sampler=ddim --steps=100

Writes `<output>.png` (a grid) and `<output>.npz` (`images`: uint8 [N, H, W, C]).

For VAEs and autoencoders, `--interpolate` walks between pairs of encoded evaluation images:
  jaxgen-sample --workdir=runs/vae_demo --interpolate
writes `<output>_linear.png` and `<output>_spherical.png` (one row per pair: first image,
decoded walk, second image) and `<output>_prior.png` (decoded prior samples).
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
flags.DEFINE_bool('interpolate', False, 'VAE/autoencoder runs: latent walks between pairs of '
                  'evaluation-split images (linear and spherical), and prior samples.')
flags.DEFINE_integer('num_pairs', 8, 'With --interpolate: how many pairs (rows).')
flags.DEFINE_integer('interpolation_steps', 10, 'With --interpolate: images along each walk.')
flags.mark_flags_as_required(['workdir'])


def interpolate() -> None:
  """Writes the latent-walk grids and a grid of prior samples."""
  import jax

  from jaxgen import inference, latents, metrics, objectives, paths, train
  from jaxgen.data import pipeline

  s, state, step, config = inference.restore_for_sampling(FLAGS.workdir, FLAGS.step)
  if s.objective.encode is None:
    raise ValueError(f'--interpolate needs a model with an encoder; objective '
                     f'{config.objective!r} has none')
  images = pipeline.load_images(config.data, config.data.eval_split, 2 * FLAGS.num_pairs)
  walks = latents.interpolate(s, state, images, FLAGS.interpolation_steps)
  originals = np.asarray(jax.device_get(objectives.to_uint8(images)))
  output = paths.workdir_path(FLAGS.output or f'{FLAGS.workdir}/samples/interpolate_{step:07d}')
  output.parent.mkdir(parents=True, exist_ok=True)
  written = []
  for path, walk in walks.items():
    written.append(f'{output}_{path}.png')
    metrics.save_png(written[-1], latents.walk_grid(originals, walk))
  if s.objective.sample is not None:
    count = FLAGS.num_pairs * FLAGS.interpolation_steps
    prior = train.jit_sample(s, count)(state, jax.random.key(FLAGS.seed))
    written.append(f'{output}_prior.png')
    metrics.save_png(written[-1], metrics.image_grid(prior, columns=FLAGS.interpolation_steps))
  print(f'wrote {", ".join(written)} (step {step})')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}')
  runtime.configure_jax()
  from jaxgen import metrics

  try:
    if FLAGS.interpolate:
      interpolate()
      return
    from jaxgen import inference, paths

    images, step, config = inference.sample_from_workdir(
        FLAGS.workdir, step=FLAGS.step, num_images=FLAGS.num_images, seed=FLAGS.seed,
        sampler=FLAGS.sampler, steps=FLAGS.steps, eta=FLAGS.eta)
  except (FileNotFoundError, ValueError) as e:
    runtime.fail(str(e))
  name = f'sample_{step:07d}'
  if 'diffusion' in config:
    name += f'_{FLAGS.sampler or config.diffusion.sampler}'
    name += str(FLAGS.steps or config.diffusion.sample_steps)
  output = paths.workdir_path(FLAGS.output or f'{FLAGS.workdir}/samples/{name}')
  output.parent.mkdir(parents=True, exist_ok=True)
  metrics.save_png(f'{output}.png', metrics.image_grid(images))
  with paths.workdir_path(f'{output}.npz').open('wb') as f:
    np.savez_compressed(f, images=images)
  print(f'wrote {output}.png and {output}.npz ({len(images)} images, step {step})')


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
