"""jaxgen-eval for image-to-image runs: the evaluation images translated, then measured.

For each way the objective translates (`a2b`; a two-way model such as CycleGAN also `b2a`),
every source image of the evaluation split(s) is translated (as uint8, as jaxgen-translate
writes it) and compared with the real images of the target domain's evaluation split:

  {way}/fd_fmnist        FD-FMNIST of the translations against the real target images (the
                         Fashion-MNIST classifier's features; for datasets made of
                         Fashion-MNIST images, e.g. edges2fashion and sneaker2boot)
  {way}/fd_fmnist_floor  the same distance for as many real target images of the training
                         split: what a perfect translator reaches with this many images
  {way}/fd_fmnist_input  the untranslated sources against the targets: where training starts
  {way}/class_match      paired: the fraction of translations the classifier puts in the
                         class it gives their own target
  {way}/translation_accuracy  unpaired: the fraction of translations the classifier puts in
                         the target domain's class (the class it gives most real target
                         images; e.g. sneaker -> boot), next to
  {way}/target_class_rate     that fraction for the real target images (the ceiling)
  {way}/cycle_l1         two-way models: mean |back(translation) - source| in [-1, 1] units,
                         `back` the other way's translation of the uint8 translation
  {way}/fid              with Inception weights: FID of the translations against the targets

A paired objective's per-example `test_metrics` (PSNR, SSIM, L1) come on top of these (see
evaluate.test_split_metrics).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgen import build
from jaxgen.data import pipeline
from jaxgen.eval import classifier, fid

OPPOSITE = {'a2b': 'b2a', 'b2a': 'a2b'}


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Host float [-1, 1] -> uint8, as objectives.to_uint8 (exact for decoded uint8 images)."""
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) / 127.5 - 1.0


def domain_images(cfg: ml_collections.ConfigDict, split: str, limit: int | None
                  ) -> dict[str, np.ndarray]:
  """{'source', 'target'} (paired) or {'image'} float images of a split, without jitter."""
  source = pipeline.load_source(cfg, split)
  count = len(source) if limit is None else min(limit, len(source))
  return pipeline.read_rows(source, list(range(count)), cfg, split)


def ways(data_cfg: ml_collections.ConfigDict, directions: tuple[str, ...],
         limit: int | None) -> dict[str, dict[str, Any]]:
  """{way: sources, targets (evaluation split), train_targets (the floor), paired}."""
  if pipeline.translation_kind(data_cfg) == 'paired':
    test = domain_images(data_cfg, data_cfg.eval_split, limit)
    train = domain_images(data_cfg, data_cfg.split, len(test['target']))
    return {'a2b': {'sources': test['source'], 'targets': test['target'],
                    'train_targets': train['target'], 'paired': True}}
  target_cfg = pipeline.target_config(data_cfg)
  domains = {'a': (data_cfg, data_cfg.eval_split, data_cfg.split),
             'b': (target_cfg, target_cfg.eval_split, target_cfg.split)}
  test = {name: domain_images(cfg, split, limit)['image']
          for name, (cfg, split, _) in domains.items()}
  out = {}
  for way in directions:
    src, dst = way[0], way[-1]
    cfg, _, train_split = domains[dst]
    out[way] = {'sources': test[src], 'targets': test[dst], 'paired': False,
                'train_targets': domain_images(cfg, train_split, len(test[dst]))['image']}
  return out


def translate_all(s: build.Setup, state, images: np.ndarray, direction: str, batch_size: int,
                  seed: int) -> np.ndarray:
  """uint8 translations of float images, `batch_size` at a time, sharded over the devices."""
  batch_size = min(batch_size, len(images))
  batch_size += (-batch_size) % jax.device_count()
  fn = build.jit_translate(s, batch_size, direction)
  key, out = jax.random.key(seed), []
  for index, start in enumerate(range(0, len(images), batch_size)):
    chunk = images[start:start + batch_size]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
    out.append(fn(state, padded, jax.random.fold_in(key, index))[:len(chunk)])
  return np.concatenate(out)


