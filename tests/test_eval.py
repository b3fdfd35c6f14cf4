"""jaxgen-eval: the Fashion-MNIST classifier, FD-FMNIST of a run, and watch mode."""

import json

import jax
import numpy as np
import pytest

from conftest import tiny_config_with, write_fake_fashion_mnist
from jaxgen import train
from jaxgen.eval import classifier, evaluate, fid


@pytest.fixture(scope='module')
def fake_fmnist(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist')
  return {'data.manual_dir': str(write_fake_fashion_mnist(root / 'idx', 64, 32)),
          'data.data_dir': str(root / 'tfds')}


@pytest.fixture(scope='module')
def classifier_dir(fake_fmnist, tmp_path_factory):
  cfg = classifier.data_config(fake_fmnist['data.data_dir'], fake_fmnist['data.manual_dir'])
  trained = classifier.train(cfg, epochs=1, batch_size=32)
  directory = str(tmp_path_factory.mktemp('clf') / 'classifier')
  classifier.save(directory, trained, {'epochs': 1})
  classifier.write_reference(directory, trained.params, cfg)
  return directory


def test_classifier_checkpoint_and_reference_round_trip(classifier_dir, fake_fmnist):
  params, meta = classifier.load(classifier_dir)
  assert meta['feature_dim'] == classifier.FEATURE_DIM and 0 <= meta['test_accuracy'] <= 1
  cfg = classifier.data_config(fake_fmnist['data.data_dir'], fake_fmnist['data.manual_dir'])
  images, _ = classifier.load_split(cfg, 'train')
  features, logits = classifier.predict(params, images)
  assert features.shape == (64, classifier.FEATURE_DIM) and logits.shape == (64, 10)
  # The saved train statistics are those of the restored network's features.
  train_stats, test_features = classifier.load_reference(classifier_dir)
  np.testing.assert_allclose(train_stats.mu, fid.stats_of(features).mu, rtol=1e-5, atol=1e-6)
  assert test_features.shape == (32, classifier.FEATURE_DIM)
  # Predictions do not depend on how the batch is split over devices.
  single = jax.jit(classifier.MODEL.apply)(params, images[:5])[0]
  np.testing.assert_allclose(features[:5], single, rtol=1e-5, atol=1e-5)


def test_missing_classifier_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='jaxgen-eval train_classifier'):
    classifier.load(tmp_path / 'nothing')


def test_classifier_of_another_network_version_is_a_clear_error(tmp_path, monkeypatch):
  params = classifier.MODEL.init(jax.random.key(0))
  monkeypatch.setattr(classifier, 'ARCHITECTURE', classifier.ARCHITECTURE - 1)
  classifier.save(tmp_path / 'old', classifier.Trained(params, 0.5), {'epochs': 1})
  monkeypatch.undo()
  with pytest.raises(ValueError, match=f'version {classifier.ARCHITECTURE - 1} of the network.*'
                     'train_classifier'):
    classifier.load(tmp_path / 'old')


def test_watch_evaluates_exactly_the_new_checkpoints(tmp_path, fake_fmnist, classifier_dir):
  config = tiny_config_with(**fake_fmnist, sample_every=0, keep_checkpoints=10)
  workdir = str(tmp_path / 'run')
  options = evaluate.Options(num_samples=24, batch_size=16, classifier_dir=classifier_dir,
                             watch=True, poll_s=0, watch_timeout_s=0)
  train.run(config, workdir, stop_at_step=3)
  # Step 1 (orbax always saves the first step) is damaged: the watcher skips it, says so,
  # and goes on; it is not retried after a restart.
  damaged = max((tmp_path / 'run' / 'checkpoints' / '1').rglob('d/*'),
                key=lambda p: p.stat().st_size)
  damaged.write_bytes(b'')
  first = evaluate.evaluate_workdir(workdir, options)
  assert first['evaluated'] == [3] and first['skipped'] == [1]
  train.run(config, workdir)
  second = evaluate.evaluate_workdir(workdir, options)  # a restarted watcher
  assert second['evaluated'] == [3, 6] and second['skipped'] == [1]
  records = [json.loads(line) for line in open(tmp_path / 'run' / 'eval' / 'metrics.jsonl')]
  assert [r['step'] for r in records] == [3, 6]  # each checkpoint once
  for r in records:
    assert r['num_samples'] == 24 and r['fd_fmnist'] > 0 and r['fd_fmnist_floor'] > 0
    assert np.isclose(sum(v for k, v in r.items() if k.startswith('class_fraction/')), 1)
  best = min(records, key=lambda r: r['fd_fmnist'])
  assert second['best'] == {'metric': 'fd_fmnist', 'value': best['fd_fmnist'],
                            'step': best['step']}
  assert (tmp_path / 'run' / 'eval' / 'samples_0000006.png').exists()
  assert list((tmp_path / 'run' / 'eval' / 'tensorboard').glob('events.out.tfevents.*'))


def test_too_few_samples_for_fid_still_reports_the_other_metrics(monkeypatch, tmp_path):
  rng = np.random.default_rng(0)
  fake = lambda images, path: (rng.normal(size=(len(images), 64)),
                               rng.normal(size=(len(images), 10)))
  monkeypatch.setattr(evaluate, 'inception_features', fake)

  def singular(a, b):
    raise ValueError('imaginary component; use more samples')

  monkeypatch.setattr(fid, 'frechet_distance', singular)
  features = rng.normal(size=(8, 64))
  fid.save_stats(tmp_path / 'ref.npz', fid.stats_of(features), features)
  out = evaluate.inception_metrics(np.zeros((8, 4, 4, 1), np.uint8), 'w.pth',
                                   str(tmp_path / 'ref.npz'))
  assert 'fid' not in out
  assert {'inception_score', 'kid', 'precision', 'recall'} <= out.keys()


def test_padded_and_resized_runs_are_measured_at_fashion_mnist_size():
  import ml_collections

  images = np.zeros((2, 32, 32, 1), np.uint8)
  images[:, 2:30, 2:30] = 200  # a 28x28 garment padded by 2 on each side, as the pipeline pads
  cropped = evaluate.as_fashion_mnist(images, ml_collections.ConfigDict({'resize': 'pad'}))
  assert cropped.shape == (2, 28, 28, 1) and (cropped == 200).all()
  resized = evaluate.as_fashion_mnist(images, ml_collections.ConfigDict({'resize': 'resize'}))
  assert resized.shape == (2, 28, 28, 1)
  assert evaluate.as_fashion_mnist(np.zeros((2, 32, 32, 3), np.uint8),
                                   ml_collections.ConfigDict({'resize': 'pad'})) is None
