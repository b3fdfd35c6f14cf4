"""The DiT backbone: published sizes, adaLN-Zero's identity at initialisation, the patch
layout, and a forward pass through the functional model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import load_config
from jaxgen import models
from jaxgen.models import dit


def _count(tree) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('size,published', [('S', 33e6), ('B', 130e6), ('L', 458e6),
                                            ('XL', 675e6)])
def test_dit_sizes_have_the_published_parameter_counts(size, published):
  """DiT-{S,B,L,XL}/2 on 32 x 32 x 4 latents with 1,000 classes (the published ones also
  predict a variance: 4 p^2 (hidden + 1) more, < 0.1% of any of them)."""
  hidden, depth, heads = dit.SIZES[size]
  module = nnx.eval_shape(lambda: dit.DiT(image_size=32, in_channels=4, patch=2, hidden=hidden,
                                          depth=depth, heads=heads, num_classes=1000,
                                          rngs=nnx.Rngs(0)))
  count = _count(nnx.state(module, nnx.Param))
  assert abs(count / published - 1) < 0.01, count


def _small(patch=4, num_classes=10):
  return dit.DiT(image_size=8, in_channels=3, patch=patch, hidden=32, depth=3, heads=4,
                 num_classes=num_classes, rngs=nnx.Rngs(0))


def test_adaln_zero_makes_every_block_the_identity_and_the_output_zero_at_init():
  module = _small()
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 8, 8, 3))
  t, labels = jnp.array([3.0, 700.0]), jnp.array([1, 10])
  c = module.condition(t, labels)
  h = module.embed(x)
  assert float(jnp.std(h)) > 0.1 and float(jnp.std(c)) > 0.01
  for block in module.blocks:
    np.testing.assert_array_equal(block(h, c), h)
  np.testing.assert_array_equal(module(x, t, labels), 0.0)


def test_tokens_go_back_to_their_patches():
  """The output map writes token (row, col)'s p x p x C values to that patch, in (i, j, c)
  order: with a bias-only final layer, every patch of the image equals the bias."""
  module = _small(patch=2)
  p, channels = 2, 3
  bias = jnp.arange(p * p * channels, dtype=jnp.float32)
  module.linear_out.bias.value = bias
  out = module(jnp.zeros((1, 8, 8, 3)), jnp.zeros(1))
  expected = np.tile(np.asarray(bias).reshape(p, p, channels), (4, 4, 1))
  np.testing.assert_array_equal(out[0], expected)


def test_a_class_and_a_timestep_change_the_output_once_trained_away_from_zero():
  module = _small()
  for block in module.blocks:  # any non-zero adaLN and output layers
    block.modulation.kernel.value = 0.05 * jax.random.normal(jax.random.key(1),
                                                             block.modulation.kernel.shape)
  module.linear_out.kernel.value = 0.05 * jax.random.normal(jax.random.key(2),
                                                            module.linear_out.kernel.shape)
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
  base = module(x, jnp.array([10.0]), jnp.array([2]))
  assert float(jnp.abs(base - module(x, jnp.array([10.0]), jnp.array([3]))).max()) > 1e-4
  assert float(jnp.abs(base - module(x, jnp.array([500.0]), jnp.array([2]))).max()) > 1e-4


def test_the_dit_config_builds_a_functional_model():
  config = load_config('tiny', 'dit_fashion_mnist')
  model = models.build(config.model, (28, 28, 1))
  params = model.init(jax.random.key(0))
  out = model.apply(params, jnp.ones((2, 28, 28, 1)), jnp.array([1.0, 2.0]), jnp.array([0, 10]))
  assert out.shape == (2, 28, 28, 1)
  bad = config.model.copy_and_resolve_references()
  bad.patch = 3
  with pytest.raises(ValueError, match='model.patch=3 does not divide the input size 28'):
    models.build(bad, (28, 28, 1)).init(jax.random.key(0))
