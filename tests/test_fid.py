"""Sample-quality statistics against closed forms and direct computations."""

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from jaxgen.eval import fid


def _random_cov(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
  got = fid.frechet_distance(fid.Stats(mu1, np.diag(v1)), fid.Stats(mu2, np.diag(v2)))
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  assert fid.frechet_distance(fid.Stats(mu1, np.diag(v1)), fid.Stats(mu1, np.diag(v1))) < 1e-8


def test_frechet_distance_of_full_covariances_matches_the_symmetric_form():
  # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), computed here with eigendecompositions.
  rng = np.random.default_rng(1)
  d = 16
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  w, v = np.linalg.eigh(s1)
  root1 = v @ np.diag(np.sqrt(w)) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(
      np.clip(inner, 0, None)).sum()
  got = fid.frechet_distance(fid.Stats(mu1, s1), fid.Stats(mu2, s2))
  np.testing.assert_allclose(got, expected, rtol=1e-8)


def test_frechet_distance_of_singular_covariances_is_finite():
  rng = np.random.default_rng(2)
  s1, s2 = _random_cov(rng, 32, rank=4), _random_cov(rng, 32, rank=4)
  got = fid.frechet_distance(fid.Stats(np.zeros(32), s1), fid.Stats(np.zeros(32), s2))
  assert np.isfinite(got) and got > 0
  eps = np.eye(32) * 1e-6
  w, v = np.linalg.eigh(s1 + eps)
  root1 = v @ np.diag(np.sqrt(w)) @ v.T
  ref = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(
      np.clip(np.linalg.eigvalsh(root1 @ (s2 + eps) @ root1), 0, None)).sum()
  np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


def test_frechet_distance_refuses_mismatched_dimensions():
  with pytest.raises(ValueError, match='different dimensions'):
    fid.frechet_distance(fid.Stats(np.zeros(3), np.eye(3)), fid.Stats(np.zeros(4), np.eye(4)))


def test_stats_round_trip_in_pytorch_fid_layout(tmp_path):
  rng = np.random.default_rng(3)
  stats = fid.stats_of(rng.normal(size=(50, 6)).astype(np.float32))
  fid.save_stats(tmp_path / 's.npz', stats)
  with np.load(tmp_path / 's.npz') as data:
    assert sorted(data.files) == ['mu', 'sigma']
    assert data['mu'].dtype == np.float64 and data['sigma'].shape == (6, 6)
  ref = fid.load_reference(tmp_path / 's.npz')
  np.testing.assert_array_equal(ref.stats.mu, stats.mu)
  assert ref.images is None and ref.features is None
  features = rng.normal(size=(50, 6)).astype(np.float32)
  fid.save_stats(tmp_path / 'f.npz', fid.stats_of(features), features)
  np.testing.assert_array_equal(fid.load_reference(tmp_path / 'f.npz').features, features)
  # An OpenAI reference batch: images in arr_0 beside the statistics.
  np.savez(tmp_path / 'openai.npz', arr_0=np.zeros((4, 8, 8, 3), np.uint8), mu=stats.mu,
           sigma=stats.sigma, mu_s=stats.mu, sigma_s=stats.sigma)
  assert fid.load_reference(tmp_path / 'openai.npz').images.shape == (4, 8, 8, 3)
  np.savez(tmp_path / 'bad.npz', features=np.zeros(3))
  with pytest.raises(ValueError, match='expected "mu" and "sigma"'):
    fid.load_reference(tmp_path / 'bad.npz')
  with pytest.raises(FileNotFoundError, match='jaxgen-eval stats'):
    fid.load_reference(tmp_path / 'missing.npz')


def test_kid_matches_a_direct_unbiased_mmd():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
  k = lambda a, b: (np.dot(a, b) / 5 + 1) ** 3
  m = len(x)
  direct = (sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
            + sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
            - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
  mean, std = fid.kernel_inception_distance(x, y, subsets=3, subset_size=m)
  np.testing.assert_allclose(mean, direct, rtol=1e-10)  # full subsets: each is the whole set
  assert std < 1e-12
  same, _ = fid.kernel_inception_distance(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)),
                                          subsets=20, subset_size=200)
  assert abs(same) < 0.2 * direct


def test_inception_score_matches_direct_computation_and_limits():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(40, 7)) * 3
  p = scipy.special.softmax(logits, axis=1)
  scores = []
  for chunk in np.array_split(p, 4):
    marginal = chunk.mean(0)
    scores.append(np.exp(np.mean([scipy.special.rel_entr(q, marginal).sum() for q in chunk])))
  mean, std = fid.inception_score(logits, splits=4)
  np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-9)
  # Confident and balanced over C classes: IS = C. All the same class: IS = 1.
  confident = np.eye(10)[np.arange(100) % 10] * 100
  np.testing.assert_allclose(fid.inception_score(confident, splits=1)[0], 10, rtol=1e-6)
  np.testing.assert_allclose(fid.inception_score(np.tile(confident[:1], (100, 1)))[0], 1,
                             rtol=1e-6)


def test_precision_recall_match_brute_force():
  rng = np.random.default_rng(6)
  real, fake = rng.normal(size=(60, 4)), rng.normal(0.7, 1.3, size=(50, 4))

  def brute(a, b, k=3):  # fraction of b inside a's k-NN balls
    radii = [sorted(np.sum((a - p) ** 2, 1))[k] for p in a]
    return np.mean([any(np.sum((q - p) ** 2) <= r for p, r in zip(a, radii)) for q in b])

  precision, recall = fid.precision_recall(real, fake, batch=16)
  np.testing.assert_allclose([precision, recall], [brute(real, fake), brute(fake, real)],
                             atol=1e-9)
  assert 0 < precision < 1 and 0 < recall < 1
  assert fid.precision_recall(real, real) == (1.0, 1.0)
  assert fid.precision_recall(real, real + 100.0) == (0.0, 0.0)
