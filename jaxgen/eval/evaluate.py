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
from jax.experimental import multihost_utils

from jaxgen import checkpoint, inference, metrics, paths, sharding
from jaxgen.data import pipeline
from jaxgen.eval import classifier, extract, fid, inception, translation, weights


@dataclasses.dataclass(frozen=True)
class Options:
  step: int | None = None  # None: the latest (or, watching, every new one)
  num_samples: int = 50_000
  batch_size: int = 500
  # The model's sampling options (`--sample.NAME=VALUE`), e.g. {'sampler': 'ddim'}.
  sample_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  test_images: int | None = None  # families with test metrics: None evaluates the whole split
  classifier_dir: str = 'runs/fmnist_classifier'
  inception_weights: str | None = None  # pt_inception-2015-12-05-6726825d.pth: FID/IS/KID/PR
  reference: str | None = None  # Inception statistics (.npz: mu/sigma, or an OpenAI batch)
  watch: bool = False
  poll_s: float = 30.0
  watch_timeout_s: float = 3600.0


EVAL_DIR = 'eval'
STATE_FILE = 'evaluated.json'


def as_fashion_mnist(images: np.ndarray, data_cfg) -> np.ndarray | None:
  """Samples as the Fashion-MNIST classifier takes them, uint8 [N, 28, 28, 1]: a run that
  padded the images (data.resize='pad', e.g. 32x32 for StyleGAN2) is cropped back where the
  pipeline padded, a resized one resized back (bicubic); None for other images."""
  if images.shape[1:] == (28, 28, 1):
    return images
  height, width, channels = images.shape[1:]
  if channels != 1 or height < 28 or width < 28:
    return None
  if data_cfg.resize == 'pad':
    top, left = (height - 28) // 2, (width - 28) // 2
    return images[:, top:top + 28, left:left + 28]
  if data_cfg.resize == 'resize':
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(image[..., 0]).resize((28, 28), Image.BICUBIC))
                     for image in images])[..., None]
  return None


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


def test_split_metrics(s, state, options: Options) -> dict[str, float]:
  """Means over the evaluation split of the objective's per-example `test_metrics` (a VAE's
  bounds, an autoencoder's PSNR): every image once, in batches sharded over the devices."""
  cfg = s.config.data
  source = pipeline.load_source(cfg, cfg.eval_split)
  count = len(source) if options.test_images is None else min(options.test_images, len(source))
  batch_size = min(options.batch_size, count)
  batch_size += (-batch_size) % jax.device_count()
  fn = jax.jit(lambda st, batch, rng: s.objective.test_metrics(
      s.objective.sample_params(st), batch, rng), in_shardings=(
          s.state_shardings, s.batch_sharding, sharding.replicated(s.mesh)))
  sums: dict[str, float] = {}
  key, start_time = jax.random.key(options.seed), time.perf_counter()
  # Each process reads only its rows of each batch (the last batch repeats the last image).
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  for index, start in enumerate(range(0, count, batch_size)):
    rows = range(start, min(start + batch_size, count))
    mine = [min(start + first + row, count - 1) for row in range(local)]
    batch = {k: jax.make_array_from_process_local_data(s.batch_sharding, v)
             for k, v in pipeline.read_rows(source, mine, cfg, cfg.eval_split).items()}
    values = fn(state, batch, jax.random.fold_in(key, index))
    for name, per_example in values.items():
      host = np.asarray(multihost_utils.process_allgather(per_example, tiled=True), np.float64)
      sums[name] = sums.get(name, 0.0) + float(host[:len(rows)].sum())
    if jax.process_index() == 0:
      done, elapsed = rows.stop, time.perf_counter() - start_time
      metrics.print_line(f'test metrics {done}/{count} | {done / elapsed:.1f} img/s | '
                         f'ETA {(count - done) * elapsed / done:.0f}s')
  return {'test_images': count, **{f'test/{k}': v / count for k, v in sums.items()}}


