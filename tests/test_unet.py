import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgen.models.functional import FunctionalModel
from jaxgen.models.layers import dropout
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


def _norm_and_vjp(module, params, x, cotangent):
  """(module(x) with `params`, the vjp of `cotangent` for the params and x), jitted."""
  graph = nnx.split(module)[0]

  def run(params, x, cotangent):
    y, vjp = jax.vjp(lambda p, x: nnx.merge(graph, p)(x), params, x)
    return y, vjp(cotangent.astype(y.dtype))
  return jax.jit(run)(params, x, cotangent)


def test_group_norm_matches_nnx_group_norm():
  """layers.GroupNorm sums its statistics per channel, then per group: the same values and
  gradients as nnx.GroupNorm (float32 and bfloat16 inputs, group, instance and layer norm,
  images and token sequences), the same parameters, and a mask still goes to nnx's."""
  from jaxgen.models import layers

  cases = [((2, 8, 8, 64), 32, jnp.float32), ((2, 5, 7, 12), 12, jnp.float32),
           ((3, 6, 6, 16), 1, jnp.float32), ((2, 9, 32), 8, jnp.float32),
           ((2, 4, 4, 64), 32, jnp.bfloat16)]
  for shape, groups, dtype in cases:
    key = jax.random.key(sum(shape))
    ours = layers.GroupNorm(shape[-1], num_groups=groups, rngs=nnx.Rngs(0))
    theirs = nnx.GroupNorm(shape[-1], num_groups=groups, rngs=nnx.Rngs(0))
    _, params = nnx.split(ours)
    assert jax.tree.structure(params) == jax.tree.structure(nnx.split(theirs)[1])
    # An offset and spread per channel, and non-trivial affine parameters.
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = (jax.random.normal(k1, shape) * (1 + jax.random.uniform(k2, shape[-1:]) * 3)
         + jax.random.normal(k3, shape[-1:]) * 2).astype(dtype)
    params['scale'].value = 1 + 0.5 * jax.random.normal(k4, shape[-1:])
    params['bias'].value = 0.3 * jax.random.normal(k1, shape[-1:])
    cotangent = jax.random.normal(k2, shape)

    y, (dparams, dx) = _norm_and_vjp(ours, params, x, cotangent)
    y_ref, (dparams_ref, dx_ref) = _norm_and_vjp(theirs, params, x, cotangent)
    assert y.dtype == y_ref.dtype and dx.dtype == dx_ref.dtype, (shape, dtype)
    tol = 1e-2 if dtype == jnp.bfloat16 else 2e-5
    np.testing.assert_allclose(y, y_ref, atol=tol, rtol=tol, err_msg=str(shape))
    np.testing.assert_allclose(np.asarray(dx, np.float32), np.asarray(dx_ref, np.float32),
                               atol=tol, rtol=tol, err_msg=str(shape))
    for name in ('scale', 'bias'):
      np.testing.assert_allclose(dparams[name].value, dparams_ref[name].value,
                                 atol=tol * 10, rtol=tol, err_msg=f'{shape} {name}')
  # A mask is nnx.GroupNorm's business: the same module, the same answer.
  norm = layers.GroupNorm(16, num_groups=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(5), (2, 3, 3, 16))
  mask = jnp.broadcast_to(jnp.arange(9).reshape(1, 3, 3, 1) % 2 == 0, x.shape)
  reference = nnx.GroupNorm(16, num_groups=4, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(norm(x, mask=mask), reference(x, mask=mask), rtol=1e-6)


def test_dropout_keeps_the_mean_at_the_stated_rate_and_splits_with_the_batch():
  x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (8, 32, 32, 128)), jnp.float32)
  for shape in (x.shape, (8, 16, 16, 5)):  # an odd last axis: one draw per value
    x_ = x[:, :shape[1], :shape[2], :shape[3]]
    out = np.asarray(dropout(x_, 0.1, jax.random.key(1)))
    kept = out != 0
    threshold = round(0.9 * 2**16)
    # kept values are scaled by exactly 2^16 / threshold; the rate is within 5 sigma
    np.testing.assert_allclose(out[kept], np.asarray(x_)[kept] * (2**16 / threshold), rtol=1e-6)
    p = threshold / 2**16
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / kept.size), kept.mean()
  # different keys, different masks; the same key, the same mask
  a, b = dropout(x, 0.1, jax.random.key(1)), dropout(x, 0.1, jax.random.key(2))
  assert not np.array_equal(a != 0, b != 0)
  np.testing.assert_array_equal(a, dropout(x, 0.1, jax.random.key(1)))
  # The choices are independent (both kept at the rate p^2, within 5 sigma): both halves of
  # each draw, neighbours along every axis, and two keys' masks. An unmixed counter, or a
  # hash of the key alone, fails these.
  def independent(m1, m2):
    m1, m2 = np.asarray(m1 != 0), np.asarray(m2 != 0)
    assert abs(np.mean(m1 & m2) - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / m1.size)
  independent(a[..., :64], a[..., 64:])
  for axis in range(4):
    independent(np.take(a, range(1, 8), axis), np.take(a, range(7), axis))
  independent(a, b)
  assert dropout(x, 0.0, jax.random.key(1)) is x and dropout(x, 0.5, None) is x
  # split over 8 devices along the batch: the same values as on one
  mesh = jax.make_mesh((8,), ('data',))
  spec = NamedSharding(mesh, P('data'))
  sharded = jax.jit(lambda x, k: dropout(x, 0.1, k), in_shardings=(spec, None),
                    out_shardings=spec)(jax.device_put(x, spec), jax.random.key(1))
  np.testing.assert_array_equal(sharded, a)
  with pytest.raises(ValueError, match='dropout rate 1.0'):
    dropout(x, 1.0, jax.random.key(1))
