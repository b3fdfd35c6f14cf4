"""jaxgen-eval: sample a trained run's checkpoints and measure them, apart from training.

  jaxgen-eval --workdir=runs/demo --num_samples=5000          # the latest checkpoint
  jaxgen-eval --workdir=runs/demo --watch                     # each new checkpoint, once
  jaxgen-eval train_classifier --output=runs/fmnist_classifier
  jaxgen-eval stats --dataset=cifar10 --split=train --inception_weights=W.pth --output=S.npz
  jaxgen-eval --workdir=runs/c10 --inception_weights=W.pth --reference=S.npz
  jaxgen-eval --workdir=runs/vae_demo --num_samples=5000    # + test-set bits/dim, IWAE bound
  jaxgen-eval --workdir=runs/demo --sample.sampler=ddim --sample.steps=100  # sampling options
  jaxgen-eval --workdir=runs/cyclegan_demo  # translation runs: FD, translation accuracy, cycle L1
  jaxgen-eval posthoc_ema --workdir=runs/edm_demo --sigma_rel=0.06,0.08  # EDM2's post-hoc EMA,
      # written as runs/edm_demo/posthoc_ema/sigma_rel_0.060 etc.: evaluate those --workdir
"""

from __future__ import annotations

import os

from absl import app, flags

from jaxgen import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A training workdir (holds checkpoints/).')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.DEFINE_integer('num_samples', 50_000, 'Samples to generate per checkpoint.')
flags.DEFINE_integer('batch_size', 500, 'Samples per sampling call (split over devices).')
flags.DEFINE_integer('seed', 0, 'Sampling seed (the same for every checkpoint).')
flags.DEFINE_integer('test_images', None, 'Runs with test-split metrics (VAE bounds, '
                     'autoencoder PSNR, translations): evaluate the first N images of the '
                     'evaluation split(s) (default: all).')
flags.DEFINE_string('classifier_dir', 'runs/fmnist_classifier',
                    'The Fashion-MNIST classifier for FD-FMNIST (jaxgen-eval train_classifier); '
                    '"" skips FD-FMNIST.')
flags.DEFINE_string('inception_weights', None,
                    'Local pt_inception-2015-12-05-6726825d.pth (pytorch-fid\'s FID weights): '
                    'adds IS, and with --reference FID (and KID/precision/recall for reference '
                    'batches with images).')
flags.DEFINE_string('reference', None, 'Inception reference statistics: a pytorch-fid .npz '
                    '(mu, sigma; see the stats command) or an OpenAI reference batch.')
flags.DEFINE_bool('watch', False, 'Follow the workdir: evaluate each new checkpoint once, until '
                  'the run\'s last step is done or --watch_timeout_s pass with nothing new.')
flags.DEFINE_float('poll_s', 30.0, 'With --watch: seconds between looks for new checkpoints.')
flags.DEFINE_float('watch_timeout_s', 3600.0, 'With --watch: stop after this long idle.')
flags.DEFINE_string('output', None, 'train_classifier/stats: where to write; posthoc_ema: the '
                    'folder of the reconstructions (default: <workdir>/posthoc_ema).')
flags.DEFINE_list('sigma_rel', [], 'posthoc_ema: relative EMA widths to reconstruct, e.g. 0.08.')
flags.DEFINE_integer('epochs', 3, 'train_classifier: epochs over the train split.')
flags.DEFINE_string('split', 'train', 'stats: the dataset split.')
flags.DEFINE_string('dataset', 'fashion_mnist', 'stats: a TFDS image dataset (prepared).')
flags.DEFINE_integer('max_images', None, 'stats: use the first N images of the split.')
flags.DEFINE_integer('keep_features', 10_000, 'stats: also store this many features (a fixed '
                     'random subset) for KID and precision/recall; 0 stores none.')
flags.DEFINE_enum('features', 'inception', ['inception', 'fmnist'],
                  'stats: Inception pool features (needs --inception_weights) or the '
                  'Fashion-MNIST classifier\'s.')
flags.DEFINE_string('data_dir', '', 'TFDS data_dir for the classifier\'s Fashion-MNIST.')
flags.DEFINE_string('manual_dir', '/usr/share/datasets/fashion-mnist',
                    'Fashion-MNIST IDX files, when TFDS has not prepared the dataset.')

