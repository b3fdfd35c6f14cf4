"""jaxgen-eval's translation metrics against what they must be for known translations."""

import ml_collections
import numpy as np
import pytest

from conftest import untrained_classifier
from jaxgen.eval import classifier, translation

DATA = ml_collections.ConfigDict({'resize': 'pad', 'name': 'edges2fashion'})


@pytest.fixture(scope='module')
def clf(tmp_path_factory):
  return classifier.load(untrained_classifier(tmp_path_factory.mktemp('clf') / 'classifier'))[0]


def _images(seed, n=48):
  """float [-1, 1] 32x32 images whose 28x28 centre is random, padded black."""
  garments = np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1)).astype(np.float32)
  return np.pad(garments / 127.5 - 1.0, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1)


def test_a_perfect_translation_scores_the_floor(clf):
  sources, targets, train = _images(0), _images(1), _images(2)
  way = {'sources': sources, 'targets': targets, 'train_targets': train, 'paired': True}
  perfect = translation.fmnist_way_metrics(translation.to_uint8(targets), way, DATA, clf)
  assert abs(perfect['fd_fmnist']) < 1e-3 and perfect['class_match'] == 1.0
  assert perfect['fd_fmnist_floor'] > 1e-3 and perfect['fd_fmnist_input'] > 1e-3
  # Outputs that copy the input score exactly the untranslated distance.
  copy = translation.fmnist_way_metrics(translation.to_uint8(sources), way, DATA, clf)
  np.testing.assert_allclose(copy['fd_fmnist'], perfect['fd_fmnist_input'], rtol=1e-6)

  unpaired = {**way, 'paired': False}
  out = translation.fmnist_way_metrics(translation.to_uint8(targets), unpaired, DATA, clf)
  assert 'class_match' not in out
  assert out['translation_accuracy'] == out['target_class_rate'] > 0
  _, logits = classifier.predict(clf, translation.to_uint8(targets)[:, 2:30, 2:30])
  assert out['target_class'] == np.bincount(logits.argmax(1)).argmax()


def test_uint8_round_trip_is_exact():
  images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  np.testing.assert_array_equal(translation.to_uint8(translation.to_float(images)), images)
