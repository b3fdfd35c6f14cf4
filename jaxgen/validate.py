"""Start-up checks of a config: one clear line per problem, before anything compiles."""

from __future__ import annotations

import ml_collections

from jaxgen import sharding


class ConfigError(ValueError):
  """A config field that cannot work; the message names the field and the fix."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _positive_int(config: ml_collections.ConfigDict, field: str) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
           f'config.{field} must be a positive integer, got {value!r}')


def validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1,
             known: dict[str, tuple[str, ...]] | None = None, *, training: bool = True) -> None:
  """Raise ConfigError naming the first bad field.

  `known` maps a field to its allowed values (the registry passes the names of
  objectives, models, samplers, schedules, and what the config's family declares).
  `training=False` (sampling and evaluating a trained run) skips the checks of training
  batches: how they divide over devices, processes and micro-batches.
  """
  for field in ('total_steps', 'global_batch_size', 'log_every', 'checkpoint_every',
                'keep_checkpoints', 'data.image_size', 'data.channels'):
    _positive_int(config, field)
  for field, allowed in (known or {}).items():
    value = config
    for part in field.split('.'):
      value = value[part]
    _require(value in allowed,
             f'config.{field}={value!r} is not one of {", ".join(map(repr, allowed))}')
  _require(config.data.resize in ('none', 'pad', 'resize'),
           f'config.data.resize={config.data.resize!r} must be "none", "pad" or "resize"')
  _validate_translation_data(config.data)

  try:
    shape = sharding.mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(f'config.mesh: {e}') from e
  _require(all(s > 0 for s in shape) and shape[0] * shape[1] == num_devices,
           f'config.mesh={dict(zip(sharding.MESH_AXES, shape))} needs '
           f'{shape[0] * shape[1]} devices but {num_devices} are available; set '
           '--config.mesh.data=-1 to use them all')
  for i, rule in enumerate(config.sharding.rules):
    _require(len(rule) == 2 and isinstance(rule[0], str),
             f'config.sharding.rules[{i}]={rule!r} must be a (regex, rule) pair')
    _require(rule[1] in ('replicate', 'fsdp') or isinstance(rule[1], (tuple, list)),
             f'config.sharding.rules[{i}]: rule {rule[1]!r} must be "replicate", "fsdp" or '
             'a tuple of mesh axes')
  if training:
    _validate_batches(config, shape[0] * shape[1], num_processes)


def _validate_translation_data(data: ml_collections.ConfigDict) -> None:
  jitter = data.get('jitter_size', 0)
  _require(jitter == 0 or jitter >= data.image_size,
           f'config.data.jitter_size={jitter} must be 0 (no jitter) or at least '
           f'data.image_size={data.image_size} (the random crop is image_size)')
  paired = bool(data.get('source_key')) or bool(data.get('target_key'))
  _require(not paired or (data.get('source_key') and data.get('target_key')),
           'config.data.source_key and data.target_key go together (a paired dataset: the '
           'features of the source and target images); set both or neither')
  _require(not (paired and data.get('target_split')),
           'config.data: source_key/target_key (paired examples) and target_split (two '
           'unpaired domains) exclude each other; set one')
  _require(not (data.get('target_name') or data.get('target_eval_split'))
           or data.get('target_split'),
           'config.data.target_name/target_eval_split need data.target_split (the target '
           "domain's training split)")


def _validate_batches(config: ml_collections.ConfigDict, batch_parallel: int,
                      num_processes: int) -> None:
  _require(config.global_batch_size % batch_parallel == 0,
           f'config.global_batch_size={config.global_batch_size} is not divisible by the '
           f'{batch_parallel} devices the batch is split over (mesh data x fsdp)')
  _positive_int(config, 'grad_accum_steps')
  _require(config.global_batch_size % (config.grad_accum_steps * batch_parallel) == 0,
           f'config.grad_accum_steps={config.grad_accum_steps}: micro-batches of '
           f'{config.global_batch_size} / {config.grad_accum_steps} examples do not split '
           f'evenly over the {batch_parallel} devices')
  _require(config.global_batch_size % num_processes == 0,
           f'config.global_batch_size={config.global_batch_size} is not divisible by the '
           f'{num_processes} processes')
