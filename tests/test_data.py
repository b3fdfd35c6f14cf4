"""TFDS (our IDX builder and mock TFDS data) -> grain: values, shards, resume, errors."""

import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config, write_fake_fashion_mnist
from jaxgen.data import pipeline


@pytest.fixture
def idx_dir(tmp_path):
  return write_fake_fashion_mnist(tmp_path / 'idx', num_train=40, num_test=10)


def _data_cfg(tmp_path, idx_dir, **overrides):
  cfg = load_config('tiny').data
  with cfg.unlocked():
    cfg.data_dir = str(tmp_path / 'tfds')
    cfg.manual_dir = str(idx_dir)
    cfg.update(overrides)
  return cfg


def test_idx_files_become_a_tfds_dataset(tmp_path, idx_dir):
  cfg = _data_cfg(tmp_path, idx_dir)
  source = pipeline.load_source(cfg)
  assert len(source) == 40 and len(pipeline.load_source(cfg, 'test')) == 10
  with gzip.open(idx_dir / 'train-images-idx3-ubyte.gz') as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(40, 28, 28, 1)
  np.testing.assert_array_equal(source[7]['image'], raw[7])
  assert int(source[7]['label']) == 7
  # A second load reads the prepared array_record files (no IDX files needed any more).
  for f in idx_dir.iterdir():
    f.unlink()
  assert len(pipeline.load_source(cfg)) == 40


def test_a_batch_is_read_in_one_call_in_shuffled_order_and_a_bad_record_is_named(
    tmp_path, idx_dir, monkeypatch):
  cfg = _data_cfg(tmp_path, idx_dir)
  source = pipeline.load_source(cfg)
  calls = []

  class Counting:  # the TFDS source, counting its batch reads
    def __len__(self):
      return len(source)

    def __getitem__(self, index):
      return source[index]

    def __getitems__(self, indices):
      calls.append(list(indices))
      return source.__getitems__(indices)

  monkeypatch.setattr(pipeline, 'load_source', lambda *args: Counting())
  order = list(pipeline._index_batches(40, 8, 3, repeat=False))
  ds = pipeline.make_dataset(cfg, 8, seed=3, repeat=False)
  batches = [ds[i] for i in range(len(ds))]
  assert calls == [[int(i) for i in indices] for indices in order]  # one read per batch
  for indices, batch in zip(order, batches):
    np.testing.assert_array_equal(
        batch['image'], np.stack([pipeline.read_image(source, int(i), cfg, 'train')
                                  for i in indices]))
    np.testing.assert_array_equal(batch['label'], [source[int(i)]['label'] for i in indices])

  bad = int(order[0][5])

  class Corrupt(Counting):
    def __getitem__(self, index):
      if index == bad:
        raise ValueError('Failed to decode the record')
      return source[index]

    def __getitems__(self, indices):
      return [self[i] for i in indices]

  monkeypatch.setattr(pipeline, 'load_source', lambda *args: Corrupt())
  with pytest.raises(pipeline.DataError, match=rf"split 'train': example {bad} cannot be read"):
    pipeline.make_dataset(cfg, 8, seed=3, repeat=False)[0]


def test_the_in_memory_cache_reads_once_at_start_and_gives_the_same_batches(
    tmp_path, idx_dir, monkeypatch):
  cfg = _data_cfg(tmp_path, idx_dir, random_flip=True)
  cached_cfg = _data_cfg(tmp_path, idx_dir, random_flip=True, cache_in_memory=True)
  source = pipeline.load_source(cfg)
  reads, calls = [], []

  class Counting:  # the TFDS source, counting the records it reads and its batch reads
    def __len__(self):
      return len(source)

    def __getitem__(self, index):
      reads.append(index)
      return {**source[index], 'unused': np.zeros(1000)}

    def __getitems__(self, indices):
      calls.append(len(indices))
      return [self[i] for i in indices]

  monkeypatch.setattr(pipeline, 'load_source', lambda *args: Counting())
  cached = pipeline.make_dataset(cached_cfg, 8, seed=3)
  assert sorted(reads) == list(range(40)) and calls == [40]  # every record once, at start
  reads.clear()
  plain = pipeline.make_dataset(cfg, 8, seed=3)
  for i in range(12):  # across an epoch boundary (5 batches an epoch): flips and order match
    a, b = cached[i], plain[i]
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert len(reads) == 12 * 8  # only the plain dataset read records
  # Only the features a batch uses are kept.
  monkeypatch.setattr(pipeline, 'CACHE_CHUNK', 16)
  calls.clear()
  kept = pipeline.in_memory(Counting(), cached_cfg, 'train', pipeline.used_keys(cached_cfg))
  assert len(kept) == 40 and set(kept[0]) == {'image', 'label'} and calls == [16, 16, 8]
  # A corrupt record fails at start, named, before any batch is asked for.
  bad = 29

  class Corrupt(Counting):
    def __getitem__(self, index):
      if index == bad:
        raise ValueError('Failed to decode the record')
      return source[index]

  monkeypatch.setattr(pipeline, 'load_source', lambda *args: Corrupt())
  with pytest.raises(pipeline.DataError, match=rf"split 'train': example {bad} cannot be read"):
    pipeline.make_dataset(cached_cfg, 8, seed=3)