def train_classifier(output: str) -> None:
  from jaxgen import metrics
  from jaxgen.eval import classifier

  cfg = classifier.data_config(FLAGS.data_dir, FLAGS.manual_dir)
  splits = classifier.load_splits(cfg)
  trained = classifier.train(cfg, epochs=FLAGS.epochs, splits=splits)
  classifier.save(output, trained, {'epochs': FLAGS.epochs, 'dataset': 'fashion_mnist'})
  classifier.write_reference(output, trained.params, cfg, splits)
  metrics.print_line(f'classifier: test accuracy {trained.test_accuracy:.4f}; saved to '
                     f'{os.path.abspath(output)} with train-split feature statistics')


def write_stats(output: str) -> None:
  """mu/sigma of a dataset split's features, in pytorch-fid's .npz layout."""
  import numpy as np

  from jaxgen.eval import classifier, evaluate, fid

  cfg = classifier.data_config(FLAGS.data_dir, FLAGS.manual_dir, FLAGS.dataset)
  if FLAGS.features == 'inception':
    if not FLAGS.inception_weights:
      runtime.fail('stats --features=inception needs --inception_weights=PATH')
    evaluate.inception_params(FLAGS.inception_weights)
    images, _ = classifier.load_split(cfg, FLAGS.split, FLAGS.max_images)
    features, _ = evaluate.inception_features(images, FLAGS.inception_weights)
  else:
    params, _ = classifier.load(FLAGS.classifier_dir)
    images, _ = classifier.load_split(cfg, FLAGS.split, FLAGS.max_images)
    features, _ = classifier.predict(params, images)
  keep = np.random.default_rng(0).permutation(len(features))[:FLAGS.keep_features]
  fid.save_stats(output, fid.stats_of(features),
                 features[np.sort(keep)] if FLAGS.keep_features else None)
  print(f'wrote {output}: mu/sigma of {len(features)} {FLAGS.dataset}/{FLAGS.split} '
        f'{FLAGS.features} features ({features.shape[1]}-d)')


def posthoc_ema(output: str | None) -> None:
  from jaxgen import metrics, posthoc_ema

  if not FLAGS.workdir or not FLAGS.sigma_rel:
    runtime.fail('posthoc_ema needs --workdir (a run with power-EMA snapshots) and '
                 '--sigma_rel (e.g. 0.08 or 0.06,0.1)')
  try:
    sigma_rels = [float(v) for v in FLAGS.sigma_rel]
  except ValueError:
    runtime.fail(f'--sigma_rel={",".join(FLAGS.sigma_rel)}: give numbers, e.g. 0.08')
  for out in posthoc_ema.reconstruct(FLAGS.workdir, sigma_rels, FLAGS.step, output):
    metrics.print_line(f'wrote {out}: evaluate it with jaxgen-eval --workdir={out}')


COMMANDS = {'train_classifier': train_classifier, 'stats': write_stats,
            'posthoc_ema': posthoc_ema}
OPTIONAL_OUTPUT = ('posthoc_ema',)


def main(argv: list[str]) -> None:
  if len(argv) > 2 or (len(argv) == 2 and argv[1] not in COMMANDS):
    runtime.fail(f'unexpected arguments {argv[1:]}; commands are {sorted(COMMANDS)} or none '
                 '(evaluate --workdir)')
  runtime.configure_jax()
  from jaxgen.data import pipeline

  try:
    if len(argv) == 2:
      if not FLAGS.output and argv[1] not in OPTIONAL_OUTPUT:
        runtime.fail(f'{argv[1]} needs --output')
      COMMANDS[argv[1]](FLAGS.output)
    elif not FLAGS.workdir:
      runtime.fail('--workdir is required to evaluate a run')
    else:
      from jaxgen.eval import evaluate

      evaluate.evaluate_workdir(FLAGS.workdir, evaluate.Options(
          step=FLAGS.step, num_samples=FLAGS.num_samples, batch_size=FLAGS.batch_size,
          sample_options=dict(runtime.sample_options), seed=FLAGS.seed,
          test_images=FLAGS.test_images, classifier_dir=FLAGS.classifier_dir,
          inception_weights=FLAGS.inception_weights,
          reference=FLAGS.reference, watch=FLAGS.watch, poll_s=FLAGS.poll_s,
          watch_timeout_s=FLAGS.watch_timeout_s))
  except (FileNotFoundError, FileExistsError, ValueError, pipeline.DataError) as e:
    runtime.fail(str(e))


def run() -> None:
  app.run(main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  run()
