"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022) as an objective.

Two networks and two optimizers in one jitted step, as in the LDM/taming
`LPIPSWithDiscriminator` loss without its perceptual term:

  autoencoder  rec + kl_weight * KL / D + d_weight * g_loss, with rec the per-pixel L1 or L2
               error and g_loss = -mean(D(x_hat)); d_weight is the adaptive weight
               ||grad rec|| / ||grad g_loss|| at the decoder's last layer (times
               `disc_weight`), or `disc_weight` itself when `adaptive_disc_weight` is off.
  discriminator  PatchGAN hinge loss on real images and (stopped-gradient) reconstructions.

Before `disc_start` the adversarial term is off and the discriminator's parameters and
optimizer state are left exactly as they are. Losses are means per pixel (LDM sums them; the
ratios, and so the training, are the same up to Adam's epsilon).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import models, objectives, optim, validate
from jaxgen.objectives import Objective, likelihoods, only_when, to_uint8, vae


def psnr(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """Per-image PSNR in dB of images in [-1, 1] (peak 1 on the [0, 1] scale)."""
  mse = jnp.mean(jnp.square((jnp.clip(x_hat, -1, 1) - x) / 2).reshape(x.shape[0], -1), axis=-1)
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) +
                jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def _with_head_kernel(params, kernel):
  decoder = params['decoder']
  return {**params, 'decoder': {**decoder, 'conv_out': {**decoder['conv_out'],
                                                          'kernel': kernel}}}


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config fields this family reads."""
  del config
  return {'autoencoder.reconstruction': ('l1', 'l2'), 'model.latent': ('spatial',),
          'discriminator.name': ('patchgan',)}


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  acfg = config.autoencoder
  if config.grad_accum_steps != 1:
    raise validate.ConfigError(
        'config.grad_accum_steps must be 1 for autoencoder_kl: its discriminator step needs '
        'the whole batch of reconstructions')
  vae.check_downsampling(config)
  image_shape = objectives.image_shape(config.data)
  model = models.build(config.model, image_shape, out_channels=image_shape[2])
  disc = models.build(config.discriminator, image_shape)
  opt_ae = optim.build_optimizer(config.optimizer, config.total_steps)
  opt_d = optim.build_optimizer(config.discriminator_optimizer, config.total_steps)
  num_dims = math.prod(image_shape)

  def rec_loss(x, x_hat):
    error = jnp.abs(x - x_hat) if acfg.reconstruction == 'l1' else jnp.square(x - x_hat)
    return jnp.mean(error)

  def init(rng):
    ae_rng, d_rng = jax.random.split(rng)
    params = {'autoencoder': model.init(ae_rng), 'discriminator': disc.init(d_rng)}
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'opt_state': {'autoencoder': opt_ae.init(params['autoencoder']),
                          'discriminator': opt_d.init(params['discriminator'])}}

  def ae_loss_fn(ae_params, d_params, x, rng, disc_factor):
    mean, logvar = model.apply(ae_params, x, method='encode')
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    features = model.apply(ae_params, z, method='decode_trunk')

    def decode_with(kernel, features):
      return model.apply(_with_head_kernel(ae_params, kernel), features, method='decode_head')

    kernel = ae_params['decoder']['conv_out']['kernel']
    x_hat = decode_with(kernel, features)
    rec = rec_loss(x, x_hat)
    kl = jnp.mean(likelihoods.gaussian_kl(mean, logvar))
    g_loss = -jnp.mean(disc.apply(d_params, x_hat))
    if acfg.adaptive_disc_weight:
      # Gradients of each loss at the last decoder layer only (features held fixed).
      fixed = jax.lax.stop_gradient(features)
      rec_grad = jax.grad(lambda k: rec_loss(x, decode_with(k, fixed)))(kernel)
      g_grad = jax.grad(lambda k: -jnp.mean(disc.apply(d_params, decode_with(k, fixed))))(kernel)
      d_weight = jnp.clip(jnp.linalg.norm(rec_grad) / (jnp.linalg.norm(g_grad) + 1e-4), 0, 1e4)
      d_weight = jax.lax.stop_gradient(d_weight) * acfg.disc_weight
    else:
      d_weight = jnp.asarray(acfg.disc_weight, jnp.float32)
    loss = rec + acfg.kl_weight * kl / num_dims + d_weight * disc_factor * g_loss
    return loss, (x_hat, {'rec_loss': rec, 'kl_nats': kl, 'g_loss': g_loss, 'd_weight': d_weight,
                          'psnr': jnp.mean(psnr(x, x_hat))})

  def d_loss_fn(d_params, x, x_hat):
    logits_real, logits_fake = disc.apply(d_params, x), disc.apply(d_params, x_hat)
    return hinge_d_loss(logits_real, logits_fake), {'logits_real': jnp.mean(logits_real),
                                                    'logits_fake': jnp.mean(logits_fake)}

  def train_step(state, batch, rng):
    params, opt_state, x = state['params'], state['opt_state'], batch['image']
    disc_on = state['step'] >= acfg.disc_start
    disc_factor = disc_on.astype(jnp.float32)
    (ae_loss, (x_hat, scalars)), ae_grads = jax.value_and_grad(ae_loss_fn, has_aux=True)(
        params['autoencoder'], params['discriminator'], x, rng, disc_factor)
    ae_norm = optax.tree.norm(ae_grads)
    new_ae, ae_opt, learning_rate = opt_ae.update(ae_grads, opt_state['autoencoder'],
                                                  params['autoencoder'], state['step'], ae_norm)

    (d_loss, d_scalars), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        params['discriminator'], x, jax.lax.stop_gradient(x_hat))

    d_norm = optax.tree.norm(d_grads)

    def update_discriminator(operands):
      d_params, d_opt, grads = operands
      # Its schedule (a warm-up, say) starts when it does: the same counter, offset.
      return opt_d.update(grads, d_opt, d_params, state['step'] - acfg.disc_start, d_norm)[:2]

    # Frozen (parameters and optimizer state untouched) until disc_start.
    new_d, d_opt = jax.lax.cond(disc_on, update_discriminator, lambda operands: operands[:2],
                                (params['discriminator'], opt_state['discriminator'], d_grads))
    new_state = {'step': state['step'] + 1,
                 'params': {'autoencoder': new_ae, 'discriminator': new_d},
                 'opt_state': {'autoencoder': ae_opt, 'discriminator': d_opt}}
    # The discriminator's numbers mean something only once it trains: averaged over those
    # steps alone. g_loss and d_weight are computed (and logged) before it starts too.
    disc_metrics = {'d_loss': d_loss, **d_scalars, 'd_grad_norm': d_norm}
    metrics = {'loss': ae_loss, **scalars,
               **{k: only_when(disc_factor, v) for k, v in disc_metrics.items()},
               'disc_active': disc_factor, 'grad_norm': ae_norm,
               'learning_rate': learning_rate}
    return new_state, metrics

  def encode(params, images):
    return model.apply(params, images, method='encode')[0]

  def decode(params, z):
    return to_uint8(jnp.clip(model.apply(params, z, method='decode'), -1.0, 1.0))

  def test_metrics(params, batch, rng):
    """PSNR of the reconstruction from the posterior mean (deterministic)."""
    x = batch['image']
    x_hat = model.apply(params, encode(params, x), method='decode')
    return {'psnr': psnr(x, x_hat), 'rec_loss': jax.vmap(rec_loss)(x, x_hat)}

  return Objective(init=init, train_step=train_step, sample=None,
                   sample_params=lambda state: state['params']['autoencoder'],
                   batch_shapes=objectives.image_batch_shapes(config), encode=encode,
                   decode=decode, test_metrics=test_metrics,
                   progress_metrics=('loss', 'psnr'), best_metric=('test/psnr', False))
