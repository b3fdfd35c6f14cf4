"""Generative adversarial networks as an objective: a discriminator update, then a
generator update, in one jitted step (StyleGAN2-ADA's training loop as pure functions).

Per step:
  D main   the loss on augmented reals and (stopped-gradient) fakes; with `wgan_gp`, the
           gradient penalty on interpolates.
  D reg    every `d_reg_interval` steps (when r1_gamma > 0): R1 = gamma/2 ||grad_x D(x)||^2
           on reals, times the interval, as its own optimizer update.
  G main   the generator's loss on augmented fakes, through the freshly updated D.
  G reg    every `g_reg_interval` steps (when pl_weight > 0): path-length regularisation on
           batch / pl_batch_shrink fakes, times the interval, as its own update.
  EMA      of G's parameters, with a half-life in images (`ema_kimg`, ramped up).
A network with a lazy regulariser trains with learning rate x c and Adam betas ^ c,
c = k / (k + 1). The regulariser steps are `lax.cond` branches: no recompile, and the
branch not taken costs nothing.

Losses (`gan.loss`):
  logistic  non-saturating (StyleGAN2's): D softplus(-D(x)) + softplus(D(G(z))),
            G softplus(-D(G(z))).
  hinge     D relu(1 - D(x)) + relu(1 + D(G(z))), G -D(G(z)).
  wgan_gp   D D(G(z)) - D(x) + gp_weight (||grad D(x_hat)|| - 1)^2, G -D(G(z)).

Everything a resumed run needs is in the state: both networks and optimizer states, G's
EMA, and `gan/`: `w_avg` (the tracked mean of w, for truncation), `pl_mean` (the
path-length target), and the augmentation probability `aug_p` with the sign statistics of
D on reals since its last adjustment (ADA).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import augment, models, objectives, optim, validate
from jaxgen import state as state_lib
from jaxgen.models import conv, dcgan
from jaxgen.objectives import Objective, class_labels, only_when, to_uint8

LOSSES = ('logistic', 'hinge', 'wgan_gp')
AUGMENTS = ('none', 'diffaugment', 'ada')
GENERATORS = ('dcgan', 'stylegan2')  # model.name and discriminator.name
SAMPLE_OPTIONS = {'truncation_psi': float, 'truncation_cutoff': int, 'labels': str}


def d_loss(kind: str, logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """The discriminator's loss (without regularisers), a mean over the batch."""
  if kind == 'logistic':
    return jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake))
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake))
  return jnp.mean(logits_fake) - jnp.mean(logits_real)  # wgan_gp (the penalty is added apart)


def g_loss(kind: str, logits_fake: jax.Array) -> jax.Array:
  if kind == 'logistic':
    return jnp.mean(jax.nn.softplus(-logits_fake))
  return -jnp.mean(logits_fake)


def input_gradient_sq_norm(d_fn, x: jax.Array) -> jax.Array:
  """||grad_x d_fn(x)_i||^2 per example [B] (d_fn gives one logit per example)."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(x)
  return jnp.sum(jnp.square(grads.astype(jnp.float32)).reshape(x.shape[0], -1), axis=-1)


def r1_penalty(d_fn, real: jax.Array, gamma: float) -> tuple[jax.Array, jax.Array]:
  """(gamma / 2 * mean ||grad D(x)||^2, mean ||grad D(x)||^2) on real images."""
  sq_norm = jnp.mean(input_gradient_sq_norm(d_fn, real))
  return 0.5 * gamma * sq_norm, sq_norm


def gradient_penalty(d_fn, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
  """WGAN-GP: mean (||grad D(x_hat)|| - 1)^2 at random interpolates of reals and fakes."""
  eps = jax.random.uniform(key, (real.shape[0], 1, 1, 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  return jnp.mean(jnp.square(jnp.sqrt(input_gradient_sq_norm(d_fn, x_hat) + 1e-12) - 1.0))


def path_lengths(synthesis, ws: jax.Array, noise: jax.Array) -> jax.Array:
  """StyleGAN2's ||J_w^T y|| per example, y = `noise` (randn / sqrt(H W))."""
  grads = jax.grad(lambda ws: jnp.sum(synthesis(ws) * noise))(ws)
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def truncate(ws: jax.Array, w_avg: jax.Array, psi: float, cutoff: int | None) -> jax.Array:
  """The truncation trick: w_avg + psi (w - w_avg) on the first `cutoff` layers (all when
  None or 0)."""
  truncated = w_avg + psi * (ws - w_avg)
  if not cutoff:
    return truncated
  layer = jnp.arange(ws.shape[1])[None, :, None]
  return jnp.where(layer < cutoff, truncated, ws)


