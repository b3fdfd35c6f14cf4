"""Building a run: config -> mesh -> objective -> abstract state -> shardings -> jitted
functions. Shared by the trainer (train.py), the sampler (jaxgen-sample) and the eval
program, none of which imports another.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxgen import nonfinite, registry, sharding, validate
from jaxgen.objectives import Objective


@dataclasses.dataclass
class Setup:
  """Everything derived from a config before training or sampling."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  objective: Objective
  abstract_state: Any
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  # Where the objective's frozen inputs (Objective.frozen) live; None without any.
  frozen_shardings: Any = None
  # The jitted functions built for this setup, so that a second run in the same process
  # (a notebook training on, a resume in a test) reuses their traces.
  jitted: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def restore_target(self) -> Any:
    return sharding.with_shardings(self.abstract_state, self.state_shardings)

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return sharding.replicated(self.mesh)


def abstract_state(config: ml_collections.ConfigDict) -> Any:
  """The train state's shapes and dtypes for `config`, built without allocating it."""
  return jax.eval_shape(registry.build_objective(config).init, jax.random.key(0))


_SETUPS: collections.OrderedDict = collections.OrderedDict()  # the newest few, by content
_MAX_SETUPS = 8


def setup(config: ml_collections.ConfigDict, devices=None, *, training: bool = True) -> Setup:
  """Validate the config, build the mesh and the objective, lay out the state.

  `training=False` (sampling, evaluation) leaves out the checks that only concern training
  batches, such as `global_batch_size` and `grad_accum_steps` dividing over the devices.
  A config with the same content on the same devices gets the same Setup back (and with it
  the jitted functions already traced for it).
  """
  devices = list(devices if devices is not None else jax.devices())
  key = (config.to_json_best_effort(sort_keys=True), tuple(d.id for d in devices),
         jax.process_count(), training)
  if key in _SETUPS:
    _SETUPS.move_to_end(key)
    return _SETUPS[key]
  s = _setup(config, devices, training)
  _SETUPS[key] = s
  if len(_SETUPS) > _MAX_SETUPS:
    _SETUPS.popitem(last=False)
  return s


def _setup(config: ml_collections.ConfigDict, devices: list, training: bool) -> Setup:
  validate.validate(config, len(devices), jax.process_count(), registry.known_values(config),
                    training=training)
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = registry.build_objective(config)
  abstract = jax.eval_shape(objective.init, jax.random.key(0))
  state_shardings = sharding.tree_shardings(abstract, mesh, config.sharding)
  frozen_shardings = (sharding.tree_shardings(objective.frozen.abstract, mesh, config.sharding)
                      if objective.frozen else None)
  return Setup(config, mesh, objective, abstract, state_shardings, sharding.batch_sharding(mesh),
               frozen_shardings)


def _once(s: Setup, key: Any, make):
  if key not in s.jitted:
    s.jitted[key] = make()
  return s.jitted[key]


def init_state(s: Setup, rng: jax.Array) -> Any:
  """The state created directly in its sharded layout (never whole on one device)."""
  return _once(s, 'init', lambda: jax.jit(s.objective.init,
                                          out_shardings=s.state_shardings))(rng)


def frozen_inputs(s: Setup) -> Any:
  """The objective's frozen inputs, loaded once per setup onto their shardings."""
  return _once(s, 'frozen', lambda: s.objective.frozen.load(s.frozen_shardings,
                                                            s.config.sharding))


class WithFrozen:
  """A jitted fn(state, ..., frozen) called as fn(state, ...): the frozen inputs are passed
  as an argument (never donated, never closed over as constants). The first call checks
  that the state was made with the same frozen values (Frozen.check)."""

  def __init__(self, s: Setup, compiled):
    self.s, self.compiled, self.checked = s, compiled, False

  def __call__(self, state, *args):
    frozen = frozen_inputs(self.s)
    if not self.checked:
      self.s.objective.frozen.check(state, frozen)
      self.checked = True
    return self.compiled(state, *args, frozen)

  def lower(self, *args):
    return self.compiled.lower(*args, sharding.with_shardings(self.s.objective.frozen.abstract,
                                                              self.s.frozen_shardings))


