"""Walks through a model's latent space: what `jaxgen-sample --interpolate` draws.

For families with `encode`/`decode` (VAEs, the KL autoencoder). Pairs of evaluation images
are encoded to their posterior means and the decoder is run along a linear and a
spherical (slerp, White 2016) path between them; slerp keeps the norm of a Gaussian latent
typical, where the midpoint of a straight line is unusually close to the origin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import metrics, sharding


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  return (1.0 - t) * a + t * b


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation of two flattened latents (linear when they are parallel)."""
  a_flat, b_flat = a.reshape(-1), b.reshape(-1)
  cos = jnp.dot(a_flat, b_flat) / (jnp.linalg.norm(a_flat) * jnp.linalg.norm(b_flat) + 1e-12)
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  sin = jnp.sin(omega)
  safe = jnp.where(sin > 1e-6, sin, 1.0)
  spherical = (jnp.sin((1.0 - t) * omega) / safe) * a + (jnp.sin(t * omega) / safe) * b
  return jnp.where(sin > 1e-6, spherical, lerp(a, b, t))


PATHS = {'linear': lerp, 'spherical': slerp}


def walks(starts: jax.Array, ends: jax.Array, num_steps: int, path: str) -> jax.Array:
  """[P, *latent] x2 -> [P, num_steps, *latent]; step 0 is the start, the last the end."""
  ts = jnp.linspace(0.0, 1.0, num_steps)
  along = jax.vmap(lambda t, a, b: PATHS[path](a, b, t), in_axes=(0, None, None))
  return jax.vmap(lambda a, b: along(ts, a, b))(starts, ends)


def interpolate(s, state, images: np.ndarray, num_steps: int) -> dict[str, np.ndarray]:
  """Decoded walks between images[0::2] and images[1::2]: {path: uint8 [P, num_steps, ...]}.

  `s` is a build.Setup whose objective has encode/decode; images are float [-1, 1].
  """
  objective = s.objective
  rep = sharding.replicated(s.mesh)

  def fn(state, images):
    params = objective.sample_params(state)
    latents = objective.encode(params, images)
    out = {}
    for path in PATHS:
      walk = walks(latents[0::2], latents[1::2], num_steps, path)
      decoded = objective.decode(params, walk.reshape(-1, *walk.shape[2:]))
      out[path] = decoded.reshape(*walk.shape[:2], *decoded.shape[1:])
    return out

  compiled = jax.jit(fn, in_shardings=(s.state_shardings, rep), out_shardings=rep)
  return {k: np.asarray(v) for k, v in compiled(state, jax.device_put(images, rep)).items()}


def walk_grid(originals: np.ndarray, walk: np.ndarray) -> np.ndarray:
  """One row per pair: the first image, its walk, the second image."""
  a, b = originals[0::2], originals[1::2]
  rows = np.concatenate([a[:, None], walk, b[:, None]], axis=1)
  return metrics.image_grid(rows.reshape(-1, *rows.shape[2:]), columns=rows.shape[1])
