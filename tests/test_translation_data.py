"""Image-to-image data: our edges2fashion and sneaker2boot builders, paired batches with a
joint jitter, unpaired batches from two domains (process rows, exact resume), cycle_gan."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config, write_fake_fashion_mnist
from jaxgen.data import fashion_mnist, fashion_translation, pipeline


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  # Labels cycle 0..9: 20 sneakers (7) and 20 ankle boots (9) among 200 train images.
  return write_fake_fashion_mnist(tmp_path_factory.mktemp('idx'), num_train=200, num_test=40)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def _data_cfg(tfds_dir, idx_dir, **overrides):
  cfg = load_config('tiny').data
  with cfg.unlocked():
    cfg.update(dict(data_dir=str(tfds_dir), manual_dir=str(idx_dir), **overrides))
  return cfg


def test_edge_maps_draw_the_outline_of_a_shape_and_nothing_on_flat_areas():
  image = np.zeros((1, 28, 28, 1), np.uint8)
  image[0, 8:20, 6:22] = 200
  edges = fashion_translation.edge_maps(image)[0, ..., 0]
  assert edges.dtype == np.uint8 and set(np.unique(edges)) == {0, 255}
  assert (edges[:4] == 0).all() and (edges[11:17, 10:18] == 0).all()  # flat: no lines
  for row, col in ((8, 14), (19, 14), (14, 6), (14, 21)):  # every side of the rectangle
    assert edges[row, col] == 255


def test_edges2fashion_pairs_each_garment_with_its_edge_map(tfds_dir, idx_dir):
  cfg = _data_cfg(tfds_dir, idx_dir, name='edges2fashion')
  train, test = pipeline.load_source(cfg, 'train'), pipeline.load_source(cfg, 'test')
  assert len(train) == 200 and len(test) == 40
  images, labels = fashion_mnist.read_split(str(idx_dir), 'train')
  for i in (0, 57, 199):
    np.testing.assert_array_equal(train[i]['image'], images[i])
    np.testing.assert_array_equal(train[i]['edges'],
                                  fashion_translation.edge_maps(images[i:i + 1])[0])
    assert int(train[i]['label']) == labels[i]


def test_sneaker2boot_has_cycle_gans_splits_with_one_class_per_domain(tfds_dir, idx_dir):
  cfg = _data_cfg(tfds_dir, idx_dir, name='sneaker2boot')
  images, labels = fashion_mnist.read_split(str(idx_dir), 'train')
  for split, label, cls in (('trainA', 0, fashion_translation.SNEAKER),
                            ('trainB', 1, fashion_translation.BOOT)):
    source = pipeline.load_source(cfg, split)
    expected = images[labels == cls]
    assert len(source) == len(expected) == 20
    np.testing.assert_array_equal(np.stack([source[i]['image'] for i in range(20)]), expected)
    assert {int(source[i]['label']) for i in range(20)} == {label}
  assert len(pipeline.load_source(cfg, 'testA')) == len(pipeline.load_source(cfg, 'testB')) == 4
  with pytest.raises(pipeline.DataError, match=r"'trainC'.*'testA'"):
    pipeline.load_source(cfg, 'trainC')


def test_paired_batches_get_one_jitter_for_source_and_target(tfds_dir, idx_dir):
  # Source and target both read the garment: after the joint jitter they must stay equal,
  # while differing from the un-jittered garments (crops and flips did happen).
  cfg = _data_cfg(tfds_dir, idx_dir, name='edges2fashion', source_key='image',
                  target_key='image', jitter_size=32, random_flip=True, label_key='')
  plain = _data_cfg(tfds_dir, idx_dir, name='edges2fashion', source_key='edges',
                    target_key='image', label_key='')
  jittered = next(iter(pipeline.make_dataset(cfg, 16, seed=3, repeat=False)))
  batch = next(iter(pipeline.make_dataset(plain, 16, seed=3, repeat=False)))
  assert set(jittered) == set(batch) == {'source', 'target'}
  assert jittered['source'].shape == (16, 28, 28, 1) and jittered['source'].dtype == np.float32
  np.testing.assert_array_equal(jittered['source'], jittered['target'])
  assert not np.allclose(jittered['target'], batch['target'], atol=0.1)
  # Unjittered, the pair is an edge map and its garment: the same example.
  edges = fashion_translation.edge_maps(np.round((batch['target'] + 1) * 127.5).astype(np.uint8))
  np.testing.assert_array_equal(batch['source'], edges / 127.5 - 1.0)


def test_unpaired_batches_zip_two_domains_with_rows_per_process_and_exact_resume(
    tfds_dir, idx_dir):
  cfg = _data_cfg(tfds_dir, idx_dir, name='sneaker2boot', split='trainA', target_split='trainB',
                  eval_split='testA', target_eval_split='testB', label_key='')
  images, labels = fashion_mnist.read_split(str(idx_dir), 'train')
  sneakers = {images[i].tobytes() for i in np.flatnonzero(labels == 7)}
  boots = {images[i].tobytes() for i in np.flatnonzero(labels == 9)}

  def raw(batch, key):
    return [np.round((x + 1) * 127.5).astype(np.uint8).tobytes() for x in batch[key]]

  whole = list(pipeline.make_dataset(cfg, 4, seed=1, repeat=False))
  assert len(whole) == 5  # 20 images a domain, batches of 4
  for batch in whole:
    assert set(raw(batch, 'source')) <= sneakers and set(raw(batch, 'target')) <= boots
  # The two domains are shuffled apart: the same positions hold different examples.
  order = [sorted(sneakers).index(b) for batch in whole for b in raw(batch, 'source')]
  order_b = [sorted(boots).index(b) for batch in whole for b in raw(batch, 'target')]
  assert sorted(order) == sorted(order_b) == list(range(20)) and order != order_b
  halves = [list(pipeline.make_dataset(cfg, 4, seed=1, process_index=i, process_count=2,
                                       repeat=False)) for i in range(2)]
  for batch, first, second in zip(whole, *halves):
    for key in ('source', 'target'):
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])
  it = pipeline.make_iterator(pipeline.make_dataset(cfg, 4, seed=1), num_threads=2)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(7)]  # across an epoch of each domain
  resumed = pipeline.make_iterator(pipeline.make_dataset(cfg, 4, seed=1), num_threads=1)
  resumed.set_state(state)
  for a, b in zip(expected, (next(resumed) for _ in range(7))):
    for key in ('source', 'target'):
      np.testing.assert_array_equal(a[key], b[key])
  test = next(iter(pipeline.make_dataset(cfg, 4, seed=1, split='testA', repeat=False)))
  assert set(raw(test, 'target')) <= {x.tobytes() for x in
                                      fashion_mnist.read_split(str(idx_dir), 'test')[0]}


def test_the_in_memory_cache_gives_the_same_paired_and_unpaired_batches(tfds_dir, idx_dir):
  paired = dict(name='edges2fashion', source_key='edges', target_key='image', label_key='',
                jitter_size=32, random_flip=True)
  unpaired = dict(name='sneaker2boot', split='trainA', target_split='trainB',
                  eval_split='testA', target_eval_split='testB', label_key='', random_flip=True)
  for fields in (paired, unpaired):
    plain = pipeline.make_dataset(_data_cfg(tfds_dir, idx_dir, **fields), 4, seed=2)
    cached = pipeline.make_dataset(_data_cfg(tfds_dir, idx_dir, cache_in_memory=True,
                                             **fields), 4, seed=2)
    for i in (0, 3, 7):  # the unpaired domains: 5 batches an epoch
      a, b = plain[i], cached[i]
      assert set(a) == set(b) == {'source', 'target'}
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_tfds_cycle_gan_reads_as_an_unpaired_dataset(tmp_path):
  cfg = _data_cfg(tmp_path, tmp_path, name='cycle_gan/horse2zebra', split='trainA',
                  target_split='trainB', label_key='', channels=3, image_size=32,
                  resize='resize', jitter_size=36, random_flip=True)
  with tfds.testing.mock_data(num_examples=12):
    batches = list(pipeline.make_dataset(cfg, 4, seed=0, repeat=False))
  assert len(batches) == 3
  for batch in batches:
    assert batch['source'].shape == batch['target'].shape == (4, 32, 32, 3)
    assert -1 <= batch['source'].min() and batch['source'].max() <= 1


def test_jaxgen_data_reads_pix2pix_and_cyclegan_folders_and_names_bad_files(tmp_path):
  from PIL import Image

  from conftest import run_cli

  rng = np.random.default_rng(0)
  pairs = {}
  for split in ('train', 'val'):
    (tmp_path / 'p2p' / split).mkdir(parents=True)
    for i in range(3):
      pairs[split, i] = rng.integers(0, 256, (12, 24, 3), dtype=np.uint8)  # A | B
      Image.fromarray(pairs[split, i]).save(tmp_path / 'p2p' / split / f'{i}.png')
  (tmp_path / 'p2p' / 'train' / 'broken.jpg').write_bytes(b'not a jpeg')
  Image.fromarray(pairs['train', 0][:, :23]).save(tmp_path / 'p2p' / 'train' / 'odd.png')
  tfds_dir = tmp_path / 'tfds'
  done = run_cli('jaxgen.data.main', 'pix2pix', f'--input_dir={tmp_path / "p2p"}',
                 '--name=tiny_facades', f'--data_dir={tfds_dir}')
  assert done.returncode == 0, done.stderr
  assert 'broken.jpg: not a readable image' in done.stdout
  assert 'odd.png: width 23 is odd' in done.stdout
  assert 'train 3, val 3 examples' in done.stdout
  flags = done.stdout.split('train on it with: ')[1].split()
  assert '--config.data.source_key=a' in flags and '--config.data.eval_split=val' in flags

  # The config the command printed reads the halves back, pixel for pixel.
  cfg = _data_cfg(tfds_dir, tmp_path, label_key='', image_size=12, channels=3,
                  **{f.split('=')[0].rsplit('.', 1)[1]: f.split('=')[1] for f in flags
                     if f.startswith('--config.data.') and 'channels' not in f
                     and 'data_dir' not in f})
  sources, targets = pipeline.load_pairs(cfg, 3)
  as_uint8 = lambda x: np.round((x + 1) * 127.5).astype(np.uint8)
  for i in range(3):
    np.testing.assert_array_equal(as_uint8(sources[i]), pairs['val', i][:, :12])
    np.testing.assert_array_equal(as_uint8(targets[i]), pairs['val', i][:, 12:])
  again = run_cli('jaxgen.data.main', 'pix2pix', f'--input_dir={tmp_path / "p2p"}',
                  '--name=tiny_facades', f'--data_dir={tfds_dir}')
  assert again.returncode == 2 and 'already holds tiny_facades' in again.stderr

  # The CycleGAN layout: cycle_gan's features, grey images stored as RGB.
  for folder in ('trainA', 'trainB'):
    (tmp_path / 'cg' / folder).mkdir(parents=True)
    for i in range(2 if folder == 'trainA' else 3):
      Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(
          tmp_path / 'cg' / folder / f'{i}.png')
  from jaxgen.data import folders

  result = folders.build('tiny_h2z', str(tmp_path / 'cg'), 'cyclegan', str(tfds_dir))
  assert result['splits'] == {'trainA': 2, 'trainB': 3} and result['shape'] == (10, 10, 3)
  source = tfds.data_source('tiny_h2z', split='trainB', data_dir=str(tfds_dir))
  assert [int(source[i]['label']) for i in range(3)] == [1, 1, 1]
  (tmp_path / 'cg' / 'extra').mkdir()
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'cg' / 'extra' / 'x.png')
  with pytest.raises(folders.FolderError, match=r"folders \['extra'\] do not end in A or B"):
    folders.build('tiny_h2z_2', str(tmp_path / 'cg'), 'cyclegan', str(tfds_dir))
  with pytest.raises(folders.FolderError, match='no subfolders with PNG/JPEG'):
    folders.build('empty', str(tmp_path / 'cg' / 'extra'), 'pix2pix', str(tfds_dir))
