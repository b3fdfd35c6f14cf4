"""Pix2Pix (Isola et al. 2017) as an objective: paired image-to-image translation.

Per step, on a batch of (source, target) pairs:
  G forward  fake = G(source), dropout on (pix2pix's noise); its VJP is kept for the G update.
  D update   0.5 * [gan(D(source, target), real) + gan(D(source, fake), fake)], D a
             conditional PatchGAN that sees the pair concatenated on channels (2C).
  G update   gan(D'(source, fake), real) + l1_weight * |fake - target|, through the freshly
             updated D', as pytorch-CycleGAN-and-pix2pix's optimize_parameters does: the same
             fake (one G forward), its gradient pulled back through the kept VJP.
`pix2pix.loss`: 'vanilla' (binary cross-entropy on logits, pix2pix's) or 'lsgan' (least
squares). Adam (lr 2e-4, beta1 0.5) for both networks, each with its own optimizer state.
There is no EMA: pix2pix translates with the trained G.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import models, objectives, optim, validate
from jaxgen.models import layers
from jaxgen.objectives import Objective, to_uint8

LOSSES = ('vanilla', 'lsgan')


def gan_loss(kind: str, logits: jax.Array, is_real: bool) -> jax.Array:
  """pix2pix's GANLoss: mean over every patch logit, target 1 (real) or 0 (fake)."""
  logits = logits.astype(jnp.float32)
  if kind == 'lsgan':
    return jnp.mean(jnp.square(logits - (1.0 if is_real else 0.0)))
  return jnp.mean(jax.nn.softplus(-logits if is_real else logits))  # BCE with logits


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  return {'pix2pix.loss': LOSSES, 'model.name': ('pix2pix_unet',),
          'discriminator.name': ('patchgan',), 'model.norm': layers.NORMS,
          'discriminator.norm': layers.NORMS}


def _check(config: ml_collections.ConfigDict) -> None:
  if not (config.data.get('source_key') and config.data.get('target_key')):
    raise validate.ConfigError('pix2pix trains on paired examples: set config.data.source_key '
                               'and config.data.target_key (e.g. edges and image)')
  if config.grad_accum_steps != 1:
    raise validate.ConfigError('config.grad_accum_steps must be 1 for pix2pix')


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  _check(config)
  pcfg = config.pix2pix
  shape = objectives.image_shape(config.data)
  gen = models.build(config.model, shape)
  disc = models.build(config.discriminator, (*shape[:2], 2 * shape[2]))
  opt_g = optim.build_optimizer(config.optimizer, config.total_steps)
  opt_d = optim.build_optimizer(config.discriminator_optimizer, config.total_steps)

  def init(rng):
    g_rng, d_rng = jax.random.split(rng)
    params = {'g': gen.init(g_rng), 'd': disc.init(d_rng)}
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'opt_state': {'g': opt_g.init(params['g']), 'd': opt_d.init(params['d'])}}

  def discriminate(d_params, source, image):
    return disc.apply(d_params, jnp.concatenate([source, image], axis=-1))

  def d_loss(d_params, source, target, fake):
    logits_real = discriminate(d_params, source, target)
    logits_fake = discriminate(d_params, source, fake)
    loss = 0.5 * (gan_loss(pcfg.loss, logits_real, True) +
                  gan_loss(pcfg.loss, logits_fake, False))
    return loss, (logits_real, logits_fake)

  def g_loss(fake, d_params, source, target):
    logits = discriminate(d_params, source, fake)
    gan = gan_loss(pcfg.loss, logits, True)
    l1 = jnp.mean(jnp.abs(fake - target))
    return gan + pcfg.l1_weight * l1, (gan, l1)

  def train_step(state, batch, rng):
    params, opt_state, step = state['params'], state['opt_state'], state['step']
    source, target = batch['source'], batch['target']
    fake, pullback = jax.vjp(lambda g: gen.apply(g, source, rng), params['g'])

    (d_value, (logits_real, logits_fake)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        params['d'], source, target, jax.lax.stop_gradient(fake))
    d_norm = optax.tree.norm(d_grads)
    d_params, d_opt, learning_rate_d = opt_d.update(d_grads, opt_state['d'], params['d'], step,
                                                    d_norm)

    (g_value, (g_gan, g_l1)), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(
        fake, d_params, source, target)
    (g_grads,) = pullback(fake_grad)
    g_norm = optax.tree.norm(g_grads)
    g_params, g_opt, learning_rate_g = opt_g.update(g_grads, opt_state['g'], params['g'], step,
                                                    g_norm)
    metrics = {'d_loss': d_value, 'g_loss': g_value, 'g_gan': g_gan, 'g_l1': g_l1,
               'logits_real': jnp.mean(logits_real), 'logits_fake': jnp.mean(logits_fake),
               'd_grad_norm': d_norm, 'g_grad_norm': g_norm,
               'learning_rate_d': learning_rate_d, 'learning_rate_g': learning_rate_g}
    return {'step': step + 1, 'params': {'g': g_params, 'd': d_params},
            'opt_state': {'g': g_opt, 'd': d_opt}}, metrics

  def translate(params, source, rng, direction='a2b'):
    """uint8 translations of float [-1, 1] sources; dropout on, as pix2pix translates."""
    del direction  # one way only (translation_directions)
    return to_uint8(gen.apply(params, source, rng))

  def test_metrics(params, batch, rng):
    """Per example, translation against target in [0, 1]: PSNR (dB) and SSIM (dm-pix's,
    11x11 Gaussian window), and the L1 error in [-1, 1] units; dropout on, as translating."""
    output = gen.apply(params, batch['source'], rng)
    to_unit = lambda x: (jnp.clip(x.astype(jnp.float32), -1, 1) + 1) / 2
    return {'psnr': dm_pix.psnr(to_unit(output), to_unit(batch['target'])),
            'ssim': dm_pix.ssim(to_unit(output), to_unit(batch['target'])),
            'l1': jnp.mean(jnp.abs(output - batch['target']), axis=(1, 2, 3))}

  def batch_shapes(batch_size):
    return {name: ((batch_size, *shape), jnp.float32) for name in ('source', 'target')}

  return Objective(init=init, train_step=train_step, sample=None,
                   sample_params=lambda state: state['params']['g'],
                   batch_shapes=batch_shapes, translate=translate, test_metrics=test_metrics,
                   best_metric=('test/psnr', False),
                   progress_metrics=('d_loss', 'g_gan', 'g_l1'))
