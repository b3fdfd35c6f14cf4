"""jaxgen-sample: draw images from a trained run's checkpoint (EMA parameters).

  jaxgen-sample --workdir=runs/demo --num_images=64 --sample.sampler=ddim --sample.steps=100

Writes `<output>.png` (a grid) and `<output>.npz` (`images`: uint8 [N, H, W, C]). Images
are drawn `--batch_size` at a time over the devices, with a progress line. The model's
sampling options (a diffusion model's sampler, steps, eta, guidance scale, labels) are
`--sample.NAME=VALUE`; an unknown name is an error that lists the model's options.

For VAEs and autoencoders, `--interpolate` walks between pairs of encoded evaluation images:
  jaxgen-sample --workdir=runs/vae_demo --interpolate
writes `<output>_linear.png` and `<output>_spherical.png` (one row per pair: first image,
decoded walk, second image) and `<output>_prior.png` (decoded prior samples). For GANs it
walks in w between pairs of prior latents (`<output>_linear.png`).

GANs also have
  jaxgen-sample --workdir=runs/sg2 --style_mixing     # StyleGAN2: coarse/middle/fine swaps
  jaxgen-sample --workdir=runs/gan --sweep=truncation_psi=1,0.7,0.5,0
(`--sweep` works for any sampling option: one column per value, the same latents per row).
"""

from __future__ import annotations

from absl import app, flags

from jaxgen import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A training workdir (holds checkpoints/).')
flags.DEFINE_integer('step', None, 'Checkpoint step to sample from (default: the latest).')
flags.DEFINE_integer('num_images', 64, 'How many images.')
flags.DEFINE_integer('batch_size', 500, 'Images per sampling call (split over the devices).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_string('output', None, 'Output path without extension '
                    '(default: <workdir>/samples/sample_<step>[_<option>-<value>...]).')
flags.DEFINE_bool('interpolate', False, 'VAE/autoencoder runs: latent walks between pairs of '
                  'evaluation-split images (linear and spherical), and prior samples.')
flags.DEFINE_integer('num_pairs', 8, 'With --interpolate: how many pairs (rows).')
flags.DEFINE_integer('interpolation_steps', 10, 'With --interpolate: images along each walk.')
flags.DEFINE_bool('style_mixing', False, 'StyleGAN2 runs: the style-mixing figure, one grid per '
                  'style range (<output>_coarse.png, _middle.png, _fine.png).')
flags.DEFINE_integer('num_rows', 5, 'With --style_mixing: sources A (rows).')
flags.DEFINE_integer('num_columns', 6, 'With --style_mixing: sources B (columns).')
flags.DEFINE_string('sweep', None, 'NAME=V1,V2,...: sample --num_images images once per value '
                    'of the sampling option NAME, from the same latents (one column each).')
flags.mark_flags_as_required(['workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    runtime.fail(f'unexpected arguments {argv[1:]}')
  runtime.configure_jax()
  from jaxgen import api  # after configure_jax

  try:
    common = dict(step=FLAGS.step, seed=FLAGS.seed, output=FLAGS.output,
                  options=runtime.sample_options)
    figure = None
    if FLAGS.style_mixing:
      figure = api.style_mixing(FLAGS.workdir, num_rows=FLAGS.num_rows,
                                num_columns=FLAGS.num_columns, **common)
    elif FLAGS.sweep:
      name, sep, values = FLAGS.sweep.partition('=')
      if not sep or not name or not values:
        runtime.fail(f'--sweep={FLAGS.sweep}: give NAME=V1,V2,..., e.g. '
                     '--sweep=truncation_psi=1,0.7,0.5')
      path, step = api.sweep(FLAGS.workdir, name, values.split(','),
                             num_images=FLAGS.num_images, **common)
      figure = [path], step
    elif FLAGS.interpolate:
      figure = api.interpolate(FLAGS.workdir, num_pairs=FLAGS.num_pairs,
                               num_steps=FLAGS.interpolation_steps, **common)
    if figure is not None:
      written, step = figure
      print(f'wrote {", ".join(map(str, written))} (step {step})')
      return
    result = api.sample(FLAGS.workdir, step=FLAGS.step, num_images=FLAGS.num_images,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                        options=runtime.sample_options, output=FLAGS.output or '')
  except (FileNotFoundError, ValueError) as e:
    runtime.fail(str(e))
  print(f'wrote {result.output}.png and {result.output}.npz ({len(result.images)} images, '
        f'step {result.step})')


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
