"""TFDS source -> grain pipeline -> sharded global batches.

Every process computes the same shuffled sequence of example *indices* and cuts it
into global batches, then reads and decodes only its own rows of each (rows
`process_index * local : (process_index + 1) * local`). The trainer turns those into
global `jax.Array`s with `jax.make_array_from_process_local_data`, also with one
process: one code path, and the same global batches for any number of processes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import fashion_mnist, fashion_translation

# Datasets that are built here from the Fashion-MNIST IDX files when TFDS has not prepared
# them (`data.manual_dir`): no download needed.
FROM_IDX_FILES = {'fashion_mnist': fashion_mnist.FashionMnistIdx,
                  **fashion_translation.BUILDERS}


def is_fashion_mnist(cfg: ml_collections.ConfigDict) -> bool:
  """Whether the dataset's images are Fashion-MNIST garments (Fashion-MNIST itself or one
  made from its IDX files), which the FD-FMNIST classifier can measure."""
  return cfg.name in FROM_IDX_FILES


class DataError(ValueError):
  """A dataset that cannot be read as configured; the message says how to fix it."""


def load_source(cfg: ml_collections.ConfigDict, split: str | None = None):
  """A random-access source (`len`, `__getitem__`) for the configured TFDS split."""
  split = split or cfg.split
  data_dir = cfg.data_dir or None
  try:
    source = tfds.data_source(cfg.name, split=split, data_dir=data_dir, download=False)
  except (tfds.core.DatasetNotFoundError, AssertionError, KeyError, NotImplementedError) as e:
    if cfg.name not in FROM_IDX_FILES:
      raise DataError(f'TFDS dataset {cfg.name!r} is not prepared as array_record in '
                      f'data_dir={data_dir!r}: prepare it with `tfds build {cfg.name} '
                      '--file_format=array_record` (needs the internet) or set '
                      '--config.data.data_dir to where it is.') from e
    logging.info('TFDS %s not prepared; building it from the IDX files in %s', cfg.name,
                 cfg.manual_dir)
    try:
      source = fashion_mnist.data_source(split, data_dir, cfg.manual_dir,
                                         FROM_IDX_FILES[cfg.name])
    except (FileNotFoundError, fashion_mnist.IdxFormatError) as e2:
      raise DataError(str(e2)) from e2
    except ValueError as e2:
      raise DataError(f'data.split={split!r}: {e2}') from e2
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


def _image_of(example: dict[str, np.ndarray], key: str, index: int,
              cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """The preprocessed image `key` of example `index` of `split`; errors name the example."""
  if key not in example:
    raise DataError(f'{cfg.name} examples have no feature {key!r} (they have '
                    f'{sorted(example)}); set the data section\'s image/source/target keys')
  try:
    return preprocess_image(example[key], cfg)
  except DataError as e:
    feature = f' ({key})' if key != cfg.image_key else ''  # a pair: say which image
    raise DataError(f'{cfg.name} split {split!r} example {index}{feature}: {e}') from e


def read_examples(source, indices: list[int], cfg: ml_collections.ConfigDict, split: str
                  ) -> list[dict[str, np.ndarray]]:
  """Examples `indices` of `split`, decoded, read in one call where the source can (TFDS's
  array_record sources: one parallel read, a third of the time of 64 single reads); a
  record that fails is then read alone, so the DataError names it."""
  read_all = getattr(source, '__getitems__', None)
  if read_all is not None:
    try:
      return list(read_all(indices))
    except Exception:  # noqa: BLE001  (read one by one below: the error names the record)
      logging.info('a batch read of %s failed; reading its records one by one', cfg.name)
  return [read_example(source, index, cfg, split) for index in indices]


CACHE_CHUNK = 1024  # records per read while filling the in-memory cache


def in_memory(source, cfg: ml_collections.ConfigDict, split: str, keys: list[str]) -> list:
  """Every example of `source`, read and decoded once, as a list of dicts of numpy arrays
  holding only `keys` (the features the run uses): `data.cache_in_memory`. A list is a
  random-access source like TFDS's, so the pipeline reads it the same way, but a batch then
  costs no record read, parse or PNG decode: for the demo's batches of 64 Fashion-MNIST
  images, most of the input pipeline's CPU, which ran on the same two cores as the step. A
  corrupt record fails here, at start, with the DataError of `read_example`."""
  cached = []
  for start in range(0, len(source), CACHE_CHUNK):
    indices = list(range(start, min(start + CACHE_CHUNK, len(source))))
    for example in read_examples(source, indices, cfg, split):
      # An example without a wanted key stays whole: the error of `_image_of` lists its keys.
      cached.append({k: example[k] for k in keys} if all(k in example for k in keys)
                    else example)
  logging.info('%s split %r: %d examples cached in memory', cfg.name, split, len(cached))
  return cached


def used_keys(cfg: ml_collections.ConfigDict) -> list[str]:
  """The features a training batch reads from an example of this data section."""
  kind = translation_kind(cfg)
  if kind == 'paired':
    return [cfg.source_key, cfg.target_key]
  return [cfg.image_key] + ([cfg.label_key] if cfg.label_key and not kind else [])


def image_of(example: dict[str, np.ndarray], index: int, cfg: ml_collections.ConfigDict,
             split: str) -> np.ndarray:
  """The preprocessed image of example `index` of `split`; errors name the example."""
  return _image_of(example, cfg.image_key, index, cfg, split)


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


def translation_kind(cfg: ml_collections.ConfigDict) -> str | None:
  """'paired' (two images per example: `source_key` -> `target_key`), 'unpaired' (two
  datasets or splits at once: `split` and `target_split`), or None (one image per example).
  Translation batches hold `source` and `target` images; the others `image` (and `label`)."""
  if cfg.get('source_key'):
    return 'paired'
  if cfg.get('target_split'):
    return 'unpaired'
  return None


def target_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The data section that reads an unpaired run's target domain (`target_name`, or the same
  dataset, at `target_split`)."""
  target = ml_collections.ConfigDict(cfg.to_dict())
  target.name = cfg.get('target_name') or cfg.name
  target.split = cfg.target_split
  target.eval_split = cfg.get('target_eval_split') or cfg.eval_split
  return target


