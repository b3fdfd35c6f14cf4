"""The Python API: what the command-line programs do, as functions with keyword arguments
and no flag parsing, for notebooks, Colab and scripts.

  import jaxgen.api as jg
  config = jg.load_config('configs/ddpm_fashion_mnist.py', 'tiny', total_steps=20)
  jg.train(config, 'runs/nb')                       # prints progress lines, returns the state
  images = jg.sample('runs/nb', num_images=16, options={'steps': 20}).images   # uint8 NHWC
  jg.evaluate('runs/nb', num_samples=1000)          # FD-FMNIST etc., as jaxgen-eval

The CLIs (`jaxgen-train`, `jaxgen-sample`, `jaxgen-eval`) are thin wrappers over these.
In a notebook, call `configure_jax` first if you want simulated CPU devices.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from jaxgen import inference, latents, metrics, objectives, paths
from jaxgen.jax_setup import configure_jax

__all__ = ['configure_jax', 'load_config', 'train', 'sample', 'interpolate', 'style_mixing',
           'sweep', 'evaluate', 'SampleResult']


def load_config(path: str | os.PathLike, variant: str | None = None, **overrides
                ) -> ml_collections.ConfigDict:
  """`get_config(variant)` of a config file, with dotted-path overrides given as keyword
  arguments with `__` for the dots: `load_config(f, 'tiny', model__ch=16, total_steps=9)`.
  A misspelt field raises ConfigError naming it."""
  from jaxgen import config_files, validate

  config = config_files.load(path, variant)
  try:
    with config.unlocked():
      for key, value in overrides.items():
        *parents, leaf = key.split('__')
        node = config
        for part in parents:
          node = node[part]
        node[leaf]  # a missing field raises here (with a suggestion), never gets created
        node[leaf] = value
  except (KeyError, AttributeError) as e:
    raise validate.ConfigError(config_files.missing_field(
        e, [k.replace('__', '.') for k in overrides])) from None
  return config


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
          ) -> Any:
  """Train (or resume) `config` in `workdir`, printing progress lines; returns the state."""
  from jaxgen import train as train_lib  # the sampling programs use this module too

  return train_lib.run(config, workdir, stop_at_step=stop_at_step)


@dataclasses.dataclass
class SampleResult:
  images: np.ndarray  # uint8 [N, H, W, C]
  step: int  # the checkpoint's step
  config: ml_collections.ConfigDict  # the run's config
  output: str | None  # path without extension of the written .png/.npz, if written


def sample(workdir: str, *, step: int | None = None, num_images: int = 64,
           batch_size: int = 500, seed: int = 0, options: Mapping[str, Any] | None = None,
           output: str | None = None) -> SampleResult:
  """Samples from a run's checkpoint (latest if `step` is None), `batch_size` at a time.

  `options` are the model's sampling options (as `--sample.NAME=VALUE`). With `output`
  (a path without extension; '' for the default `<workdir>/samples/sample_<step>...`) the
  grid and the images are also written as `<output>.png` and `<output>.npz`.
  """
  s, state, step, config = inference.restore_for_sampling(workdir, step)
  inference.check_generates(s)
  images = inference.generate(s, state, num_images, batch_size, seed,
                              **inference.sample_options(s.objective, options))
  if output is None:
    return SampleResult(images, step, config, None)
  name = f'sample_{step:07d}' + ''.join(f'_{k}-{v}' for k, v in sorted((options or {}).items()))
  output = os.fspath(paths.workdir_path(output or f'{workdir}/samples/{name}'))
  paths.workdir_path(output).parent.mkdir(parents=True, exist_ok=True)
  labels_given = 'labels' in (options or {})
  metrics.save_png(f'{output}.png',
                   metrics.sample_grid(images, 0 if labels_given else s.objective.sample_classes))
  with paths.workdir_path(f'{output}.npz').open('wb') as f:
    np.savez_compressed(f, images=images)
  return SampleResult(images, step, config, output)


def interpolate(workdir: str, *, step: int | None = None, num_pairs: int = 8,
                num_steps: int = 10, seed: int = 0, output: str | None = None,
                options: Mapping[str, Any] | None = None) -> tuple[list[str], int]:
  """Latent walks of a run: for a family that encodes, linear and spherical walks between
  pairs of evaluation images, and a grid of prior samples; for one with prior latents (a
  GAN), straight walks between pairs of them (in w). Writes the grids, returns
  (paths, step)."""
  import jax

  from jaxgen import build
  from jaxgen.data import pipeline

  s, state, step, config = inference.restore_for_sampling(workdir, step)
  if s.objective.encode is None and s.objective.prior_latents is None:
    raise ValueError(f'--interpolate needs a model with an encoder or prior latents; '
                     f'objective {config.objective!r} has neither')
  options = inference.sample_options(s.objective, options)
  base = paths.workdir_path(output or f'{workdir}/samples/interpolate_{step:07d}')
  base.parent.mkdir(parents=True, exist_ok=True)
  written = []
  if s.objective.encode is None:
    for path, walk in latents.prior_walks(s, state, jax.random.key(seed), num_pairs,
                                          num_steps, **options).items():
      written.append(f'{base}_{path}.png')
      metrics.save_png(written[-1], metrics.image_grid(walk.reshape(-1, *walk.shape[2:]),
                                                       columns=num_steps))
    return written, step
  images = pipeline.load_images(config.data, config.data.eval_split, 2 * num_pairs)
  walks = latents.interpolate(s, state, images, num_steps)
  originals = np.asarray(jax.device_get(objectives.to_uint8(images)))
  for path, walk in walks.items():
    written.append(f'{base}_{path}.png')
    metrics.save_png(written[-1], latents.walk_grid(originals, walk))
  if s.objective.sample is not None:
    prior = build.jit_sample(s, num_pairs * num_steps, **options)(state, jax.random.key(seed))
    written.append(f'{base}_prior.png')
    metrics.save_png(written[-1], metrics.image_grid(prior, columns=num_steps))
  return written, step


def style_mixing(workdir: str, *, step: int | None = None, num_rows: int = 5,
                 num_columns: int = 6, seed: int = 0, output: str | None = None,
                 options: Mapping[str, Any] | None = None) -> tuple[list[str], int]:
  """The StyleGAN paper's style-mixing figure, one grid per style range (coarse, middle,
  fine): `<output>_<range>.png`. Returns (paths, step)."""
  import jax

  s, state, step, config = inference.restore_for_sampling(workdir, step)
  if not s.objective.style_ranges:
    raise ValueError(f'--style_mixing needs a model with per-layer styles (StyleGAN2); this '
                     f'{config.objective} run ({config.model.name}) has none')
  options = inference.sample_options(s.objective, options)
  grids = latents.style_mixing(s, state, jax.random.key(seed), num_rows, num_columns,
                               **options)
  base = paths.workdir_path(output or f'{workdir}/samples/style_mixing_{step:07d}')
  base.parent.mkdir(parents=True, exist_ok=True)
  written = []
  for name, grid in grids.items():
    written.append(f'{base}_{name}.png')
    metrics.save_png(written[-1], grid)
  return written, step


def sweep(workdir: str, name: str, values: list[str], *, step: int | None = None,
          num_images: int = 8, seed: int = 0, output: str | None = None,
          options: Mapping[str, Any] | None = None) -> tuple[str, int]:
  """One sampling option swept over `values` with everything else fixed (the same seed,
  so the same latents): one column per value, one row per image, e.g. a truncation sweep
  `sweep(w, 'truncation_psi', ['1', '0.7', '0.5', '0'])`. Returns (path, step)."""
  s, state, step, _ = inference.restore_for_sampling(workdir, step)  # once for all values
  inference.check_generates(s)
  columns = [inference.generate(s, state, num_images, num_images, seed,
                                **inference.sample_options(s.objective,
                                                           {**(options or {}), name: value}))
             for value in values]
  images = np.stack(columns, axis=1)  # [num_images, len(values), H, W, C]
  path = os.fspath(paths.workdir_path(
      output or f'{workdir}/samples/sweep_{step:07d}_{name}')) + '.png'
  paths.workdir_path(path).parent.mkdir(parents=True, exist_ok=True)
  metrics.save_png(path, metrics.image_grid(images.reshape(-1, *images.shape[2:]),
                                            columns=len(values)))
  return path, step


def evaluate(workdir: str, **options) -> dict[str, Any]:
  """jaxgen-eval on a run: keyword arguments are `jaxgen.eval.evaluate.Options` fields
  (`num_samples`, `step`, `classifier_dir`, `sample_options`, ...). Returns the
  evaluated.json state ({'evaluated': [...], 'best': ...})."""
  from jaxgen.eval import evaluate as evaluate_lib

  return evaluate_lib.evaluate_workdir(workdir, evaluate_lib.Options(**options))