def on_mesh(s: Setup, fn):
  """`fn` traced with the run's mesh known, whoever compiles it: model code that partitions
  by hand (models/onednn.py's `shard_map` over the devices) needs it."""

  @functools.wraps(fn)
  def traced(*args):
    with jax.sharding.use_abstract_mesh(s.mesh.abstract_mesh):
      return fn(*args)
  return traced


def jit_train_step(s: Setup):
  """The objective's step, jitted with explicit shardings and the state donated."""
  # The guard leaves the state unchanged on a step with NaN/Inf, and flags it in the metrics.
  frozen = (s.frozen_shardings,) if s.objective.frozen else ()
  compiled = _once(s, 'train_step', lambda: jax.jit(
      on_mesh(s, nonfinite.guard(s.objective.train_step,
                                 gates_updates=s.objective.gates_updates)),
      in_shardings=(s.state_shardings, s.batch_sharding, s.replicated, *frozen),
      out_shardings=(s.state_shardings, s.replicated), donate_argnums=(0,)))
  return WithFrozen(s, compiled) if frozen else compiled


def output_sharding(s: Setup, num_images: int) -> jax.sharding.NamedSharding:
  # Images are split over the devices like a batch when they divide evenly (XLA propagates
  # that layout back through a sampler loop: 2 devices sample ~2x faster).
  return s.batch_sharding if num_images % s.mesh.size == 0 else s.replicated


def jit_sample(s: Setup, num_images: int, **sample_options):
  """Samples of `sample_params(state)` as a host uint8 array, the same on every process."""

  def fn(state, rng, *frozen):
    extra = {'frozen': frozen[0]} if frozen else {}
    return s.objective.sample(s.objective.sample_params(state), rng, num_images,
                              **extra, **sample_options)
  frozen = (s.frozen_shardings,) if s.objective.frozen else ()
  compiled = _once(s, ('sample', num_images, tuple(sorted(sample_options.items()))),
                   lambda: jax.jit(on_mesh(s, fn),
                                   in_shardings=(s.state_shardings, s.replicated, *frozen),
                                   out_shardings=output_sharding(s, num_images)))
  if frozen:
    compiled = WithFrozen(s, compiled)

  def sample(state, rng) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(compiled(state, rng), tiled=True))
  return sample


def jit_reconstruct(s: Setup, images: np.ndarray):
  """decode(encode(images)) of `sample_params(state)` as a host uint8 array."""
  layout = output_sharding(s, len(images))
  images = jax.device_put(images, layout)

  def fn(state, images):
    params = s.objective.sample_params(state)
    return s.objective.decode(params, s.objective.encode(params, images))
  compiled = jax.jit(on_mesh(s, fn), in_shardings=(s.state_shardings, layout),
                     out_shardings=layout)

  def reconstruct(state) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(compiled(state, images), tiled=True))
  return reconstruct


def jit_translate(s: Setup, num_images: int, direction: str = 'a2b'):
  """translate(state, sources, rng): the objective's translations of `num_images` float
  sources by `sample_params(state)`, as a host uint8 array, the same on every process."""
  layout = output_sharding(s, num_images)
  compiled = jax.jit(
      on_mesh(s, lambda state, sources, rng: s.objective.translate(
          s.objective.sample_params(state), sources, rng, direction)),
      in_shardings=(s.state_shardings, layout, s.replicated), out_shardings=layout)

  def translate(state, sources: np.ndarray, rng: jax.Array) -> np.ndarray:
    out = compiled(state, jax.device_put(sources, layout), rng)
    return np.asarray(multihost_utils.process_allgather(out, tiled=True))
  return translate