def test_missing_and_truncated_idx_files_say_how_to_fix(tmp_path, idx_dir):
  with pytest.raises(pipeline.DataError, match='apt-get install dataset-fashion-mnist'):
    pipeline.load_source(_data_cfg(tmp_path, tmp_path / 'nowhere'))
  path = idx_dir / 'train-images-idx3-ubyte.gz'
  with gzip.open(path) as f:
    data = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(data[:1000])
  with pytest.raises(pipeline.DataError, match='truncated IDX file'):
    pipeline.load_source(_data_cfg(tmp_path, idx_dir))


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
  cfg = _data_cfg(tmp_path, tmp_path, name='cifar10')
  with pytest.raises(pipeline.DataError, match='tfds build cifar10'):
    pipeline.load_source(cfg)


def test_preprocess_scales_pads_and_checks_channels(tmp_path):
  cfg = _data_cfg(tmp_path, tmp_path, image_size=32, resize='pad')
  image = np.full((28, 28, 1), 255, np.uint8)
  image[0, 0, 0] = 0
  out = pipeline.preprocess_image(image, cfg)
  assert out.shape == (32, 32, 1) and out.dtype == np.float32
  assert out[2, 2, 0] == -1.0 and out[3, 3, 0] == 1.0 and out[0, 0, 0] == -1.0
  with pytest.raises(pipeline.DataError, match='data.channels=1'):
    pipeline.preprocess_image(np.zeros((28, 28, 3), np.uint8), cfg)
  cfg = _data_cfg(tmp_path, tmp_path, image_size=16, resize='resize')
  assert pipeline.preprocess_image(np.zeros((28, 20, 1), np.uint8), cfg).shape == (16, 16, 1)
  cfg = _data_cfg(tmp_path, tmp_path, image_size=32, resize='none')
  with pytest.raises(pipeline.DataError, match='set data.resize'):
    pipeline.preprocess_image(image, cfg)


def test_process_rows_make_up_the_global_batch_and_resume_exactly(tmp_path):
  cfg = _data_cfg(tmp_path, tmp_path, random_flip=True)
  with tfds.testing.mock_data(num_examples=64):
    whole = list(pipeline.make_dataset(cfg, 8, seed=1, repeat=False))
    assert len(whole) == 8  # 64 examples, global batches of 8
    halves = [list(pipeline.make_dataset(cfg, 8, seed=1, process_index=index, process_count=2,
                                         repeat=False)) for index in range(2)]
    for batch, first, second in zip(whole, *halves):
      # Each process reads its own 4 rows; together they are the one-process batch.
      assert first['image'].shape == (4, 28, 28, 1)
      np.testing.assert_array_equal(np.concatenate([first['image'], second['image']]),
                                    batch['image'])
      np.testing.assert_array_equal(np.concatenate([first['label'], second['label']]),
                                    batch['label'])
    ds = pipeline.make_dataset(cfg, 8, seed=1)
    it = pipeline.make_iterator(ds, num_threads=2)
    for _ in range(5):
      next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(12)]  # crosses an epoch boundary (8 batches/epoch)
    resumed = pipeline.make_iterator(pipeline.make_dataset(cfg, 8, seed=1), num_threads=2)
    resumed.set_state(state)
    for a, b in zip(expected, (next(resumed) for _ in range(12))):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])
    # Each epoch sees every example once, in a new order.
    it = pipeline.make_iterator(ds, num_threads=1)
    epochs = [np.concatenate([next(it)['image'].sum(axis=(1, 2, 3)) for _ in range(8)])
              for _ in range(2)]
    np.testing.assert_allclose(np.sort(epochs[0]), np.sort(epochs[1]), atol=1e-4)
    assert not np.allclose(epochs[0], epochs[1])
