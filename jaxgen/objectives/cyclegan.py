"""CycleGAN (Zhu et al. 2017) as an objective: unpaired translation between domains A and B.

Two generators (`g/ab`: A -> B, `g/ba`: B -> A) and two discriminators (`d/a` judges domain
A images, `d/b` domain B), as pytorch-CycleGAN-and-pix2pix's optimize_parameters does:
  G update  gan(D_b(G_ab(a)), real) + gan(D_a(G_ba(b)), real)
            + lambda_cycle (|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b|)
            + lambda_identity lambda_cycle (|G_ab(b) - b| + |G_ba(a) - a|)
            with one optimizer over both generators.
  D update  for each domain: 0.5 [gan(D(real), real) + gan(D(pooled fake), fake)], the fakes
            of this step's G forward (before the G update) drawn through the image history
            pool; one optimizer over both discriminators.
`cyclegan.loss`: 'lsgan' (CycleGAN's) or 'vanilla'.

The image pools (`cyclegan/pool_a`, `pool_b`: up to `pool_size` generated images each, and
how many are filled) live in the train state, on device: checkpointed, sharded by the
config's rules, and a resumed run draws from the same pool it would have.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import models, objectives, optim, validate
from jaxgen.models import layers
from jaxgen.objectives import Objective, to_uint8
from jaxgen.objectives.pix2pix import gan_loss

LOSSES = ('lsgan', 'vanilla')
DIRECTIONS = ('a2b', 'b2a')


def pool_query(pool: jax.Array, count: jax.Array, images: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """pytorch-CycleGAN's ImagePool.query, per image in order: while the pool is not full the
  image is stored and returned; then, with probability 1/2, a random stored image is
  returned and the new one takes its place, else the new one is returned. Returns
  (images for D, new pool, new count). A pool of size 0 returns the images."""
  size = pool.shape[0]
  if size == 0:
    return images, pool, count

  def one(carry, inputs):
    pool, count = carry
    image, key = inputs
    swap_key, index_key = jax.random.split(key)
    filling = count < size
    swap = jnp.logical_and(~filling, jax.random.uniform(swap_key) > 0.5)
    slot = jnp.where(filling, jnp.minimum(count, size - 1),
                     jax.random.randint(index_key, (), 0, size))
    stored = pool[slot]
    out = jnp.where(swap, stored, image)
    pool = jnp.where(jnp.logical_or(filling, swap), pool.at[slot].set(image), pool)
    return (pool, count + filling.astype(count.dtype)), out

  keys = jax.random.split(key, images.shape[0])
  (pool, count), out = jax.lax.scan(one, (pool, count), (images.astype(pool.dtype), keys))
  return out, pool, count


def known_values(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  return {'cyclegan.loss': LOSSES, 'model.name': ('cyclegan_resnet', 'pix2pix_unet'),
          'discriminator.name': ('patchgan',), 'model.norm': layers.NORMS,
          'discriminator.norm': layers.NORMS}


def _check(config: ml_collections.ConfigDict) -> None:
  if not config.data.get('target_split'):
    raise validate.ConfigError('cyclegan trains on two unpaired domains: set '
                               'config.data.target_split (e.g. trainB, with split trainA)')
  if config.grad_accum_steps != 1:
    raise validate.ConfigError('config.grad_accum_steps must be 1 for cyclegan')
  if config.cyclegan.pool_size < 0:
    raise validate.ConfigError(f'config.cyclegan.pool_size={config.cyclegan.pool_size} must '
                               'be >= 0 (0: no history pool)')


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  _check(config)
  ccfg = config.cyclegan
  shape = objectives.image_shape(config.data)
  gen = models.build(config.model, shape)
  disc = models.build(config.discriminator, shape)
  opt_g = optim.build_optimizer(config.optimizer, config.total_steps)
  opt_d = optim.build_optimizer(config.discriminator_optimizer, config.total_steps)

  def init(rng):
    keys = jax.random.split(rng, 4)
    params = {'g': {'ab': gen.init(keys[0]), 'ba': gen.init(keys[1])},
              'd': {'a': disc.init(keys[2]), 'b': disc.init(keys[3])}}
    pool = jnp.zeros((ccfg.pool_size, *shape), jnp.float32)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'opt_state': {'g': opt_g.init(params['g']), 'd': opt_d.init(params['d'])},
            'cyclegan': {'pool_a': pool, 'pool_b': pool, 'count_a': jnp.zeros((), jnp.int32),
                         'count_b': jnp.zeros((), jnp.int32)}}

  def g_loss(g, d, real_a, real_b):
    fake_b, fake_a = gen.apply(g['ab'], real_a), gen.apply(g['ba'], real_b)
    cycle_a = jnp.mean(jnp.abs(gen.apply(g['ba'], fake_b) - real_a))
    cycle_b = jnp.mean(jnp.abs(gen.apply(g['ab'], fake_a) - real_b))
    gan_ab = gan_loss(ccfg.loss, disc.apply(d['b'], fake_b), True)
    gan_ba = gan_loss(ccfg.loss, disc.apply(d['a'], fake_a), True)
    total = gan_ab + gan_ba + ccfg.lambda_cycle * (cycle_a + cycle_b)
    parts = {'g_gan_ab': gan_ab, 'g_gan_ba': gan_ba, 'cycle_a': cycle_a, 'cycle_b': cycle_b}
    if ccfg.lambda_identity > 0:
      idt_b = jnp.mean(jnp.abs(gen.apply(g['ab'], real_b) - real_b))
      idt_a = jnp.mean(jnp.abs(gen.apply(g['ba'], real_a) - real_a))
      total += ccfg.lambda_identity * ccfg.lambda_cycle * (idt_a + idt_b)
      parts.update({'identity_a': idt_a, 'identity_b': idt_b})
    return total, (parts, fake_a, fake_b)

  def d_loss(d, real_a, real_b, pooled_a, pooled_b):
    losses = {}
    for name, real, fake in (('a', real_a, pooled_a), ('b', real_b, pooled_b)):
      losses[f'd_{name}'] = 0.5 * (gan_loss(ccfg.loss, disc.apply(d[name], real), True) +
                                   gan_loss(ccfg.loss, disc.apply(d[name], fake), False))
    return losses['d_a'] + losses['d_b'], losses

  def train_step(state, batch, rng):
    params, opt_state, step = state['params'], state['opt_state'], state['step']
    pools = state['cyclegan']
    real_a, real_b = batch['source'], batch['target']

    (g_value, (parts, fake_a, fake_b)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        params['g'], params['d'], real_a, real_b)
    g_norm = optax.tree.norm(g_grads)
    g_params, g_opt, learning_rate_g = opt_g.update(g_grads, opt_state['g'], params['g'], step,
                                                    g_norm)

    key_a, key_b = jax.random.split(rng)
    pooled_a, pool_a, count_a = pool_query(pools['pool_a'], pools['count_a'],
                                           jax.lax.stop_gradient(fake_a), key_a)
    pooled_b, pool_b, count_b = pool_query(pools['pool_b'], pools['count_b'],
                                           jax.lax.stop_gradient(fake_b), key_b)
    (d_value, d_parts), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        params['d'], real_a, real_b, pooled_a, pooled_b)
    d_norm = optax.tree.norm(d_grads)
    d_params, d_opt, learning_rate_d = opt_d.update(d_grads, opt_state['d'], params['d'], step,
                                                    d_norm)
    metrics = {'g_loss': g_value, 'd_loss': d_value, **parts, **d_parts,
               'g_grad_norm': g_norm, 'd_grad_norm': d_norm,
               'learning_rate_g': learning_rate_g, 'learning_rate_d': learning_rate_d}
    return {'step': step + 1, 'params': {'g': g_params, 'd': d_params},
            'opt_state': {'g': g_opt, 'd': d_opt},
            'cyclegan': {'pool_a': pool_a, 'pool_b': pool_b, 'count_a': count_a,
                         'count_b': count_b}}, metrics

  def translate(params, source, rng, direction='a2b'):
    """uint8 translations of float [-1, 1] images of domain A (a2b) or B (b2a)."""
    del rng  # the ResNet generator is deterministic
    return to_uint8(gen.apply(params['ab' if direction == 'a2b' else 'ba'], source))

  def batch_shapes(batch_size):
    return {name: ((batch_size, *shape), jnp.float32) for name in ('source', 'target')}

  return Objective(init=init, train_step=train_step, sample=None,
                   sample_params=lambda state: state['params']['g'],
                   batch_shapes=batch_shapes, translate=translate,
                   translation_directions=DIRECTIONS, best_metric=('a2b/fd_fmnist', True),
                   progress_metrics=('d_loss', 'g_loss', 'cycle_a', 'cycle_b'))
