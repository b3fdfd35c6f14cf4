"""The periodic image grids of a training run: samples from fixed noise, reconstructions
of fixed evaluation images for families that encode, and translations of fixed evaluation
sources for image-to-image families."""

from __future__ import annotations

import jax
import numpy as np
from etils import epath

from jaxgen import build, metrics, objectives, paths
from jaxgen.data import pipeline

SAMPLES_DIR = 'samples'


def paired_grid(originals: np.ndarray, *others: np.ndarray, columns: int = 8) -> np.ndarray:
  """Rows of up to `columns` originals, each followed by the same columns of `others` (their
  reconstructions; or translations, then targets)."""
  rows = []
  for start in range(0, len(originals), columns):
    rows += [x[start:start + columns] for x in (originals, *others)]
  width = min(columns, len(originals))
  padded = [np.concatenate([r, np.zeros((width - len(r), *r.shape[1:]), np.uint8)])
            for r in rows]
  return metrics.image_grid(np.concatenate(padded), columns=width)


class Grids:
  """Sample grids drawn from the same noise (`rng`) at every step, as GAN and diffusion
  codebases do, so grids of different steps show the same samples as training goes on."""

  def __init__(self, s: build.Setup, workdir: str, rng: jax.Array):
    config = s.config
    self.directory = paths.workdir_path(workdir) / SAMPLES_DIR
    self.rng = rng
    self.sample = (build.jit_sample(s, config.num_sample_images) if s.objective.sample
                   else None)
    self.sample_classes = s.objective.sample_classes
    self.reconstruct, self.originals = None, None
    if s.objective.encode is not None:
      images = pipeline.load_images(config.data, config.data.eval_split, config.num_sample_images)
      self.originals = np.asarray(jax.device_get(objectives.to_uint8(images)))
      self.reconstruct = build.jit_reconstruct(s, images)
    self.translate = None
    if s.objective.translate is not None:
      pairs = pipeline.load_pairs(config.data, config.num_sample_images)
      self.sources, self.targets = (np.asarray(jax.device_get(objectives.to_uint8(x)))
                                    for x in pairs)
      # The same dropout key every time: grids of different steps differ by training only.
      ways = [(direction, build.jit_translate(s, len(pairs[0]), direction), images)
              for direction, images in zip(('a2b', 'b2a'), pairs)
              if direction in s.objective.translation_directions]
      self.translate = lambda state: {d: fn(state, images, rng) for d, fn, images in ways}

  def images(self, state) -> dict[str, tuple[str, np.ndarray]]:
    """{file name suffix: (TensorBoard tag, grid)} for `state`."""
    grids = {}
    if self.sample:
      grids[''] = ('samples', metrics.sample_grid(self.sample(state, self.rng),
                                                  self.sample_classes))
    if self.reconstruct:
      grids['reconstructions_'] = ('reconstructions',
                                   paired_grid(self.originals, self.reconstruct(state)))
    if self.translate:
      outputs = self.translate(state)
      rows = ((self.sources, outputs['a2b'], self.targets, outputs['b2a']) if 'b2a' in outputs
              else (self.sources, outputs['a2b'], self.targets))
      grids['translations_'] = ('translations', paired_grid(*rows))
    return grids

  def write(self, state, step: int, writer: metrics.MetricWriter) -> list[epath.Path]:
    written = []
    for prefix, (tag, grid) in self.images(state).items():
      path = self.directory / f'{prefix}step_{step:07d}.png'
      if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics.save_png(path, grid)
        writer.write_image(step, tag, grid)
      written.append(path)
    return written
