"""Denoising diffusion (DDPM) as an objective: loss, EMA update and sampling."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import models, objectives, optim
from jaxgen import state as state_lib
from jaxgen.objectives import Objective, class_labels, to_uint8
from jaxgen.samplers import SAMPLERS, sample_vp, schedules
from jaxgen.samplers.schedules import SCHEDULES


def build_schedule(cfg: ml_collections.ConfigDict) -> schedules.Schedule:
  if cfg.schedule == 'linear':
    return schedules.linear_schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
  return schedules.SCHEDULES[cfg.schedule](cfg.timesteps)


def diffusion_loss(apply_fn, params, batch: dict[str, jax.Array], example_keys: jax.Array, *,
                   schedule: schedules.Schedule, prediction: str, num_classes: int,
                   label_dropout: float) -> jax.Array:
  """Mean squared error of the eps- or v-prediction at a uniformly drawn timestep.

  Each example draws its timestep, noise and label drop from its own key, so a batch
  split into micro-batches (gradient accumulation) sees exactly the same draws. Dropout
  takes a fourth split of the first example's key: a stream no other draw uses.
  """
  x0 = batch['image']

  def draws(key):
    t_key, noise_key, label_key, dropout_key = jax.random.split(key, 4)
    return (jax.random.randint(t_key, (), 0, schedule.num_timesteps),
            jax.random.normal(noise_key, x0.shape[1:], x0.dtype),
            jax.random.bernoulli(label_key, label_dropout), dropout_key)

  t, noise, drop, dropout_keys = jax.vmap(draws)(example_keys)
  labels = None
  if num_classes:
    # Drop labels to the null class so the model also learns p(x) (classifier-free guidance).
    labels = jnp.where(drop, num_classes, batch['label'])
  x_t = schedules.q_sample(schedule, x0, t, noise)
  target = noise if prediction == 'eps' else schedules.v_target(schedule, x0, t, noise)
  out = apply_fn(params, x_t, t, labels, dropout_rng=dropout_keys[0])
  return jnp.mean(jnp.square(out.astype(jnp.float32) - target))


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config fields this family reads."""
  return {'diffusion.sampler': tuple(SAMPLERS), 'diffusion.schedule': tuple(SCHEDULES),
          'diffusion.spacing': schedules.VP_SPACINGS,
          'diffusion.prediction': ('eps', 'v')}


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  image_shape = objectives.image_shape(config.data)
  model = models.build(config.model, image_shape)
  dcfg = config.diffusion
  schedule = build_schedule(dcfg)
  optimizer = optim.build_optimizer(config.optimizer, config.total_steps)
  num_classes = config.model.num_classes

  def init(rng):
    params = model.init(rng)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'ema_params': jax.tree_util.tree_map(jnp.copy, params),
            'opt_state': optimizer.init(params)}

  loss_fn = functools.partial(diffusion_loss, model.apply, schedule=schedule,
                              prediction=dcfg.prediction, num_classes=num_classes,
                              label_dropout=dcfg.label_dropout)

  def train_step(state, batch, rng):
    example_keys = jax.random.split(rng, batch['image'].shape[0])
    loss, grads = optim.accumulate_gradients(loss_fn, state['params'], batch, example_keys,
                                             config.grad_accum_steps)
    params, opt_state, learning_rate = optimizer.update(grads, state['opt_state'],
                                                        state['params'], state['step'])
    decay = state_lib.ema_decay_at(state['step'], config.ema.decay, config.ema.warmup)
    new_state = {'step': state['step'] + 1, 'params': params,
                 'ema_params': state_lib.ema_update(state['ema_params'], params, decay),
                 'opt_state': opt_state}
    metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
               'learning_rate': learning_rate, 'ema_decay': decay}
    return new_state, metrics

  def sample(params, rng, n, *, sampler=None, steps=None, eta=None, labels=None,
             guidance_scale=None, spacing=None):
    """`labels`: one class for every image, or a comma-separated list cycled over them
    (class-conditional models; default: the classes in turn). `sampler` and `spacing`:
    samplers/__init__.py and schedules.vp_sigmas."""
    scale = dcfg.guidance_scale if guidance_scale is None else guidance_scale
    labels = class_labels(labels, n, num_classes)

    def model_fn(x, t):
      if num_classes and scale != 1.0:
        null = jnp.full_like(labels, num_classes)
        both = model.apply(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                           jnp.concatenate([labels, null]))
        cond, uncond = jnp.split(both, 2)
        return uncond + scale * (cond - uncond)
      return model.apply(params, x, t, labels if num_classes else None)

    images = sample_vp(model_fn, schedule, dcfg.prediction, rng, (n, *image_shape),
                       sampler=sampler or dcfg.sampler, spacing=spacing or dcfg.spacing,
                       steps=steps or dcfg.sample_steps, eta=dcfg.eta if eta is None else eta)
    return to_uint8(images)

  return Objective(init=init, train_step=train_step, sample=sample,
                   sample_params=lambda state: state['ema_params'],
                   batch_shapes=objectives.image_batch_shapes(config),
                   progress_metrics=('loss',), sample_options=SAMPLE_OPTIONS)


SAMPLE_OPTIONS = {'sampler': str, 'steps': int, 'eta': float, 'guidance_scale': float,
                  'labels': str, 'spacing': str}
