"""Walks through a model's latent space and style swaps: what `jaxgen-sample
--interpolate` and `--style_mixing` draw.

For families with `encode`/`decode` (VAEs, the KL autoencoder), pairs of evaluation images
are encoded to their posterior means and the decoder is run along a linear and a
spherical (slerp, White 2016) path between them; slerp keeps the norm of a Gaussian latent
typical, where the midpoint of a straight line is unusually close to the origin. For
families with `prior_latents`/`decode` (GANs), the walks run between pairs of prior
latents (w for a StyleGAN: straight lines, as its perceptual path length measures them),
and a family with `style_ranges` draws the StyleGAN paper's style-mixing figure.
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


def prior_walks(s, state, rng: jax.Array, num_pairs: int, num_steps: int, **options
                ) -> dict[str, np.ndarray]:
  """{'linear': uint8 [P, num_steps, ...]}: decoded straight walks between pairs of
  `prior_latents` (the first and last images are the pair itself)."""
  objective = s.objective
  rep = sharding.replicated(s.mesh)

  def fn(state, rng):
    params = objective.sample_params(state)
    latents = objective.prior_latents(params, rng, 2 * num_pairs, **options)
    walk = walks(latents[0::2], latents[1::2], num_steps, 'linear')
    decoded = objective.decode(params, walk.reshape(-1, *walk.shape[2:]))
    return decoded.reshape(*walk.shape[:2], *decoded.shape[1:])

  compiled = jax.jit(fn, in_shardings=(s.state_shardings, rep), out_shardings=rep)
  return {'linear': np.asarray(compiled(state, rng))}


def style_mixing(s, state, rng: jax.Array, num_rows: int, num_columns: int, **options
                 ) -> dict[str, np.ndarray]:
  """{range name: grid}: the top row shows sources B, the left column sources A, and cell
  (i, j) is A_i with the styles of the range's layers taken from B_j (StyleGAN, figure 3)."""
  objective = s.objective
  rep = sharding.replicated(s.mesh)

  def fn(state, rng):
    params = objective.sample_params(state)
    a_key, b_key = jax.random.split(rng)
    a = objective.prior_latents(params, a_key, num_rows, **options)
    b = objective.prior_latents(params, b_key, num_columns, **options)
    layer = jnp.arange(a.shape[1])[None, None, :, None]
    out = {'a': objective.decode(params, a), 'b': objective.decode(params, b)}
    for name, (first, stop) in objective.style_ranges.items():
      mixed = jnp.where((layer >= first) & (layer < stop), b[None], a[:, None])
      images = objective.decode(params, mixed.reshape(-1, *a.shape[1:]))
      out[name] = images.reshape(num_rows, num_columns, *images.shape[1:])
    return out

  compiled = jax.jit(fn, in_shardings=(s.state_shardings, rep), out_shardings=rep)
  out = jax.device_get(compiled(state, rng))
  a, b = np.asarray(out.pop('a')), np.asarray(out.pop('b'))
  blank = np.zeros_like(b[:1])
  grids = {}
  for name in objective.style_ranges:  # in the family's order (a pytree sorts its keys)
    mixed = out[name]
    rows = [np.concatenate([blank, b])]
    rows += [np.concatenate([a[i:i + 1], np.asarray(mixed[i])]) for i in range(num_rows)]
    grids[name] = metrics.image_grid(np.concatenate(rows), columns=num_columns + 1)
  return grids
