"""Evaluate a run's checkpoints apart from training: sample, extract features, measure.

Results go to <workdir>/eval/: metrics.jsonl, TensorBoard events, a sample grid per step,
and evaluated.json (which steps are done, and the best one) so a watcher survives restarts.
The command line is jaxgen/eval/main.py (jaxgen-eval).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from jaxgen import checkpoint, inference, metrics, paths
from jaxgen.eval import classifier, extract, fid, inception, weights


@dataclasses.dataclass(frozen=True)
class Options:
  step: int | None = None  # None: the latest (or, watching, every new one)
  num_samples: int = 50_000
  batch_size: int = 500
  sampler: str | None = None
  steps: int | None = None
  eta: float | None = None
  seed: int = 0
  classifier_dir: str = 'runs/fmnist_classifier'
  inception_weights: str | None = None  # pt_inception-2015-12-05-6726825d.pth: FID/IS/KID/PR
  reference: str | None = None  # Inception statistics (.npz: mu/sigma, or an OpenAI batch)
  watch: bool = False
  poll_s: float = 30.0
  watch_timeout_s: float = 3600.0


EVAL_DIR = 'eval'
STATE_FILE = 'evaluated.json'


def fmnist_metrics(images: np.ndarray, classifier_dir: str) -> dict[str, float]:
  """FD-FMNIST against the train split, the real-data floor, KID, P/R and class coverage."""
  params, meta = classifier.load(classifier_dir)
  train_stats, test_features = classifier.load_reference(classifier_dir)
  features, logits = classifier.predict(params, images)
  n = min(len(images), len(test_features))
  out = {
      'num_samples': len(images),
      'fd_fmnist': fid.frechet_distance(fid.stats_of(features), train_stats),
      # The same distance for n real test images: the floor a perfect generator reaches
      # with this many samples (the Frechet distance is biased upwards for small n).
      'fd_fmnist_floor': fid.frechet_distance(fid.stats_of(test_features[:n]), train_stats),
      'fd_fmnist_floor_n': n,
      'classifier_test_accuracy': meta['test_accuracy'],
  }
  out['kid_fmnist'], out['kid_fmnist_std'] = fid.kernel_inception_distance(
      test_features, features, subsets=10)
  out['precision_fmnist'], out['recall_fmnist'] = fid.precision_recall(test_features[:n],
                                                                       features[:n])
  counts = np.bincount(logits.argmax(1), minlength=classifier.NUM_CLASSES)
  fractions = counts / counts.sum()
  nonzero = fractions[fractions > 0]
  out['class_entropy_bits'] = float(-(nonzero * np.log2(nonzero)).sum())  # log2(10) = 3.32
  for name, fraction in zip(classifier.CLASS_NAMES, fractions):
    out[f'class_fraction/{name}'] = float(fraction)
  return out


@functools.cache
def inception_params(path: str) -> dict[str, Any]:
  return weights.torch_to_flax(weights.load_state_dict(path), inception.MODEL.abstract_params())


def inception_features(images: np.ndarray, weights_path: str) -> tuple[np.ndarray, np.ndarray]:
  """2048-d pool features and 1008 logits (no bias, as torch-fidelity's IS uses)."""
  pool, logits_unbiased, _ = extract.batched_apply(
      inception.MODEL.apply, inception_params(weights_path), inception.to_rgb_uint8(images),
      batch_size=32)
  return pool, logits_unbiased


def inception_metrics(images: np.ndarray, weights_path: str, reference_path: str | None
                      ) -> dict[str, float]:
  """FID against the reference statistics, IS; KID and P/R when it has features or images."""
  features, logits = inception_features(images, weights_path)
  out = {}
  out['inception_score'], out['inception_score_std'] = fid.inception_score(logits)
  if reference_path is None:
    return out
  reference = fid.load_reference(reference_path)
  try:
    out['fid'] = fid.frechet_distance(fid.stats_of(features), reference.stats)
  except ValueError as e:  # e.g. too few samples: report the other metrics anyway
    logging.warning('FID not computed: %s', e)
    if jax.process_index() == 0:
      metrics.print_line(f'FID not computed: {e}')
  real = reference.features
  if real is None and reference.images is not None:
    real, _ = inception_features(reference.images, weights_path)
  if real is not None:
    out['kid'], out['kid_std'] = fid.kernel_inception_distance(real, features)
    out['precision'], out['recall'] = fid.precision_recall(real, features)
  return out


def format_result(step: int, result: dict[str, float]) -> str:
  line = f'step {step}: {result["num_samples"]} samples'
  inception_parts = [f'{label} {result[key]:{fmt}}' for key, label, fmt in (
      ('fid', 'FID', '.3f'), ('inception_score', 'IS', '.3f'), ('kid', 'KID', '.5f'),
      ('precision', 'precision', '.3f'), ('recall', 'recall', '.3f')) if key in result]
  if inception_parts:
    line += '\n  ' + ' | '.join(inception_parts)
  if 'fd_fmnist' in result:
    classes = ' '.join(f'{k.split("/")[1]} {v:.0%}' for k, v in result.items()
                       if k.startswith('class_fraction/'))
    line += (f'\n  FD-FMNIST {result["fd_fmnist"]:.2f} (real-data floor '
             f'{result["fd_fmnist_floor"]:.2f}: {result["fd_fmnist_floor_n"]} test images vs '
             f'train) | KID {result["kid_fmnist"]:.4f} | precision '
             f'{result["precision_fmnist"]:.3f} recall {result["recall_fmnist"]:.3f}'
             f'\n  classes: {classes} (entropy {result["class_entropy_bits"]:.2f} of 3.32 bits)')
  return line


def evaluate_step(workdir: str, step: int, options: Options, writer) -> dict[str, Any]:
  """Samples the checkpoint at `step` and writes its metrics and a sample grid."""
  s, state, step, config = inference.restore_for_sampling(workdir, step)
  kwargs = {k: v for k, v in (('sampler', options.sampler), ('steps', options.steps),
                              ('eta', options.eta)) if v is not None}
  images = inference.generate(s, state, options.num_samples, options.batch_size, options.seed,
                              **kwargs)
  result: dict[str, Any] = {'num_samples': len(images)}
  if config.data.name == 'fashion_mnist' and images.shape[1:] == (28, 28, 1):
    result.update(fmnist_metrics(images, options.classifier_dir))
  if options.inception_weights:
    result.update(inception_metrics(images, options.inception_weights, options.reference))
  elif 'fd_fmnist' not in result:
    logging.warning('no feature network for %s: pass the Inception weights for FID',
                    config.data.name)
  out_dir = paths.workdir_path(workdir) / EVAL_DIR
  grid = metrics.image_grid(images[:64])
  writer.write_scalars(step, {k: v for k, v in result.items()
                              if isinstance(v, (int, float))})
  writer.write_image(step, 'eval_samples', grid)
  if writer.enabled:
    metrics.save_png(out_dir / f'samples_{step:07d}.png', grid)
    metrics.print_line(format_result(step, result))
  return {'result': result, 'total_steps': config.total_steps}


def _load_state(out_dir) -> dict[str, Any]:
  path = out_dir / STATE_FILE
  return json.loads(path.read_text()) if path.exists() else {'evaluated': [], 'best': None}


def _save_state(out_dir, state: dict[str, Any]) -> None:
  tmp = out_dir / (STATE_FILE + '.tmp')
  tmp.write_text(json.dumps(state, indent=1))
  tmp.replace(out_dir / STATE_FILE)


def _update_best(state: dict[str, Any], step: int, result: dict[str, Any]) -> None:
  for name in ('fid', 'fd_fmnist'):  # lower is better; FID when there is one
    if name in result:
      best = state['best']
      if best is None or best['metric'] != name or result[name] < best['value']:
        state['best'] = {'metric': name, 'value': result[name], 'step': step}
      return


def evaluate_workdir(workdir: str, options: Options) -> dict[str, Any]:
  """Evaluates one step (or, with `watch`, every new one); returns the evaluated.json state."""
  if options.inception_weights:  # fail on a bad weight or reference file before sampling
    inception_params(options.inception_weights)
  if options.reference:
    fid.load_reference(options.reference)
  out_dir = paths.workdir_path(workdir) / EVAL_DIR
  chief = jax.process_index() == 0
  if chief:
    out_dir.mkdir(parents=True, exist_ok=True)
  state = _load_state(out_dir)
  writer = metrics.MetricWriter(os.fspath(out_dir), enabled=chief)
  ckpt = checkpoint.Checkpointer(workdir, use_async=False, read_only=True)
  last_new, total_steps = time.monotonic(), None
  try:
    while True:
      steps = ckpt.all_steps()
      if options.step is not None:
        todo = [options.step]
      elif options.watch:
        todo = [s for s in steps if s not in state['evaluated']]
      else:
        todo = steps[-1:]
      for step in todo:
        done = evaluate_step(workdir, step, options, writer)
        total_steps = done['total_steps']
        state['evaluated'] = sorted(set(state['evaluated']) | {step})
        _update_best(state, step, done['result'])
        if chief:
          _save_state(out_dir, state)
        last_new = time.monotonic()
      if not options.watch or options.step is not None:
        break
      if total_steps is not None and total_steps in state['evaluated']:
        break
      if time.monotonic() - last_new > options.watch_timeout_s:
        logging.info('no new checkpoint for %.0fs; stopping', options.watch_timeout_s)
        break
      time.sleep(options.poll_s)
  finally:
    ckpt.close()
    writer.close()
  if chief and state['best']:
    best = state['best']
    metrics.print_line(f'best {best["metric"]} {best["value"]:.3f} at step {best["step"]}')
  return state
