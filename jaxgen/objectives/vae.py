"""Variational autoencoders (VAE, beta-VAE) as an objective.

Training minimises reconstruction + beta_t * KL per image, with beta_t warmed up linearly
from 0 to `vae.beta` over `vae.kl_warmup_steps`. The metrics also carry the true negative
ELBO (beta = 1) in nats and bits per dimension. `test_metrics` gives jaxgen-eval the
negative ELBO and the importance-weighted bound (IWAE, Burda et al. 2015) with
`vae.iw_samples` samples, both in nats and bits/dim.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import models, nonfinite, objectives, optim, validate
from jaxgen.models.functional import FunctionalModel
from jaxgen.objectives import Objective, likelihoods, to_uint8


def kl_weight_at(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
  """beta * min(1, step / warmup_steps): the KL weight of a warmed-up (beta-)VAE."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def _prepare(lik: likelihoods.Likelihood, x: jax.Array, keys: jax.Array, deterministic: bool):
  return jax.vmap(lambda xi, key: lik.prepare(xi, key, deterministic))(x, keys)


def _split_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


def _gaussian_draws(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return jax.vmap(lambda key: jax.random.normal(key, shape))(keys)


def elbo_terms(model: FunctionalModel, lik: likelihoods.Likelihood, params, x: jax.Array,
               example_keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example reconstruction -log p(x|z) (one posterior draw) and KL(q(z|x) || N(0, I)).

  Every example draws from its own key (data binarisation or dequantisation, then the
  posterior sample), so micro-batching does not change any draw.
  """
  prep_keys, eps_keys = _split_keys(example_keys)
  x_in, target = _prepare(lik, x, prep_keys, deterministic=False)
  mean, logvar = model.apply(params, x_in, method='encode')
  z = mean + jnp.exp(0.5 * logvar) * _gaussian_draws(eps_keys, mean.shape[1:])
  out = model.apply(params, z, method='decode')
  return -lik.log_prob(out, target), likelihoods.gaussian_kl(mean, logvar)


def iwae_bound(model: FunctionalModel, lik: likelihoods.Likelihood, params, x: jax.Array,
               example_keys: jax.Array, num_samples: int) -> jax.Array:
  """Per-example log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x): a lower bound on
  log p(x) that tightens with k (k = 1 is the single-draw ELBO)."""
  prep_keys, eps_keys = _split_keys(example_keys)
  x_in, target = _prepare(lik, x, prep_keys, deterministic=False)
  mean, logvar = model.apply(params, x_in, method='encode')
  zeros = jnp.zeros_like(mean)

  def log_weight(_, i):
    keys = jax.vmap(lambda key: jax.random.fold_in(key, i))(eps_keys)
    z = mean + jnp.exp(0.5 * logvar) * _gaussian_draws(keys, mean.shape[1:])
    out = model.apply(params, z, method='decode')
    return None, (lik.log_prob(out, target) + likelihoods.log_normal(z, zeros, zeros) -
                  likelihoods.log_normal(z, mean, logvar))

  _, log_weights = jax.lax.scan(log_weight, None, jnp.arange(num_samples))  # [k, B]
  return jax.nn.logsumexp(log_weights, axis=0) - math.log(num_samples)


def check_downsampling(config: ml_collections.ConfigDict) -> None:
  """The encoder halves the image len(ch_mult) - 1 times; the decoder must get back to it."""
  factor = 2 ** (len(config.model.ch_mult) - 1)
  if config.data.image_size % factor:
    raise validate.ConfigError(
        f'config.model.ch_mult={tuple(config.model.ch_mult)} downsamples by {factor}, which '
        f'does not divide config.data.image_size={config.data.image_size}; use fewer levels '
        f'or pad the images to a multiple of {factor} (data.image_size, data.resize="pad")')


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config fields this family reads."""
  del config
  return {'vae.likelihood': likelihoods.LIKELIHOODS, 'model.latent': ('dense',)}


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  check_downsampling(config)
  vcfg = config.vae
  lik = likelihoods.build(vcfg.likelihood, vcfg.gaussian_scale)
  image_shape = objectives.image_shape(config.data)
  channels = image_shape[2]
  model = models.build(config.model, image_shape, out_channels=channels * lik.channels_per_pixel)
  latent_shape = model.attribute('latent_shape')()
  num_dims = math.prod(image_shape)
  optimizer = optim.build_optimizer(config.optimizer, config.total_steps)

  def init(rng):
    params = model.init(rng)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'opt_state': optimizer.init(params)}

  def loss_fn(params, batch, example_keys, *, kl_weight):
    recon, kl = elbo_terms(model, lik, params, batch['image'], example_keys)
    scalars = {'recon_nats': jnp.mean(recon), 'kl_nats': jnp.mean(kl),
               'nelbo_nats': jnp.mean(recon + kl)}
    return jnp.mean(recon + kl_weight * kl), scalars

  def train_step(state, batch, rng):
    example_keys = jax.random.split(rng, batch['image'].shape[0])
    kl_weight = kl_weight_at(state['step'], vcfg.beta, vcfg.kl_warmup_steps)
    (loss, scalars), grads = optim.accumulate_gradients(
        functools.partial(loss_fn, kl_weight=kl_weight), state['params'], batch, example_keys,
        config.grad_accum_steps, has_aux=True)
    grad_norm = optax.tree.norm(grads)
    metrics = {'loss': loss, **scalars,
               'bits_per_dim': likelihoods.bits_per_dim(scalars['nelbo_nats'], num_dims),
               'kl_weight': kl_weight, 'grad_norm': grad_norm,
               'learning_rate': optimizer.learning_rate(state['step'])}
    new_state = {'step': state['step'] + 1}

    def update(old):
      params, opt_state, _ = optimizer.update(grads, old['opt_state'], old['params'],
                                              state['step'], grad_norm)
      return {'params': params, 'opt_state': opt_state}

    derived = {'params': state['params'], 'opt_state': state['opt_state']}
    new_state.update(nonfinite.update_if_finite(update, derived, metrics, new_state))
    return new_state, metrics

  def decode(params, z):
    return to_uint8(lik.mean(model.apply(params, z, method='decode')))

  def sample(params, rng, n):
    """Decoded means of prior draws z ~ N(0, I)."""
    return decode(params, jax.random.normal(rng, (n, *latent_shape)))

  def encode(params, images):
    x_in, _ = _prepare(lik, images, jax.random.split(jax.random.key(0), images.shape[0]),
                       deterministic=True)
    return model.apply(params, x_in, method='encode')[0]

  def test_metrics(params, batch, rng):
    x = batch['image']
    example_keys = jax.random.split(rng, x.shape[0])
    recon, kl = elbo_terms(model, lik, params, x, example_keys)
    iwae = -iwae_bound(model, lik, params, x, example_keys, vcfg.iw_samples)
    return {'nelbo_nats': recon + kl, 'nelbo_bits_per_dim': likelihoods.bits_per_dim(
                recon + kl, num_dims),
            f'iwae{vcfg.iw_samples}_nats': iwae,
            f'iwae{vcfg.iw_samples}_bits_per_dim': likelihoods.bits_per_dim(iwae, num_dims)}

  return Objective(init=init, train_step=train_step, sample=sample, gates_updates=True,
                   sample_params=lambda state: state['params'],
                   batch_shapes=objectives.image_batch_shapes(config),
                   encode=encode, decode=decode, test_metrics=test_metrics,
                   progress_metrics=('loss', 'bits_per_dim'),
                   best_metric=('test/nelbo_bits_per_dim', True))
