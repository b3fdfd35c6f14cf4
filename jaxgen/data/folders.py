"""Image-to-image datasets from the folder layouts pix2pix and CycleGAN users already have,
written as TFDS array_record datasets that the trainer reads by name (`jaxgen-data`).

  pix2pix layout (facades, edges2shoes, maps): DIR/<split>/*.jpg|png, each file the pair
    side by side, A on the left half and B on the right. Features `a` and `b`; one split per
    subfolder (train, val, test). Train A -> B with data.source_key='a', target_key='b'
    (facades is trained B -> A: source_key='b', target_key='a').
  cyclegan layout (horse2zebra, ...): DIR/trainA, trainB, testA, testB (any folders), each a
    folder of images. The features of TFDS's cycle_gan/*: `image`, and `label` (A or B, from
    the folder name's last letter); one split per folder.

Images keep their size (stored as PNG); the pipeline resizes them (`data.resize`). A file
that is not a readable image (or a pix2pix file of odd width) is named and skipped.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import types
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

LAYOUTS = ('pix2pix', 'cyclegan')
EXTENSIONS = ('.png', '.jpg', '.jpeg')


class FolderError(ValueError):
  """A folder that does not have the layout asked for; the message says what to change."""


def _png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def _files(directory: str) -> list[str]:
  return sorted(n for n in os.listdir(directory) if n.lower().endswith(EXTENSIONS))


def splits_of(input_dir: str, layout: str) -> dict[str, str]:
  """{split name: folder} of every subfolder of `input_dir` that holds images."""
  if layout not in LAYOUTS:
    raise FolderError(f'layout {layout!r}: use one of {", ".join(LAYOUTS)}')
  if not os.path.isdir(input_dir):
    raise FolderError(f'{input_dir} is not a folder')
  splits = {name: os.path.join(input_dir, name) for name in sorted(os.listdir(input_dir))
            if os.path.isdir(os.path.join(input_dir, name))
            and _files(os.path.join(input_dir, name))}
  example = ('train/, val/, test/ of A|B side-by-side images' if layout == 'pix2pix'
             else 'trainA/, trainB/, testA/, testB/ of images')
  if not splits:
    raise FolderError(f'{input_dir} has no subfolders with PNG/JPEG images; the {layout} '
                      f'layout is {example}')
  if layout == 'cyclegan':
    odd = [name for name in splits if name[-1] not in 'AB']
    if odd:
      raise FolderError(f'{input_dir}: folders {odd} do not end in A or B; the cyclegan layout '
                        f'is {example}')
  return splits


def _examples(folder: str, layout: str, channels: int, skipped: list[tuple[str, str]]
              ) -> Iterator[tuple[str, dict]]:
  mode = 'L' if channels == 1 else 'RGB'
  for name in _files(folder):
    path = os.path.join(folder, name)
    try:
      with Image.open(path) as image:
        image = image.convert(mode)
    except (OSError, ValueError, UnidentifiedImageError) as e:
      skipped.append((path, f'not a readable image ({type(e).__name__}: {e})'))
      continue
    if layout == 'cyclegan':
      yield name, {'image': _png(image), 'label': os.path.basename(folder)[-1]}
      continue
    width, height = image.size
    if width % 2:
      skipped.append((path, f'width {width} is odd: not two images side by side'))
      continue
    half = width // 2
    yield name, {'a': _png(image.crop((0, 0, half, height))),
                 'b': _png(image.crop((half, 0, width, height)))}


def builder_class(name: str, input_dir: str, layout: str, channels: int = 3):
  """A TFDS builder class named `name` that reads `input_dir` in `layout`."""
  splits = splits_of(input_dir, layout)
  image = tfds.features.Image(shape=(None, None, channels), encoding_format='png')
  if layout == 'pix2pix':
    features = {'a': image, 'b': image}
  else:
    features = {'image': image, 'label': tfds.features.ClassLabel(names=['A', 'B'])}

  class Folders(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')
    skipped: list[tuple[str, str]] = []

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
          builder=self, description=f'{layout} folders of {os.path.abspath(input_dir)}',
          features=tfds.features.FeaturesDict(features), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: _examples(folder, layout, channels, self.skipped)
              for split, folder in splits.items()}

    def _generate_examples(self, *args):  # the generators above are the examples
      raise NotImplementedError

  return types.new_class(name, (Folders,), {'skip_registration': True},
                         lambda ns: ns.update({'name': name}))


def build(name: str, input_dir: str, layout: str, data_dir: str | None = None,
          channels: int = 3) -> dict:
  """Writes the TFDS dataset `name` (array_record) into `data_dir`; returns {'splits':
  {split: examples}, 'skipped': [(path, reason)], 'path': where it was written}."""
  if not name.isidentifier() or name != name.lower():
    raise FolderError(f'--name={name!r}: use a lower-case Python identifier (e.g. facades)')
  if channels not in (1, 3):
    raise FolderError(f'--channels={channels}: use 1 (grey) or 3 (RGB)')
  cls = builder_class(name, input_dir, layout, channels)
  builder = cls(data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    raise FolderError(f'{builder.data_dir} already holds {name}: delete it to rebuild, or '
                      'pick another --name')
  builder.download_and_prepare()
  for path, reason in cls.skipped:
    logging.warning('skipped %s: %s', path, reason)
  splits = {split: info.num_examples for split, info in builder.info.splits.items()}
  empty = [split for split, count in splits.items() if count == 0]
  if empty:
    shutil.rmtree(builder.data_dir)  # written just now: no half-usable dataset stays
    raise FolderError(f'splits {empty} of {input_dir} have no readable images (skipped: '
                      f'{", ".join(os.path.basename(p) for p, _ in cls.skipped)}); nothing '
                      'was written')
  return {'splits': splits, 'skipped': list(cls.skipped), 'path': builder.data_dir,
          'shape': _first_shape(builder, next(iter(splits)))}


def _first_shape(builder, split: str) -> tuple[int, ...]:
  example = builder.as_data_source(split=split)[0]
  return tuple(np.asarray(example['a' if 'a' in example else 'image']).shape)
