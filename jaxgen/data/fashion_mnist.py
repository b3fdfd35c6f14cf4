"""Fashion-MNIST as a TFDS dataset built from the four standard IDX files.

TFDS's own `fashion_mnist` builder needs the internet (and TensorFlow to
prepare). This builder writes the same examples (28x28x1 uint8 images, labels
0-9, `train`/`test` splits) to array_record from local IDX files, e.g. those
of Debian's `dataset-fashion-mnist` package, so `tfds.data_source` reads them
without TensorFlow.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
HOW_TO_GET = ('install the Debian package `dataset-fashion-mnist` (apt-get install '
              'dataset-fashion-mnist), or put the four IDX files (train-images-idx3-ubyte.gz, '
              '...) in a folder and set --config.data.manual_dir to it')


class IdxFormatError(ValueError):
  pass


def _find(idx_dir: str, stem: str) -> str:
  for name in (stem + '.gz', stem):
    path = os.path.join(idx_dir, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f'Fashion-MNIST file {stem}(.gz) not found in {idx_dir!r}: {HOW_TO_GET}')


def read_idx(path: str) -> np.ndarray:
  """An IDX file (optionally gzipped) as a numpy array; checks magic number and size."""
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise IdxFormatError(f'{path}: cannot read IDX file ({e}); re-download or reinstall it') from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise IdxFormatError(f'{path}: not an unsigned-byte IDX file (bad magic number)')
  ndim = data[3]
  shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise IdxFormatError(f'{path}: truncated IDX file ({body.size} bytes for shape {shape})')
  return body.reshape(shape)


def read_split(idx_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  image_stem, label_stem = IDX_FILES[split]
  images = read_idx(_find(idx_dir, image_stem))
  labels = read_idx(_find(idx_dir, label_stem))
  if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
    raise IdxFormatError(f'{idx_dir}: {split} images {images.shape} and labels {labels.shape} '
                         'are not a Fashion-MNIST split')
  return images[..., None], labels


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local IDX files (pass `idx_dir`)."""

  VERSION = tfds.core.Version('3.0.1')
  name = 'fashion_mnist_idx'

  def __init__(self, *, idx_dir: str = DEFAULT_IDX_DIR, **kwargs):
    self._idx_dir = idx_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST (Xiao et al. 2017) from local IDX files.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
        homepage='https://github.com/zalandoresearch/fashion-mnist')

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in IDX_FILES}

  def _generate_examples(self, split):
    images, labels = read_split(self._idx_dir, split)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image, 'label': int(label)}


def data_source(split: str, data_dir: str | None, idx_dir: str, builder_class=None):
  """The prepared array_record source of a builder that reads the IDX files (Fashion-MNIST's
  own by default), preparing it from them on first use."""
  builder_class = builder_class or FashionMnistIdx
  builder = builder_class(idx_dir=idx_dir, data_dir=data_dir, file_format='array_record')
  if not builder.is_prepared():
    for stems in IDX_FILES.values():
      for stem in stems:
        _find(idx_dir, stem)  # fail before TFDS creates anything
    builder.download_and_prepare()
  base = split.split('[')[0]
  if base not in builder.info.splits:
    raise ValueError(f'{builder.name} has no split {base!r}; its splits are '
                     f'{sorted(builder.info.splits)}')
  if builder.info.splits[split].num_examples == 0:
    return []  # array_record cannot open an empty selection such as 'train[64:]'
  return builder.as_data_source(split=split)