def jitter(images: list[np.ndarray], make_rng: Callable[[], np.random.Generator],
           cfg: ml_collections.ConfigDict) -> list[np.ndarray]:
  """pix2pix's random jitter, the same for every image of the list (a source and its
  target): resize to `jitter_size` (bicubic), random crop back to `image_size`, and a
  random horizontal flip when `random_flip`. Without jitter_size, only the flip. The
  generator is made only when a draw is needed: the demo, which never flips, made a
  `default_rng` per image (~15 us each); its pipeline's CPU per batch of 64 went 5.8-6.3 ->
  5.4-6.1 ms without them (2-core Intel Xeon, one run after the other)."""
  size, big = cfg.image_size, cfg.get('jitter_size', 0)
  if not cfg.random_flip and not (big and big != size):
    return images
  rng = make_rng()
  if big and big != size:
    top, left = rng.integers(0, big - size + 1, size=2)
    images = [_resize(image, big)[top:top + size, left:left + size] for image in images]
  if cfg.random_flip and rng.random() < 0.5:
    images = [image[:, ::-1] for image in images]
  return images


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  """float [H, W, C] in [-1, 1] -> [size, size, C], bicubic (clipped, as on uint8 images),
  channel by channel in PIL's float mode."""
  channels = [Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
              for c in range(image.shape[-1])]
  resized = [np.asarray(c.resize((size, size), Image.BICUBIC)) for c in channels]
  return np.clip(np.stack(resized, axis=-1), -1.0, 1.0)