def mix_styles(ws: jax.Array, ws_other: jax.Array, cutoff: jax.Array) -> jax.Array:
  """Per example: layers before `cutoff` [B] from `ws`, the rest from `ws_other`."""
  layer = jnp.arange(ws.shape[1])[None, :, None]
  return jnp.where(layer < cutoff[:, None, None], ws, ws_other)


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Allowed values of the config fields this family reads."""
  known = {'gan.loss': LOSSES, 'gan.augment': AUGMENTS, 'model.name': GENERATORS,
           'discriminator.name': GENERATORS, 'gan.ada_pipeline': tuple(augment.ADA_PIPELINES)}
  if config.model.get('name') == 'dcgan':
    known['model.norm'] = dcgan.NORMS
  if config.get('discriminator', {}).get('name') == 'dcgan':
    known['discriminator.norm'] = dcgan.NORMS
  if config.get('discriminator', {}).get('name') == 'stylegan2':
    known['discriminator.architecture'] = ('resnet', 'orig')
  return known


def _check(config: ml_collections.ConfigDict) -> None:
  gcfg = config.gan
  if config.grad_accum_steps != 1:
    raise validate.ConfigError('config.grad_accum_steps must be 1 for gan: R1 and path-length '
                               'regularisation need the whole batch at once')
  if config.model.num_classes and not config.data.label_key:
    raise validate.ConfigError(f'config.model.num_classes={config.model.num_classes} needs '
                               'labels: set config.data.label_key')
  problem = augment.check_policy(gcfg.diffaugment_policy)
  if problem:
    raise validate.ConfigError(f'config.gan.diffaugment_policy: {problem}')
  for field in ('d_reg_interval', 'g_reg_interval', 'pl_batch_shrink'):
    value = gcfg[field]
    if not isinstance(value, int) or value < (1 if field == 'pl_batch_shrink' else 0):
      raise validate.ConfigError(f'config.gan.{field}={value!r} must be an integer >= '
                                 f'{1 if field == "pl_batch_shrink" else 0}')


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  _check(config)
  gcfg = config.gan
  image_shape = objectives.image_shape(config.data)
  num_classes = config.model.num_classes
  gen = models.build(config.model, image_shape, role='generator')
  disc = models.build(config.discriminator, image_shape, role='discriminator',
                      num_classes=num_classes)
  z_dim, num_ws = gen.attribute('z_dim'), gen.attribute('num_ws')
  w_dim = gen.attribute('w_dim')
  # A regulariser is on when it has both a weight and an interval; only then is its
  # network's optimizer scaled by c = k / (k + 1).
  d_reg = gcfg.d_reg_interval if gcfg.r1_gamma > 0 else 0
  g_reg = gcfg.g_reg_interval if gcfg.pl_weight > 0 else 0
  opt_g = optim.build_optimizer(optim.lazy_regularised(config.optimizer, g_reg),
                                config.total_steps)
  opt_d = optim.build_optimizer(optim.lazy_regularised(config.discriminator_optimizer, d_reg),
                                config.total_steps)
  batch_size = config.global_batch_size

  def augment_images(key, images, p):
    if gcfg.augment == 'diffaugment':
      return augment.diff_augment(key, images, gcfg.diffaugment_policy)
    if gcfg.augment == 'ada':
      return augment.ada_augment(key, images, p, gcfg.ada_pipeline)
    return images

  def init(rng):
    g_rng, d_rng = jax.random.split(rng)
    params = {'g': gen.init(g_rng), 'd': disc.init(d_rng)}
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'ema_params': jax.tree_util.tree_map(jnp.copy, params['g']),
            'opt_state': {'g': opt_g.init(params['g']), 'd': opt_d.init(params['d'])},
            'gan': {'w_avg': jnp.zeros((w_dim,), jnp.float32),
                    'pl_mean': jnp.zeros((), jnp.float32),
                    'aug_p': jnp.asarray(gcfg.ada_p_init, jnp.float32),
                    'ada_sign_sum': jnp.zeros((), jnp.float32),
                    'ada_count': jnp.zeros((), jnp.float32)}}

  def mapping(g_params, z, labels):
    return gen.apply(g_params, z, labels, method='mapping')

  def generate(g_params, key, labels, n):
    """(images, ws before mixing) for n fresh latents, with style-mixing regularisation."""
    z_key, mix_key, noise_key = jax.random.split(key, 3)
    ws = mapping(g_params, jax.random.normal(z_key, (n, z_dim)), labels)
    mixed = ws
    if gcfg.style_mixing > 0 and num_ws > 1:
      keys = jax.random.split(mix_key, 3)
      other = mapping(g_params, jax.random.normal(keys[0], (n, z_dim)), labels)
      cutoff = jax.random.randint(keys[1], (n,), 1, num_ws)
      use = jax.random.bernoulli(keys[2], gcfg.style_mixing, (n,))
      mixed = mix_styles(ws, other, jnp.where(use, cutoff, num_ws))
    return gen.apply(g_params, mixed, noise_key, method='synthesis'), ws

  def discriminate(d_params, images, labels, key, p):
    return disc.apply(d_params, augment_images(key, images, p), labels)

  def d_main_loss(d_params, real, fake, labels, key, p):
    keys = jax.random.split(key, 4)
    logits_real = discriminate(d_params, real, labels, keys[0], p)
    logits_fake = discriminate(d_params, fake, labels, keys[1], p)
    loss = d_loss(gcfg.loss, logits_real, logits_fake)
    if gcfg.loss == 'wgan_gp':
      loss += gcfg.gp_weight * gradient_penalty(
          lambda x: discriminate(d_params, x, labels, keys[2], p), real, fake, keys[3])
    return loss, (logits_real, logits_fake)

  def d_reg_loss(d_params, real, labels, key, p):
    penalty, sq_norm = r1_penalty(lambda x: discriminate(d_params, x, labels, key, p), real,
                                  gcfg.r1_gamma)
    return penalty * d_reg, sq_norm

  def g_main_loss(g_params, d_params, labels, key, p):
    gen_key, aug_key = jax.random.split(key)
    fake, _ = generate(g_params, gen_key, labels, batch_size)
    logits = discriminate(d_params, fake, labels, aug_key, p)
    return g_loss(gcfg.loss, logits), logits

  def g_reg_loss(g_params, labels, key, pl_mean):
    n = max(batch_size // gcfg.pl_batch_shrink, 1)
    z_key, noise_key, synth_key = jax.random.split(key, 3)
    labels = None if labels is None else labels[:n]
    ws = mapping(g_params, jax.random.normal(z_key, (n, z_dim)), labels)
    height, width = image_shape[:2]
    noise = jax.random.normal(noise_key, (n, *image_shape)) / math.sqrt(height * width)
    lengths = path_lengths(lambda w: gen.apply(g_params, w, synth_key, method='synthesis'),
                           ws, noise)
    new_mean = jax.lax.stop_gradient(pl_mean + gcfg.pl_decay * (jnp.mean(lengths) - pl_mean))
    penalty = jnp.mean(jnp.square(lengths - new_mean))
    return penalty * gcfg.pl_weight * g_reg, (penalty, new_mean)

  def lazy(interval, step, loss_fn, optimizer, params, opt_state, *args):
    """Every `interval` steps: one update on loss_fn's gradient. (params, opt_state, aux,
    present) with aux zeros on the other steps."""
    abstract_aux = jax.eval_shape(lambda: loss_fn(params, *args)[1])

    def update(operands):
      params, opt_state = operands
      with conv.matmul_gradients():  # XLA:CPU's conv gradients are slow in a cond branch
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
      params, opt_state, _ = optimizer.update(grads, opt_state, params, step)
      return params, opt_state, aux

    def skip(operands):
      return (*operands, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                                abstract_aux))
    present = step % interval == 0
    return (*jax.lax.cond(present, update, skip, (params, opt_state)),
            present.astype(jnp.float32))

  def train_step(state, batch, rng):
    params, opt_state, gan = state['params'], state['opt_state'], state['gan']
    step, real, p = state['step'], batch['image'], state['gan']['aug_p']
    labels = batch['label'] if num_classes else None
    fake_key, d_key, dreg_key, g_key, greg_key = jax.random.split(rng, 5)

    # D main: fakes from the current G (w_avg tracks their w, as StyleGAN2-ADA's D phase).
    fake, ws = generate(params['g'], fake_key, labels, batch_size)
    w_mean = jnp.mean(ws[:, 0].astype(jnp.float32), axis=0)
    w_avg = w_mean + gcfg.w_avg_beta * (gan['w_avg'] - w_mean)
    (d_value, (logits_real, logits_fake)), d_grads = jax.value_and_grad(
        d_main_loss, has_aux=True)(params['d'], real, jax.lax.stop_gradient(fake), labels,
                                   d_key, p)
    d_norm = optax.tree.norm(d_grads)
    d_params, d_opt, learning_rate_d = opt_d.update(d_grads, opt_state['d'], params['d'], step,
                                                    d_norm)
    metrics = {'d_loss': d_value, 'logits_real': jnp.mean(logits_real),
               'logits_fake': jnp.mean(logits_fake),
               'd_grad_norm': d_norm, 'learning_rate_d': learning_rate_d}
    if d_reg:
      d_params, d_opt, r1, present = lazy(d_reg, step, d_reg_loss, opt_d, d_params, d_opt,
                                          real, labels, dreg_key, p)
      metrics['r1'] = only_when(present, r1)

    # G main, through the updated D.
    (g_value, logits_gen), g_grads = jax.value_and_grad(g_main_loss, has_aux=True)(
        params['g'], d_params, labels, g_key, p)
    g_norm = optax.tree.norm(g_grads)
    g_params, g_opt, learning_rate_g = opt_g.update(g_grads, opt_state['g'], params['g'], step,
                                                    g_norm)
    metrics.update({'g_loss': g_value, 'logits_gen': jnp.mean(logits_gen),
                    'g_grad_norm': g_norm, 'learning_rate_g': learning_rate_g})
    pl_mean = gan['pl_mean']
    if g_reg:
      g_params, g_opt, (pl, new_mean), present = lazy(g_reg, step, g_reg_loss, opt_g, g_params,
                                                      g_opt, labels, greg_key, pl_mean)
      pl_mean = jnp.where(present > 0, new_mean, pl_mean)
      metrics.update({'pl': only_when(present, pl), 'pl_mean': pl_mean})

    beta = state_lib.ema_decay_images(step, batch_size, gcfg.ema_kimg, gcfg.ema_rampup)
    # r_t, the ADA overfitting heuristic: E[sign D(x)] on (augmented) reals.
    signs = jnp.sign(logits_real)
    gan_state = ada_adjust({**gan, 'w_avg': w_avg, 'pl_mean': pl_mean}, signs, step, gcfg,
                           batch_size,
                           adapt=gcfg.augment == 'ada' and gcfg.ada_target > 0)
    metrics.update({'r_t': jnp.mean(signs), 'aug_p': gan_state['aug_p'], 'ema_beta': beta})
    new_state = {'step': step + 1, 'params': {'g': g_params, 'd': d_params},
                 'ema_params': state_lib.ema_update(state['ema_params'], g_params, beta),
                 'opt_state': {'g': g_opt, 'd': d_opt}, 'gan': gan_state}
    return new_state, metrics

  def prior_latents(params, rng, n, *, truncation_psi=None, truncation_cutoff=None,
                    labels=None):
    """Mapped, truncated w [n, num_ws, w_dim] of fresh latents (`params`: sample_params)."""
    labels = class_labels(labels, n, num_classes)
    psi = gcfg.truncation_psi if truncation_psi is None else truncation_psi
    cutoff = gcfg.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
    ws = mapping(params['g'], jax.random.normal(rng, (n, z_dim)), labels)
    return truncate(ws, params['w_avg'], psi, cutoff) if psi != 1.0 else ws

  def synthesize(params, ws, noise_key):
    return to_uint8(gen.apply(params['g'], ws, noise_key, method='synthesis'))

  def sample(params, rng, n, **options):
    """`params` = sample_params(state): G's EMA weights and the tracked w_avg."""
    z_key, noise_key = jax.random.split(rng)
    return synthesize(params, prior_latents(params, z_key, n, **options), noise_key)

  def decode(params, ws):
    # One fixed noise draw for every image: a walk or a style swap changes w alone.
    return synthesize(params, ws, jax.random.key(0))

  return Objective(init=init, train_step=train_step, sample=sample,
                   sample_params=lambda state: {'g': state['ema_params'],
                                                'w_avg': state['gan']['w_avg']},
                   batch_shapes=objectives.image_batch_shapes(config), decode=decode,
                   prior_latents=prior_latents, style_ranges=style_ranges(num_ws),
                   progress_metrics=('d_loss', 'g_loss', 'r_t'),
                   sample_options=SAMPLE_OPTIONS, sample_classes=num_classes)


