"""Denoising diffusion (DDPM) as an objective: loss, EMA update and sampling."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import optim
from jaxgen import state as state_lib
from jaxgen.models.functional import FunctionalModel
from jaxgen.objectives import Objective
from jaxgen.samplers import SAMPLERS, schedules


def build_schedule(cfg: ml_collections.ConfigDict) -> schedules.Schedule:
  if cfg.schedule == 'linear':
    return schedules.linear_schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
  return schedules.SCHEDULES[cfg.schedule](cfg.timesteps)


def to_uint8(images: jax.Array) -> jax.Array:
  """[-1, 1] floats -> uint8 [0, 255], rounding to nearest."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def diffusion_loss(apply_fn, params, schedule: schedules.Schedule, prediction: str,
                   x0: jax.Array, labels: jax.Array | None, rng: jax.Array) -> jax.Array:
  """Mean squared error of the eps- or v-prediction at a uniformly drawn timestep."""
  t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
  t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_timesteps)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  x_t = schedules.q_sample(schedule, x0, t, noise)
  target = noise if prediction == 'eps' else schedules.v_target(schedule, x0, t, noise)
  out = apply_fn(params, x_t, t, labels, dropout_rng=dropout_rng)
  return jnp.mean(jnp.square(out.astype(jnp.float32) - target))


def make_objective(config: ml_collections.ConfigDict, model: FunctionalModel) -> Objective:
  dcfg = config.diffusion
  schedule = build_schedule(dcfg)
  tx, lr_schedule = optim.build_optimizer(config.optimizer, config.total_steps)
  num_classes = config.model.num_classes
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)

  def init(rng):
    params = model.init(rng)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'ema_params': jax.tree_util.tree_map(jnp.copy, params),
            'opt_state': tx.init(params)}

  def train_step(state, batch, rng):
    loss_rng, label_rng = jax.random.split(rng)
    labels = None
    if num_classes:
      # Drop labels to the null class so the model also learns p(x) (classifier-free guidance).
      drop = jax.random.bernoulli(label_rng, dcfg.label_dropout, batch['label'].shape)
      labels = jnp.where(drop, num_classes, batch['label'])
    loss_fn = functools.partial(diffusion_loss, model.apply, schedule=schedule,
                                prediction=dcfg.prediction, x0=batch['image'], labels=labels,
                                rng=loss_rng)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p))(state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    decay = state_lib.ema_decay_at(state['step'], config.ema.decay, config.ema.warmup)
    new_state = {'step': state['step'] + 1, 'params': params,
                 'ema_params': state_lib.ema_update(state['ema_params'], params, decay),
                 'opt_state': opt_state}
    metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
               'learning_rate': lr_schedule(state['step']), 'ema_decay': decay}
    return new_state, metrics

  def sample(params, rng, n, *, sampler=None, steps=None, eta=None, labels=None,
             guidance_scale=None):
    sampler = sampler or dcfg.sampler
    kwargs = {'steps': steps or dcfg.sample_steps,
              'eta': dcfg.eta if eta is None else eta}
    scale = dcfg.guidance_scale if guidance_scale is None else guidance_scale
    if num_classes and labels is None:
      labels = jnp.arange(n) % num_classes

    def denoise(x, t):
      if num_classes and scale != 1.0:
        null = jnp.full_like(labels, num_classes)
        both = model.apply(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                           jnp.concatenate([labels, null]))
        cond, uncond = jnp.split(both, 2)
        out = uncond + scale * (cond - uncond)
      else:
        out = model.apply(params, x, t, labels if num_classes else None)
      return schedules.to_x0_eps(schedule, dcfg.prediction, out.astype(jnp.float32), x, t)

    images = SAMPLERS[sampler](denoise, schedule, rng, (n, *image_shape), **kwargs)
    return to_uint8(images)

  def batch_shapes(batch_size):
    shapes = {'image': ((batch_size, *image_shape), jnp.float32)}
    if config.data.label_key:
      shapes['label'] = ((batch_size,), jnp.int32)
    return shapes

  return Objective(init=init, train_step=train_step, sample=sample,
                   sample_params=lambda state: state['ema_params'], batch_shapes=batch_shapes)