class _Fields:
  """A data section's fields as plain attributes, for the code that runs per image: reading a
  ConfigDict field costs ~0.8 us (timeit), and ~10 reads per image were ~0.6 ms of a 64-image
  batch under cProfile (2-core AMD EPYC). Reads only: `.name`, `.get(key, default)`."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.__dict__.update(cfg.to_dict())

  def get(self, key: str, default=None):
    return self.__dict__.get(key, default)


def _index_batches(length: int, global_batch_size: int, seed: int, repeat: bool):
  indices = grain.MapDataset.range(length).seed(seed).shuffle()
  if repeat:
    indices = indices.repeat(None)  # reshuffled every epoch
  return indices.batch(global_batch_size, drop_remainder=True)


def make_dataset(cfg: ml_collections.ConfigDict, global_batch_size: int, seed: int,
                 *, process_index: int | None = None, process_count: int | None = None,
                 split: str | None = None, repeat: bool = True) -> grain.MapDataset:
  """This process's rows of each global batch: shuffle, repeat, batch, read, decode, flip.

  An unpaired translation dataset shuffles its two domains apart (seeds `seed` and
  `seed + 1`) and zips them by batch number: one iterator position covers both."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise DataError(f'global_batch_size={global_batch_size} is not divisible by the '
                    f'{process_count} processes')
  kind = translation_kind(cfg)
  split = split or cfg.split
  domains = [(cfg, split, load_source(cfg, split))]
  if kind == 'unpaired':
    target = target_config(cfg)
    target_split = target.split if split == cfg.split else target.eval_split
    domains.append((target, target_split, load_source(target, target_split)))
  if cfg.get('cache_in_memory'):
    domains = [(domain_cfg, domain_split, in_memory(source, domain_cfg, domain_split,
                                                      used_keys(domain_cfg)))
               for domain_cfg, domain_split, source in domains]
  for domain_cfg, domain_split, source in domains:
    if len(source) < global_batch_size:
      raise DataError(f'{domain_cfg.name} split {domain_split!r} has {len(source)} examples, '
                      f'fewer than one global batch of {global_batch_size}')
  local_batch = global_batch_size // process_count
  # Shuffle and batch *indices* globally (every process computes the same permutation),
  # then each process reads and decodes only its own rows of each global batch. So the
  # global batches are the same whatever the number of processes, and nothing is read twice.
  streams = [_index_batches(len(source), global_batch_size, seed + i, repeat)
             for i, (_, _, source) in enumerate(domains)]
  batches = streams[0]
  if len(streams) == 2:
    other = streams[1]
    if not repeat:
      length = min(len(batches), len(other))
      batches, other = batches[:length], other[:length]
    batches = batches.map_with_index(lambda number, first: (first, other[number]))
  first_row = process_index * local_batch
  cfg = _Fields(cfg)
  domains = [(_Fields(domain_cfg), domain_split, source)
             for domain_cfg, domain_split, source in domains]

  def rows(global_indices: np.ndarray) -> list[int]:
    return [int(i) for i in global_indices[first_row:first_row + local_batch]]

  def load(batch_number: int, global_indices) -> dict[str, np.ndarray]:
    per_domain = global_indices if kind == 'unpaired' else (global_indices,)
    out: dict[str, list] = {}
    for d, ((domain_cfg, domain_split, source), indices) in enumerate(zip(domains, per_domain)):
      indices = rows(indices)
      examples = read_examples(source, indices, domain_cfg, domain_split)
      for row, (index, example) in enumerate(zip(indices, examples)):
        # Random decisions depend on the global position only, not on the process layout.
        make_rng = functools.partial(np.random.default_rng,
                                     [seed, batch_number, first_row + row] + [d] * bool(d))
        if kind == 'paired':
          keys = {'source': cfg.source_key, 'target': cfg.target_key}
        else:
          keys = {('source', 'target')[d] if kind else 'image': domain_cfg.image_key}
        images = [_image_of(example, key, index, domain_cfg, domain_split)
                  for key in keys.values()]
        for name, image in zip(keys, jitter(images, make_rng, domain_cfg)):
          out.setdefault(name, []).append(image)
        if cfg.label_key and not kind:
          out.setdefault('label', []).append(example[cfg.label_key])
    return {k: np.ascontiguousarray(np.stack(v)) if k != 'label' else np.asarray(v, np.int32)
            for k, v in out.items()}

  return batches.map_with_index(load)


def load_images(cfg: ml_collections.ConfigDict, split: str, count: int) -> np.ndarray:
  """The first `count` images of `split`, preprocessed: a fixed set to show reconstructions of."""
  source = load_source(cfg, split)
  if len(source) < count:
    raise DataError(f'{cfg.name} split {split!r} has {len(source)} examples; {count} are needed')
  return np.stack([read_image(source, i, cfg, split) for i in range(count)])


def read_rows(source, indices: list[int], cfg: ml_collections.ConfigDict, split: str
              ) -> dict[str, np.ndarray]:
  """Examples `indices` of `split`, preprocessed without randomness: `source` and `target`
  images of a paired dataset, else `image`."""
  examples = [(i, read_example(source, i, cfg, split)) for i in indices]
  keys = ({'source': cfg.source_key, 'target': cfg.target_key}
          if translation_kind(cfg) == 'paired' else {'image': cfg.image_key})
  return {name: np.stack([_image_of(e, key, i, cfg, split) for i, e in examples])
          for name, key in keys.items()}


def load_pairs(cfg: ml_collections.ConfigDict, count: int) -> tuple[np.ndarray, np.ndarray]:
  """(sources, targets) of the first `count` examples of the evaluation split(s), without
  jitter: a paired dataset's pairs, or an unpaired one's first images of each domain."""
  if translation_kind(cfg) == 'paired':
    source = load_source(cfg, cfg.eval_split)
    if len(source) < count:
      raise DataError(f'{cfg.name} split {cfg.eval_split!r} has {len(source)} examples; '
                      f'{count} are needed')
    rows = read_rows(source, list(range(count)), cfg, cfg.eval_split)
    return rows['source'], rows['target']
  target = target_config(cfg)
  return (load_images(cfg, cfg.eval_split, count),
          load_images(target, target.eval_split, count))


def make_iterator(ds: grain.MapDataset, num_threads: int) -> grain.DatasetIterator:
  """A checkpointable iterator (its state goes into the orbax checkpoint)."""
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  return iter(ds.to_iter_dataset(read))


def global_batch(local: dict[str, np.ndarray], sharding: jax.sharding.Sharding
                 ) -> dict[str, jax.Array]:
  """Assemble per-process batches into global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
