"""Image-to-image datasets of our own, built from the Fashion-MNIST IDX files, so the
translation demos and tests run on machines that cannot download pix2pix or CycleGAN data.

edges2fashion (paired, like pix2pix's edges2shoes): each garment's edge map -> the garment.
  Features `edges` and `image` (28x28x1 uint8) and `label`; splits `train` and `test`
  (Fashion-MNIST's). Edges are white lines on black (edges2shoes draws black on white; on
  black, padding to 32 px adds no frame that reads as an edge): the Sobel gradient
  magnitude of the lightly smoothed garment above a threshold.
sneaker2boot (unpaired, like CycleGAN's horse2zebra): domain A is the sneaker class, domain
  B the ankle-boot class, each image in one domain only. The features (`image`, `label` A/B)
  and splits (`trainA`, `trainB`, `testA`, `testB`) are those of TFDS's `cycle_gan/*`, so a
  config switches between them by name alone.

Both are TFDS datasets written as array_record (no TensorFlow needed), prepared on first use
from the IDX files the Fashion-MNIST builder reads.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import fashion_mnist

SNEAKER, BOOT = 7, 9  # Fashion-MNIST class indices of domains A and B
EDGE_THRESHOLD = 0.35  # of the Sobel magnitude of images in [0, 1]


def edge_maps(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, 1] -> uint8 [N, H, W, 1]: 255 on edges, 0 elsewhere.

  A 3x3 binomial blur (so single-pixel texture does not draw lines), then the Sobel
  gradient magnitude, thresholded. Vectorised over the whole split.
  """
  x = images[..., 0].astype(np.float32) / 255.0
  x = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode='edge')
  smooth = (x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]) / 4  # rows
  smooth = (smooth[:, :, :-2] + 2 * smooth[:, :, 1:-1] + smooth[:, :, 2:]) / 4  # columns
  s = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), mode='edge')
  gx = (s[:, :-2, 2:] + 2 * s[:, 1:-1, 2:] + s[:, 2:, 2:]
        - s[:, :-2, :-2] - 2 * s[:, 1:-1, :-2] - s[:, 2:, :-2])
  gy = (s[:, 2:, :-2] + 2 * s[:, 2:, 1:-1] + s[:, 2:, 2:]
        - s[:, :-2, :-2] - 2 * s[:, :-2, 1:-1] - s[:, :-2, 2:])
  edges = np.hypot(gx, gy) > EDGE_THRESHOLD
  return np.where(edges, 255, 0).astype(np.uint8)[..., None]


class _FromIdx(tfds.core.GeneratorBasedBuilder):
  """A builder that reads the Fashion-MNIST IDX files in `idx_dir`."""

  def __init__(self, *, idx_dir: str = fashion_mnist.DEFAULT_IDX_DIR, **kwargs):
    self._idx_dir = idx_dir
    super().__init__(**kwargs)


class Edges2Fashion(_FromIdx):
  """Paired: Fashion-MNIST garments and their edge maps."""

  VERSION = tfds.core.Version('1.0.0')
  name = 'edges2fashion'

  def _info(self) -> tfds.core.DatasetInfo:
    image = tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST garments (image) with their Sobel edge maps (edges).',
        features=tfds.features.FeaturesDict({
            'edges': image, 'image': image,
            'label': tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES)}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in fashion_mnist.IDX_FILES}

  def _generate_examples(self, split):
    images, labels = fashion_mnist.read_split(self._idx_dir, split)
    edges = edge_maps(images)
    for i in range(len(images)):
      yield i, {'edges': edges[i], 'image': images[i], 'label': int(labels[i])}


class Sneaker2Boot(_FromIdx):
  """Unpaired: sneakers (A) and ankle boots (B), in cycle_gan's splits and features."""

  VERSION = tfds.core.Version('1.0.0')
  name = 'sneaker2boot'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST sneakers (domain A) and ankle boots (domain B).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=['A', 'B'])}),
        supervised_keys=('image', 'label'),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {f'{split}{domain}': self._generate_examples(split, domain)
            for split in fashion_mnist.IDX_FILES for domain in 'AB'}

  def _generate_examples(self, split, domain):
    images, labels = fashion_mnist.read_split(self._idx_dir, split)
    for i in np.flatnonzero(labels == (SNEAKER if domain == 'A' else BOOT)):
      yield int(i), {'image': images[i], 'label': 'AB'.index(domain)}


BUILDERS = {b.name: b for b in (Edges2Fashion, Sneaker2Boot)}
