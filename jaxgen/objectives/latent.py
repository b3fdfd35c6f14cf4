"""A frozen autoencoder for latent diffusion (Rombach et al. 2022): a diffusion run with
`autoencoder.workdir` set trains on the latents of that KL-autoencoder run.

The autoencoder's parameters are read once from its checkpoint, laid out on this run's mesh
by this run's sharding rules, and passed to the jitted step and sampler as an argument that
is never donated, never differentiated and never saved with this run (Objective.frozen).
Their SHA-256 goes into the train state at every step: a resume, a sample or an evaluation
that finds other parameters under the same workdir stops with an error saying so.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import checkpoint, objectives, paths

HASH_KEY = 'autoencoder_sha256'  # uint8[32] in the train state


@dataclasses.dataclass
class Frozen:
  """What an objective takes besides its train state, read-only (Objective.frozen).

  abstract: ShapeDtypeStructs of the pytree; load(shardings, sharding_cfg) -> the pytree
  on `shardings` (the run's `config.sharding` rules laid out on its mesh); check(state,
  loaded) raises if a restored state was made with other values.
  """

  abstract: Any
  load: Callable[[Any], Any]
  check: Callable[[Any, Any], None]


def fingerprint(params: Any) -> np.ndarray:
  """SHA-256 of the parameters' paths, shapes, dtypes and bytes, as uint8[32]."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    value = np.asarray(jax.device_get(leaf))
    digest.update(f'{jax.tree_util.keystr(path)}{value.shape}{value.dtype}'.encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return np.frombuffer(digest.digest(), np.uint8).copy()


class Autoencoder:
  """The autoencoder of `autoencoder.workdir` (at `autoencoder.step`; 0: the latest),
  built from the config saved with its checkpoint."""

  def __init__(self, cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict):
    from jaxgen import registry  # (the registry imports the families, this one included)

    self.workdir = cfg.workdir
    directory = paths.workdir_path(self.workdir) / checkpoint.CHECKPOINT_DIR
    ckpt = checkpoint.Checkpointer(self.workdir, use_async=False, read_only=True) \
        if directory.is_dir() else None
    steps = ckpt.all_steps() if ckpt else []
    if not steps:
      raise FileNotFoundError(
          f'autoencoder.workdir={self.workdir!r} holds no checkpoint: train the autoencoder '
          'first (e.g. make ae-demo, which writes runs/ae_demo)')
    self.step = cfg.step or steps[-1]
    if self.step not in steps:
      raise ValueError(f'autoencoder.step={cfg.step}: {directory} has checkpoints {steps}')
    self.ckpt = ckpt
    self.config = ckpt.restore_config(self.step)
    self.objective = registry.build_objective(self.config)
    if self.objective.encode is None or self.objective.decode is None:
      raise ValueError(f'autoencoder.workdir={self.workdir!r} is a {self.config.objective} '
                       'run, which does not encode: latent diffusion needs an autoencoder')
    ae_shape = objectives.image_shape(self.config.data)
    if ae_shape != objectives.image_shape(data_cfg):
      raise ValueError(f'the autoencoder of {self.workdir} takes {ae_shape} images, this '
                       f'run\'s data.* gives {objectives.image_shape(data_cfg)}')
    self.abstract_state = jax.eval_shape(self.objective.init, jax.random.key(0))
    self.abstract_params = jax.eval_shape(self.objective.sample_params, self.abstract_state)
    latents = jax.eval_shape(self.objective.encode, self.abstract_params,
                             jax.ShapeDtypeStruct((1, *ae_shape), jnp.float32))
    self.latent_shape = tuple(latents.shape[1:])

  def frozen(self) -> Frozen:
    abstract = {'params': self.abstract_params,
                HASH_KEY: jax.ShapeDtypeStruct((32,), jnp.uint8)}

    def load(shardings, sharding_cfg):
      from jaxgen import sharding as sharding_lib

      # The whole autoencoder state is restored (orbax restores whole items), laid out by
      # this run's rules; only the parameters are kept.
      mesh = jax.tree_util.tree_leaves(shardings)[0].mesh
      state_shardings = sharding_lib.tree_shardings(self.abstract_state, mesh, sharding_cfg)
      restored = self.ckpt.restore(self.step, sharding_lib.with_shardings(
          self.abstract_state, state_shardings))
      params = jax.device_put(self.objective.sample_params(restored), shardings['params'])
      return {'params': params,
              HASH_KEY: jax.device_put(fingerprint(params), shardings[HASH_KEY])}

    def check(state, loaded):
      saved = np.asarray(jax.device_get(state[HASH_KEY]))
      here = np.asarray(jax.device_get(loaded[HASH_KEY]))
      if saved.any() and not np.array_equal(saved, here):
        raise ValueError(
            f'this run was trained on the latents of an autoencoder with SHA-256 '
            f'{saved.tobytes().hex()[:16]}..., but {self.workdir} at step {self.step} holds '
            f'one with {here.tobytes().hex()[:16]}...: point autoencoder.workdir (and '
            'autoencoder.step) at the autoencoder it was trained with')
    return Frozen(abstract, load, check)