def fmnist_way_metrics(outputs: np.ndarray, way: dict[str, Any], data_cfg,
                       params) -> dict[str, float]:
  """`params`: the Fashion-MNIST classifier's (classifier.load)."""
  from jaxgen.eval import evaluate

  images = {'outputs': outputs, 'targets': to_uint8(way['targets']),
            'train_targets': to_uint8(way['train_targets']),
            'inputs': to_uint8(way['sources'])}
  features, logits = {}, {}
  for name, x in images.items():
    x = evaluate.as_fashion_mnist(x, data_cfg)
    if x is None:
      return {}
    features[name], logits[name] = classifier.predict(params, x)
  reference = fid.stats_of(features['targets'])
  out = {f'fd_fmnist{suffix}': fid.frechet_distance(fid.stats_of(features[name]), reference)
         for name, suffix in (('outputs', ''), ('train_targets', '_floor'),
                              ('inputs', '_input'))}
  predicted = {name: x.argmax(1) for name, x in logits.items()}
  if way['paired']:
    out['class_match'] = float(np.mean(predicted['outputs'] == predicted['targets']))
  else:
    target_class = int(np.bincount(predicted['targets'], minlength=classifier.NUM_CLASSES)
                       .argmax())
    out['translation_accuracy'] = float(np.mean(predicted['outputs'] == target_class))
    out['target_class_rate'] = float(np.mean(predicted['targets'] == target_class))
    out['target_class'] = target_class
  return out


def translation_metrics(s: build.Setup, state, options) -> tuple[dict[str, Any], np.ndarray]:
  """The metrics above for every way of the run's objective (keys `{way}/{metric}`), and a
  grid of the first eight evaluation images per way: sources, translations (and targets)."""
  from jaxgen import grids
  from jaxgen.eval import evaluate

  data_cfg = s.config.data
  directions = s.objective.translation_directions
  result: dict[str, Any] = {}
  pictures = []
  params = (classifier.load(options.classifier_dir)[0]
            if options.classifier_dir and pipeline.is_fashion_mnist(data_cfg) else None)
  for name, way in ways(data_cfg, directions, options.test_images).items():
    outputs = translate_all(s, state, way['sources'], name, options.batch_size, options.seed)
    out: dict[str, Any] = {'images': len(outputs)}
    if OPPOSITE[name] in directions:
      back = translate_all(s, state, to_float(outputs), OPPOSITE[name], options.batch_size,
                           options.seed)
      out['cycle_l1'] = float(np.mean(np.abs(to_float(back) - way['sources'])))
    if params is not None:
      out.update(fmnist_way_metrics(outputs, way, data_cfg, params))
    if options.inception_weights:
      real, _ = evaluate.inception_features(to_uint8(way['targets']), options.inception_weights)
      fake, _ = evaluate.inception_features(outputs, options.inception_weights)
      out['fid'] = fid.frechet_distance(fid.stats_of(fake), fid.stats_of(real))
    result.update({f'{name}/{k}': v for k, v in out.items()})
    rows = [to_uint8(way['sources'][:8]), outputs[:8]]
    if way['paired']:
      rows.append(to_uint8(way['targets'][:8]))
    pictures.append(grids.paired_grid(*rows))
  return result, np.concatenate(pictures)


def format_lines(result: dict[str, Any]) -> list[str]:
  """One line per way, for the evaluation printout."""
  lines = []
  for way in ('a2b', 'b2a'):
    if f'{way}/images' not in result:
      continue
    get = lambda k, way=way: result.get(f'{way}/{k}')
    parts = [f'{way}: {get("images")} images']
    if get('fd_fmnist') is not None:
      parts.append(f'FD-FMNIST {get("fd_fmnist"):.2f} (real-data floor '
                   f'{get("fd_fmnist_floor"):.2f}, untranslated {get("fd_fmnist_input"):.2f})')
    if get('translation_accuracy') is not None:
      parts.append(f'translation accuracy {get("translation_accuracy"):.3f} as '
                   f'{classifier.CLASS_NAMES[get("target_class")]} (real '
                   f'{get("target_class_rate"):.3f})')
    if get('class_match') is not None:
      parts.append(f'class match {get("class_match"):.3f}')
    if get('cycle_l1') is not None:
      parts.append(f'cycle L1 {get("cycle_l1"):.4f}')
    if get('fid') is not None:
      parts.append(f'FID {get("fid"):.3f}')
    lines.append(' | '.join(parts))
  return lines
