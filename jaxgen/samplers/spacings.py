"""Noise levels for the samplers: `steps` sigmas, decreasing, then 0.

  karras     EDM's: uniform in sigma^(1/rho) between sigma_max and sigma_min (rho 7).
  log_snr    uniform in log sigma (the log signal-to-noise ratio is -2 log sigma).
  trained    evenly spaced timesteps of a discretely trained DDPM schedule (DDIM's respacing).
  time_uniform  uniform in a flow's time t = sigma / (1 + sigma) from t_max, with SD3's
             timestep shift s: t -> s t / (1 + (s - 1) t), which is sigma -> s sigma.
"""

from __future__ import annotations

import numpy as np


def _with_zero(sigmas: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(sigmas, np.float64), [0.0]])


def _check(steps: int, sigma_min: float, sigma_max: float) -> None:
  if steps < 1:
    raise ValueError(f'sampler steps must be >= 1, got {steps}')
  if not 0 < sigma_min <= sigma_max:
    raise ValueError(f'noise levels need 0 < sigma_min <= sigma_max, got {sigma_min}, '
                     f'{sigma_max}')


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
  _check(steps, sigma_min, sigma_max)
  ramp = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
  inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
  return _with_zero(inv ** rho)


def log_snr(steps: int, sigma_min: float, sigma_max: float) -> np.ndarray:
  _check(steps, sigma_min, sigma_max)
  return _with_zero(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), steps)))


def trained(steps: int, trained_sigmas: np.ndarray) -> np.ndarray:
  """Evenly spaced timesteps of a discrete schedule (sigma of timestep t at index t), from
  the last down to 0: the respacing DDPM and DDIM sample on (all of them at steps = T)."""
  count = len(trained_sigmas)
  if not 1 <= steps <= count:
    raise ValueError(f'sampler steps must be in [1, {count}], got {steps}')
  ts = np.unique(np.round(np.linspace(0, count - 1, steps)).astype(np.int64))[::-1]
  return _with_zero(np.asarray(trained_sigmas, np.float64)[ts])



def time_uniform(steps: int, t_max: float, shift: float = 1.0) -> np.ndarray:
  """Rectified flow's levels: t = t_max (1 - i / steps), i < steps, shifted, as sigmas."""
  if steps < 1:
    raise ValueError(f'sampler steps must be >= 1, got {steps}')
  if not 0 < t_max < 1 or shift <= 0:
    raise ValueError(f'time_uniform needs 0 < t_max < 1 and shift > 0, got {t_max}, {shift}')
  t = t_max * (1.0 - np.arange(steps) / steps)
  return _with_zero(shift * t / (1.0 - t))
