"""Sample-quality statistics from features: Frechet distance, KID, Inception Score, P/R.

Host-side numpy in float64 where precision matters (the Frechet distance), following the
reference implementations: pytorch-fid (Frechet distance, the `.npz` stats layout),
torch-fidelity / Binkowski et al. 2018 (KID), Salimans et al. 2016 (IS), and
Kynkaanniemi et al. 2019 (k-NN precision and recall).
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
from etils import epath


class Stats(NamedTuple):
  mu: np.ndarray  # float64 [d]
  sigma: np.ndarray  # float64 [d, d]


def stats_of(features: np.ndarray) -> Stats:
  """Mean and (unbiased, as np.cov) covariance of [n, d] features, in float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'need [n >= 2, d] features for statistics, got shape {features.shape}')
  return Stats(features.mean(axis=0), np.cov(features, rowvar=False))


def frechet_distance(a: Stats, b: Stats, eps: float = 1e-6) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as pytorch-fid computes it.

  When the product is singular (the square root is not finite) both covariances get `eps`
  on the diagonal; an imaginary part of the root above 1e-3 on the diagonal is an error.
  """
  mu1, mu2 = np.atleast_1d(a.mu).astype(np.float64), np.atleast_1d(b.mu).astype(np.float64)
  s1, s2 = np.atleast_2d(a.sigma).astype(np.float64), np.atleast_2d(b.sigma).astype(np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape:
    raise ValueError(f'statistics of different dimensions: {mu1.shape} vs {mu2.shape}')
  diff = mu1 - mu2
  with warnings.catch_warnings():  # a singular product is handled below
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
      offset = np.eye(len(s1)) * eps
      covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError('Frechet distance: the covariance product has a square root with an '
                       f'imaginary component of {np.max(np.abs(covmean.imag)):.3g}; with fewer '
                       f'samples than the {len(s1)} feature dimensions the covariance is '
                       'singular: use more samples')
    covmean = covmean.real
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x.y / d + 1)^3, the KID kernel."""
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """Unbiased MMD^2 with the polynomial kernel, mean and std over random subsets.

  Each subset draws `subset_size` rows of each set without replacement (capped at the
  smaller set), as torch-fidelity does.
  """
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  m = min(subset_size, len(real), len(fake))
  if m < 2:
    raise ValueError(f'KID needs at least 2 samples per set, got {len(real)} and {len(fake)}')
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(subsets):
    x = real[rng.choice(len(real), m, replace=False)]
    y = fake[rng.choice(len(fake), m, replace=False)]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    values.append(off_diag - 2 * kxy.mean())
  return float(np.mean(values)), float(np.std(values))


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) within each of `splits` consecutive chunks: mean, std."""
  logits = np.asarray(logits, np.float64)
  logits = logits - logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  scores = []
  for chunk in np.array_split(log_p, min(splits, len(log_p))):  # no empty splits
    p = np.exp(chunk)
    with np.errstate(divide='ignore', invalid='ignore'):  # p == 0 terms contribute 0
      kl = np.where(p > 0, p * (chunk - np.log(p.mean(axis=0))), 0.0)
    scores.append(np.exp(kl.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _pairwise_sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  d = (x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :]
  return np.maximum(d, 0)


def _knn_radii(features: np.ndarray, k: int, batch: int) -> np.ndarray:
  """Squared distance from each row to its k-th nearest other row."""
  radii = np.empty(len(features), features.dtype)
  for start in range(0, len(features), batch):
    d = _pairwise_sq_dists(features[start:start + batch], features)
    radii[start:start + batch] = np.partition(d, k, axis=1)[:, k]  # column 0 is the row itself
  return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, batch: int) -> float:
  """Fraction of `points` inside at least one ball (centre, radius) of the manifold."""
  inside = np.zeros(len(points), bool)
  for start in range(0, len(points), batch):
    d = _pairwise_sq_dists(points[start:start + batch], centres)
    inside[start:start + batch] = (d <= radii[None, :]).any(axis=1)
  return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, batch: int = 1024
                     ) -> tuple[float, float]:
  """Improved precision (fakes inside the real k-NN manifold) and recall (the reverse)."""
  real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f'precision/recall with k={k} needs more than {k} samples per set')
  precision = _coverage(fake, real, _knn_radii(real, k, batch), batch)
  recall = _coverage(real, fake, _knn_radii(fake, k, batch), batch)
  return precision, recall


def save_stats(path: str | os.PathLike, stats: Stats, features: np.ndarray | None = None
               ) -> None:
  """`mu`/`sigma` float64 in an .npz, the layout pytorch-fid reads and writes; optionally
  `features` (float32 [n, d]) too, which KID and precision/recall need (others ignore it)."""
  arrays = {'mu': stats.mu.astype(np.float64), 'sigma': stats.sigma.astype(np.float64)}
  if features is not None:
    arrays['features'] = np.asarray(features, np.float32)
  with epath.Path(path).open('wb') as f:
    np.savez(f, **arrays)


class Reference(NamedTuple):
  stats: Stats
  images: np.ndarray | None  # uint8 [n, H, W, C] when the file holds them (OpenAI batches)
  features: np.ndarray | None  # [n, d] when the file holds them (jaxgen-eval stats)


def load_reference(path: str | os.PathLike) -> Reference:
  """pytorch-fid stats (`mu`, `sigma`), an OpenAI reference batch (`arr_0` + `mu`/`sigma`), or
  jaxgen's stats (`mu`, `sigma`, `features`).

  Read with allow_pickle=False: a reference file cannot run code.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'reference statistics {path} do not exist; write them with '
                            '`jaxgen-eval stats`')
  with path.open('rb') as f, np.load(f, allow_pickle=False) as data:
    keys = set(data.files)
    if not {'mu', 'sigma'} <= keys:
      raise ValueError(f'{path} holds {sorted(keys)}; expected "mu" and "sigma" (pytorch-fid '
                       'stats) or an OpenAI reference batch ("arr_0", "mu", "sigma")')
    return Reference(Stats(data['mu'].astype(np.float64), data['sigma'].astype(np.float64)),
                     data['arr_0'] if 'arr_0' in keys else None,
                     data['features'] if 'features' in keys else None)