def style_ranges(num_ws: int) -> dict[str, tuple[int, int]]:
  """StyleGAN's coarse / middle / fine styles as w-layer ranges: two w per resolution;
  coarse = 4-8 px, middle = the next two resolutions (16-32 px), fine = the rest, as in
  the StyleGAN paper's figure (at 32 px: 4-8, 16, 32). None for a single w (DCGAN)."""
  levels = num_ws // 2
  if levels < 3:
    return {}
  coarse = 2 if levels >= 4 else 1
  middle = min(2, levels - coarse - 1)
  return {'coarse': (0, 2 * coarse), 'middle': (2 * coarse, 2 * (coarse + middle)),
          'fine': (2 * (coarse + middle), num_ws)}


def ada_adjust(gan: dict, signs: jax.Array, step: jax.Array, gcfg: ml_collections.ConfigDict,
               batch_size: int, adapt: bool) -> dict:
  """Accumulate sign(D(real)); every `ada_interval` steps move `aug_p` towards the target
  r_t by batch x interval / (ada_kimg x 1000), clipped to [0, 1] (StyleGAN2-ADA). The
  accumulator lives in the state, so a resumed run adjusts exactly as an unbroken one."""
  if not adapt:
    return gan
  total = gan['ada_sign_sum'] + jnp.sum(signs)
  count = gan['ada_count'] + signs.shape[0]
  due = (step + 1) % gcfg.ada_interval == 0
  speed = batch_size * gcfg.ada_interval / (gcfg.ada_kimg * 1000.0)
  moved = jnp.clip(gan['aug_p'] + jnp.sign(total / count - gcfg.ada_target) * speed, 0.0, 1.0)
  return {**gan, 'aug_p': jnp.where(due, moved, gan['aug_p']),
          'ada_sign_sum': jnp.where(due, 0.0, total), 'ada_count': jnp.where(due, 0.0, count)}
