"""Denoising diffusion as an objective: the loss of a formulation (DDPM, EDM, flow), EMA
updates and sampling through the sampler protocol; in pixels, or on the latents of a frozen
autoencoder (`autoencoder.workdir`: latent diffusion, objectives/latent.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen import models, nonfinite, objectives, optim, posthoc_ema
from jaxgen import state as state_lib
from jaxgen.objectives import Objective, class_labels, formulations, latent, to_uint8
from jaxgen.samplers import SAMPLERS, run_sampler
from jaxgen.samplers.schedules import SCHEDULES


def diffusion_loss(apply_fn, params, batch: dict[str, jax.Array], example_keys: jax.Array, *,
                   formulation, num_classes: int, label_dropout: float) -> jax.Array:
  """The formulation's squared error (formulations.py) at a drawn noise level.

  Each example draws its noise level, noise and label drop from its own key, so a batch
  split into micro-batches (gradient accumulation) sees exactly the same draws. Dropout
  takes a fourth split of the first example's key: a stream no other draw uses.
  """
  x0 = batch['image']

  def draws(key):
    level_key, noise_key, label_key, dropout_key = jax.random.split(key, 4)
    return (formulation.draw_level(level_key),
            jax.random.normal(noise_key, x0.shape[1:], x0.dtype),
            jax.random.bernoulli(label_key, label_dropout), dropout_key)

  level, noise, drop, dropout_keys = jax.vmap(draws)(example_keys)
  labels = None
  if num_classes:
    # Drop labels to the null class so the model also learns p(x) (classifier-free guidance).
    labels = jnp.where(drop, num_classes, batch['label'])
  net_input, noise_label, target = formulation.training_example(x0, level, noise)
  out = apply_fn(params, net_input, noise_label, labels, dropout_rng=dropout_keys[0])
  return jnp.mean(jnp.square(out.astype(jnp.float32) - target))


def guided(apply_fn, labels: jax.Array | None, num_classes: int, scale: float):
  """net(x, noise_label) for the samplers: apply_fn(x, noise_label, labels) of a
  class-conditional model with classifier-free guidance (Ho & Salimans 2022),
  u + scale (c - u) for c at `labels` and u at the null class `num_classes`, both in one
  batch; scale 1 is the conditional model alone, scale 0 the unconditional one."""
  if not num_classes:
    return lambda x, t: apply_fn(x, t, None)
  if scale == 1.0:
    return lambda x, t: apply_fn(x, t, labels)

  def model_fn(x, t):
    null = jnp.full_like(labels, num_classes)
    both = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                    jnp.concatenate([labels, null]))
    cond, uncond = jnp.split(both, 2)
    return uncond + scale * (cond - uncond)
  return model_fn


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config fields this family reads."""
  formulation = formulations.CLASSES.get(config.diffusion.formulation, formulations.VP)
  return {'diffusion.sampler': tuple(SAMPLERS), 'diffusion.schedule': tuple(SCHEDULES),
          'diffusion.spacing': formulation.spacings,
          'diffusion.formulation': tuple(formulations.CLASSES),
          'diffusion.prediction': ('eps', 'v')}


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  acfg = config.get('autoencoder')
  ae = latent.Autoencoder(acfg, config.data) if acfg is not None and acfg.workdir else None
  # The network's input: images, or the autoencoder's latents.
  image_shape = ae.latent_shape if ae else objectives.image_shape(config.data)
  model = models.build(config.model, image_shape)
  dcfg = config.diffusion
  formulation = formulations.build(dcfg, clip=ae is None)
  default_spacing = dcfg.spacing  # read here: a config without it fails at setup, clearly
  optimizer = optim.build_optimizer(config.optimizer, config.total_steps)
  num_classes = config.model.num_classes
  sigma_rels = tuple(config.ema.get('power_sigma_rels', ()))
  for sigma_rel in sigma_rels:
    if not 0 < sigma_rel < 0.28:
      raise ValueError(f'config.ema.power_sigma_rels={sigma_rels}: each relative width must '
                       'be in (0, 0.28), e.g. (0.05, 0.1)')
  gammas = tuple(float(g) for g in posthoc_ema.std_to_exp(np.asarray(sigma_rels)))

  def init(rng):
    params = model.init(rng)
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'ema_params': jax.tree_util.tree_map(jnp.copy, params),
             'opt_state': optimizer.init(params)}
    if sigma_rels:  # EDM2's power-function EMAs, for post-hoc reconstruction
      state['phema'] = [jax.tree_util.tree_map(jnp.copy, params) for _ in sigma_rels]
    if ae:  # set by the first step: 1 / std of its latents, and the autoencoder's hash
      state['latent_scale'] = jnp.zeros((), jnp.float32)
      state[latent.HASH_KEY] = jnp.zeros((32,), jnp.uint8)
    return state

  loss_fn = functools.partial(diffusion_loss, model.apply, formulation=formulation,
                              num_classes=num_classes, label_dropout=dcfg.label_dropout)

  def train_step(state, batch, rng, frozen=None):
    new_state = {}
    if ae:
      # LDM's scale_by_std: the latents of the first batch fix the scale that gives them
      # unit std; it is kept in the state, so a resumed run uses the same.
      z = jax.lax.stop_gradient(ae.objective.encode(frozen['params'], batch['image']))
      scale = jnp.where(state['step'] == 0, 1.0 / jnp.std(z), state['latent_scale'])
      batch = {**batch, 'image': z * scale}
      new_state = {'latent_scale': scale, latent.HASH_KEY: frozen[latent.HASH_KEY]}
    example_keys = jax.random.split(rng, batch['image'].shape[0])
    loss, grads = optim.accumulate_gradients(loss_fn, state['params'], batch, example_keys,
                                             config.grad_accum_steps)
    decay = state_lib.ema_decay_at(state['step'], config.ema.decay, config.ema.warmup)
    grad_norm = optax.tree.norm(grads)
    metrics = {'loss': loss, 'grad_norm': grad_norm,
               'learning_rate': optimizer.learning_rate(state['step']), 'ema_decay': decay}
    new_state['step'] = state['step'] + 1

    def update(old):
      params, opt_state, _ = optimizer.update(grads, old['opt_state'], old['params'],
                                              state['step'], grad_norm)
      new = {'params': params, 'opt_state': opt_state,
             'ema_params': state_lib.ema_update(old['ema_params'], params, decay)}
      if sigma_rels:
        new['phema'] = posthoc_ema.track(old['phema'], params, state['step'], gammas)
      return new

    derived = {k: state[k] for k in nonfinite.DERIVED if k in state}
    new_state.update(nonfinite.update_if_finite(update, derived, metrics, new_state))
    return new_state, metrics

  def sample(params, rng, n, *, frozen=None, sampler=None, steps=None, eta=None, labels=None,
             guidance_scale=None, spacing=None, **heun):
    """`labels`: one class for every image, or a comma-separated list cycled over them
    (class-conditional models; default: the classes in turn).
    `sampler` and `spacing`: samplers/__init__.py and the formulation's sigmas; `heun`:
    s_churn, s_tmin, s_tmax, s_noise (EDM's stochastic sampler; solvers.heun)."""
    scale = dcfg.guidance_scale if guidance_scale is None else guidance_scale
    net = params['ema'] if ae else params
    model_fn = guided(functools.partial(model.apply, net),
                      class_labels(labels, n, num_classes), num_classes, scale)
    spacing = spacing or default_spacing
    sigmas = formulation.sigmas(spacing, steps or dcfg.sample_steps)
    images = run_sampler(sampler or dcfg.sampler, formulation.denoiser(model_fn, spacing),
                         sigmas, formulation.initial_std(sigmas[0]), rng, (n, *image_shape),
                         eta=dcfg.eta if eta is None else eta, clip=ae is None, **heun)
    if ae:  # decoded to pixels: grids and jaxgen-eval see images
      return ae.objective.decode(frozen['params'], images / params['latent_scale'])
    return to_uint8(images)

  return Objective(init=init, train_step=train_step, sample=sample,
                   sample_params=(lambda state: {'ema': state['ema_params'],
                                                 'latent_scale': state['latent_scale']})
                   if ae else (lambda state: state['ema_params']),
                   batch_shapes=objectives.image_batch_shapes(config),
                   progress_metrics=('loss',), sample_options=SAMPLE_OPTIONS,
                   sample_classes=num_classes, gates_updates=True,
                   snapshot=(lambda state: {'phema': state['phema']}) if sigma_rels else None,
                   snapshot_every=config.ema.get('snapshot_every', 0),
                   frozen=ae.frozen() if ae else None)


SAMPLE_OPTIONS = {'sampler': str, 'steps': int, 'eta': float, 'guidance_scale': float,
                  'labels': str, 'spacing': str, 's_churn': float, 's_tmin': float,
                  's_tmax': float, 's_noise': float}
