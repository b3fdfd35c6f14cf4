"""TFDS source -> grain pipeline -> sharded global batches.

Every process computes the same shuffled sequence of example *indices* and cuts it
into global batches, then reads and decodes only its own rows of each (rows
`process_index * local : (process_index + 1) * local`). The trainer turns those into
global `jax.Array`s with `jax.make_array_from_process_local_data`, also with one
process: one code path, and the same global batches for any number of processes.
"""

from __future__ import annotations

import logging

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import fashion_mnist


class DataError(ValueError):
  """A dataset that cannot be read as configured; the message says how to fix it."""


def load_source(cfg: ml_collections.ConfigDict, split: str | None = None):
  """A random-access source (`len`, `__getitem__`) for the configured TFDS split."""
  split = split or cfg.split
  data_dir = cfg.data_dir or None
  try:
    source = tfds.data_source(cfg.name, split=split, data_dir=data_dir, download=False)
  except (tfds.core.DatasetNotFoundError, AssertionError, KeyError, NotImplementedError) as e:
    if cfg.name != 'fashion_mnist':
      raise DataError(f'TFDS dataset {cfg.name!r} is not prepared as array_record in '
                      f'data_dir={data_dir!r}: prepare it with `tfds build {cfg.name} '
                      '--file_format=array_record` (needs the internet) or set '
                      '--config.data.data_dir to where it is.') from e
    logging.info('TFDS fashion_mnist not prepared; using the IDX files in %s', cfg.manual_dir)
    try:
      source = fashion_mnist.data_source(split, data_dir, cfg.manual_dir)
    except (FileNotFoundError, fashion_mnist.IdxFormatError) as e2:
      raise DataError(str(e2)) from e2
  except ValueError as e:
    raise DataError(f'data.split={split!r} of {cfg.name!r}: {e}') from e
  if len(source) == 0:
    raise DataError(f'data.split={split!r} of {cfg.name!r} is empty')
  return source


def read_example(source, index: int, cfg: ml_collections.ConfigDict, split: str
                 ) -> dict[str, np.ndarray]:
  """Example `index` of `split`, decoded; a corrupt record is a DataError naming it."""
  try:
    return source[index]
  except Exception as e:  # noqa: BLE001  (PIL, OpenCV, array_record and TFDS all differ)
    where = f'{cfg.data_dir or "~/tensorflow_datasets"}/{cfg.name}'
    raise DataError(f'{cfg.name} split {split!r}: example {index} cannot be read or decoded '
                    f'({type(e).__name__}: {e}). The prepared dataset is corrupt or truncated: '
                    f'delete {where} and prepare it again (`tfds build {cfg.name} '
                    '--file_format=array_record`; Fashion-MNIST is rebuilt from its IDX files '
                    'by itself)') from e


def image_of(example: dict[str, np.ndarray], index: int, cfg: ml_collections.ConfigDict,
             split: str) -> np.ndarray:
  """The preprocessed image of example `index` of `split`; errors name the example."""
  try:
    return preprocess_image(example[cfg.image_key], cfg)
  except DataError as e:
    raise DataError(f'{cfg.name} split {split!r} example {index}: {e}') from e


def read_image(source, index: int, cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  return image_of(read_example(source, index, cfg, split), index, cfg, split)


def preprocess_image(image: np.ndarray, cfg: ml_collections.ConfigDict) -> np.ndarray:
  """uint8 [H, W, C] -> float32 [size, size, channels] in [-1, 1], padded or resized."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] != cfg.channels or image.dtype != np.uint8:
    raise DataError(f'got an image of shape {image.shape} and dtype {image.dtype}; '
                    f'data.channels={cfg.channels} expects uint8 [H, W, {cfg.channels}]')
  size = cfg.image_size
  height, width = image.shape[:2]
  if cfg.resize == 'resize' and (height, width) != (size, size):
    side = min(height, width)  # centre square crop, then area-aware resize
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top:top + side, left:left + side]
    pil = Image.fromarray(crop[..., 0] if cfg.channels == 1 else crop)
    image = np.asarray(pil.resize((size, size), Image.BICUBIC)).reshape(size, size, -1)
  out = image.astype(np.float32) / 127.5 - 1.0
  if cfg.resize == 'pad' and (height, width) != (size, size):
    if height > size or width > size:
      raise DataError(f'data.resize="pad" cannot pad {height}x{width} to {size}x{size}')
    top, left = (size - height) // 2, (size - width) // 2
    out = np.pad(out, ((top, size - height - top), (left, size - width - left), (0, 0)),
                 constant_values=-1.0)
  if out.shape[:2] != (size, size):
    raise DataError(f'images are {height}x{width} but data.image_size={size}; set '
                    'data.resize to "pad" or "resize"')
  return out


def make_dataset(cfg: ml_collections.ConfigDict, global_batch_size: int, seed: int,
                 *, process_index: int | None = None, process_count: int | None = None,
                 split: str | None = None, repeat: bool = True) -> grain.MapDataset:
  """This process's rows of each global batch: shuffle, repeat, batch, read, decode, flip."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise DataError(f'global_batch_size={global_batch_size} is not divisible by the '
                    f'{process_count} processes')
  source = load_source(cfg, split)
  local_batch = global_batch_size // process_count
  if len(source) < global_batch_size:
    raise DataError(f'{cfg.name} split {split or cfg.split!r} has {len(source)} examples, '
                    f'fewer than one global batch of {global_batch_size}')
  # Shuffle and batch *indices* globally (every process computes the same permutation),
  # then each process reads and decodes only its own rows of each global batch. So the
  # global batches are the same whatever the number of processes, and nothing is read twice.
  indices = grain.MapDataset.range(len(source)).seed(seed).shuffle()
  if repeat:
    indices = indices.repeat(None)  # reshuffled every epoch
  batches = indices.batch(global_batch_size, drop_remainder=True)
  first_row = process_index * local_batch

  def load(batch_number: int, global_indices: np.ndarray) -> dict[str, np.ndarray]:
    mine = [int(i) for i in global_indices[first_row:first_row + local_batch]]
    examples = [read_example(source, i, cfg, split or cfg.split) for i in mine]
    images = []
    for row, (index, example) in enumerate(zip(mine, examples)):
      image = image_of(example, index, cfg, split or cfg.split)
      # Flip decisions depend on the global position only, not on the process layout.
      flip_rng = np.random.default_rng([seed, batch_number, first_row + row])
      if cfg.random_flip and flip_rng.random() < 0.5:
        image = image[:, ::-1]
      images.append(image)
    out = {'image': np.ascontiguousarray(np.stack(images))}
    if cfg.label_key:
      out['label'] = np.asarray([example[cfg.label_key] for example in examples], np.int32)
    return out

  return batches.map_with_index(load)


def load_images(cfg: ml_collections.ConfigDict, split: str, count: int) -> np.ndarray:
  """The first `count` images of `split`, preprocessed: a fixed set to show reconstructions of."""
  source = load_source(cfg, split)
  if len(source) < count:
    raise DataError(f'{cfg.name} split {split!r} has {len(source)} examples; {count} are needed')
  return np.stack([read_image(source, i, cfg, split) for i in range(count)])


def make_iterator(ds: grain.MapDataset, num_threads: int) -> grain.DatasetIterator:
  """A checkpointable iterator (its state goes into the orbax checkpoint)."""
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  return iter(ds.to_iter_dataset(read))


def global_batch(local: dict[str, np.ndarray], sharding: jax.sharding.Sharding
                 ) -> dict[str, jax.Array]:
  """Assemble per-process batches into global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