def format_result(step: int, result: dict[str, float]) -> str:
  line = f'step {step}'
  if 'num_samples' in result:
    line += f': {result["num_samples"]} samples'
  if 'test_images' in result:
    parts = []
    for key in sorted((k for k in result if k.startswith('test/')), reverse=True):
      name = key[len('test/'):]
      if name.endswith('_bits_per_dim'):
        continue  # printed next to its nats
      part = f'{name.removesuffix("_nats")} {result[key]:.4f}'
      if name.endswith('_nats'):
        part += f' nats = {result[key.replace("_nats", "_bits_per_dim")]:.4f} bits/dim'
      parts.append(part)
    line += f'\n  {result["test_images"]} test images: ' + ' | '.join(parts)
  inception_parts = [f'{label} {result[key]:{fmt}}' for key, label, fmt in (
      ('fid', 'FID', '.3f'), ('inception_score', 'IS', '.3f'), ('kid', 'KID', '.5f'),
      ('precision', 'precision', '.3f'), ('recall', 'recall', '.3f')) if key in result]
  if inception_parts:
    line += '\n  ' + ' | '.join(inception_parts)
  for way_line in translation.format_lines(result):
    line += '\n  ' + way_line
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
  if (s.objective.test_metrics is None and s.objective.sample is None and
      s.objective.translate is None):
    raise ValueError(f'jaxgen-eval has no metrics for {config.objective} runs (they neither '
                     'generate from noise, translate, nor declare test metrics)')
  kwargs = inference.sample_options(s.objective, options.sample_options)
  result: dict[str, Any] = {}
  if s.objective.test_metrics is not None:
    result.update(test_split_metrics(s, state, options))
  grid = None
  if s.objective.translate is not None:
    metrics_of_ways, grid = translation.translation_metrics(s, state, options)
    result.update(metrics_of_ways)
  if s.objective.sample is not None:
    images = inference.generate(s, state, options.num_samples, options.batch_size,
                                options.seed, **kwargs)
    result['num_samples'] = len(images)
    grid = metrics.image_grid(images[:64])
    fmnist_images = as_fashion_mnist(images, config.data)
    if (options.classifier_dir and pipeline.is_fashion_mnist(config.data) and
        fmnist_images is not None):
      result.update(fmnist_metrics(fmnist_images, options.classifier_dir))
    if options.inception_weights:
      result.update(inception_metrics(images, options.inception_weights, options.reference))
    elif 'fd_fmnist' not in result:
      logging.warning('no feature network for %s: pass the Inception weights for FID',
                      config.data.name)
  out_dir = paths.workdir_path(workdir) / EVAL_DIR
  writer.write_scalars(step, {k: v for k, v in result.items()
                              if isinstance(v, (int, float))})
  grid_name = 'translations' if s.objective.translate is not None else 'samples'
  if grid is not None:
    writer.write_image(step, f'eval_{grid_name}', grid)
  if writer.enabled:
    if grid is not None:
      metrics.save_png(out_dir / f'{grid_name}_{step:07d}.png', grid)
    metrics.print_line(format_result(step, result))
  return {'result': result, 'total_steps': config.total_steps,
          'best_metric': s.objective.best_metric}


def _load_state(out_dir) -> dict[str, Any]:
  path = out_dir / STATE_FILE
  return json.loads(path.read_text()) if path.exists() else {'evaluated': [], 'best': None}


def _save_state(out_dir, state: dict[str, Any]) -> None:
  tmp = out_dir / (STATE_FILE + '.tmp')
  tmp.write_text(json.dumps(state, indent=1))
  tmp.replace(out_dir / STATE_FILE)


def _update_best(state: dict[str, Any], step: int, result: dict[str, Any],
                 family_metric: tuple[str, bool] | None) -> None:
  """What "best" means, in order of preference (metric, whether lower is better): FID, then
  the metric the family declares (a VAE's test bits/dim), then FD-FMNIST."""
  for name, lower in (('fid', True), *([family_metric] if family_metric else []),
                      ('fd_fmnist', True)):
    if name in result:
      best = state['best']
      better = best is not None and best['metric'] == name and (
          result[name] < best['value'] if lower else result[name] > best['value'])
      if best is None or best['metric'] != name or better:
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
        todo = [s for s in steps if s not in state['evaluated'] + state.get('skipped', [])]
      else:
        todo = steps[-1:]
      for step in todo:
        try:
          done = evaluate_step(workdir, step, options, writer)
        except inference.UnreadableCheckpoint as e:
          if not options.watch:
            raise
          # The trainer's max_to_keep may delete a step between listing and reading it, or a
          # file may be damaged: a watcher notes it and goes on with the next one.
          logging.warning('skipping step %d: %s', step, e)
          state['skipped'] = sorted(set(state.get('skipped', [])) | {step})
          if chief:
            metrics.print_line(f'skipped step {step}: {e}')
            _save_state(out_dir, state)
          continue
        total_steps = done['total_steps']
        state['evaluated'] = sorted(set(state['evaluated']) | {step})
        _update_best(state, step, done['result'], done['best_metric'])
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
