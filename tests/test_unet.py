import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgen.models.functional import FunctionalModel
from jaxgen.models.unet import UNet, timestep_embedding
from jaxgen.state import count_params


def test_ddpm_cifar10_parameter_count():
  """Ho et al.'s CIFAR-10 UNet has 35.7M parameters."""
  model = nnx.eval_shape(lambda: UNet(
      image_size=32, in_channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
      attn_resolutions=(16,), dropout=0.1, rngs=nnx.Rngs(0)))
  n = count_params(nnx.state(model, nnx.Param))
  assert abs(n - 35.7e6) / 35.7e6 < 0.01, n


def _tiny(**kwargs):
  args = dict(image_size=28, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1,
              attn_resolutions=(14,), dropout=0.0)
  args.update(kwargs)
  return FunctionalModel(lambda rngs: UNet(rngs=rngs, **args))


def test_output_shape_and_zero_init_output():
  model = _tiny()
  params = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  out = jax.jit(model.apply)(params, x, jnp.array([0, 10, 999]))
  assert out.shape == x.shape
  # conv_out starts at zero, as in DDPM, so the initial prediction is exactly 0.
  np.testing.assert_array_equal(out, 0.0)


def test_labels_and_dropout_change_the_output():
  model = _tiny(num_classes=10, dropout=0.5)
  params = model.init(jax.random.key(0))
  # Zero-initialised layers hide the time/label path at init: use random weights.
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      treedef, [0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  t = jnp.array([5, 5])
  apply = jax.jit(model.apply)  # op by op, each call took seconds
  base = apply(params, x, t, jnp.array([1, 1]))
  other_label = apply(params, x, t, jnp.array([2, 2]))
  assert not np.allclose(base, other_label)
  np.testing.assert_allclose(base, apply(params, x, t, jnp.array([1, 1])))
  dropped = apply(params, x, t, jnp.array([1, 1]), dropout_rng=jax.random.key(3))
  assert not np.allclose(base, dropped)


def test_timestep_embedding_closed_form():
  emb = timestep_embedding(jnp.array([0.0, 3.0]), 8)
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
  expected = np.concatenate([np.sin(3.0 * freqs), np.cos(3.0 * freqs)])
  np.testing.assert_allclose(emb[1], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
