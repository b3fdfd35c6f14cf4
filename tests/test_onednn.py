"""The oneDNN convolutions (models/onednn.py): the values and gradients of XLA's, computed
per device under a mesh, and XLA's wherever the calls cannot run per device."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgen import sharding
from jaxgen.models import conv as conv_lib
from jaxgen.models import onednn

if not onednn.available():
  # `make test` builds the library first and sets JAXGEN_TEST_ONEDNN=require.
  if os.environ.get('JAXGEN_TEST_ONEDNN') == 'require':
    raise RuntimeError(f'{onednn.LIBRARY} is not built or does not load: '
                       'run scripts/build_native.sh .venv/bin/python --require')
  pytest.skip('the oneDNN library is not built (scripts/build_native.sh)',
              allow_module_level=True)

DN = ('NHWC', 'HWIO', 'NHWC')


def mesh():
  return jax.make_mesh((jax.device_count(), 1), sharding.MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def conv(x, w, stride, padding, routed):
  if routed:  # as nnx.Conv(conv_general_dilated=conv_lib.conv_general_dilated) calls it
    return conv_lib.conv_general_dilated(
        x, w, (stride, stride), padding,
        dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, w.shape, DN))
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)


def loss(x, w, stride, padding, routed):
  return jnp.sum(jnp.sin(conv(x, w, stride, padding, routed)))


def onednn_calls(fn, *args) -> int:
  return jax.jit(fn).lower(*args).as_text().count('jaxgen_onednn_conv')


# (cin, cout, kernel, stride, padding, calls): all three convolutions on oneDNN (strided,
# asymmetric padding, 1x1, one input channel, stride 1 from fewer to more channels than a
# tile of the flipped kernel's transpose), and an output layer's many-to-few
# projection, whose forward (and the input layer's input gradient) stays XLA's.
CASES = [(16, 16, 3, 1, 'SAME', 3), (32, 40, 3, 2, 'SAME', 3),
         (32, 32, 3, 1, ((0, 2), (1, 0)), 3), (48, 32, 1, 1, 'VALID', 3),
         (1, 16, 3, 1, 'SAME', 3), (24, 40, 3, 1, 'SAME', 3), (32, 3, 3, 1, 'SAME', 2),
         (3, 32, 3, 1, 'SAME', 2)]


@pytest.mark.parametrize('cin,cout,k,stride,padding,calls', CASES)
def test_a_convolution_and_its_gradients_are_xlas_computed_per_device(
    cin, cout, k, stride, padding, calls):
  n = 2 * jax.device_count()
  kx, kw = jax.random.split(jax.random.key(cin + cout + k + stride))
  x = jax.random.normal(kx, (n, 8, 8, cin))
  w = jax.random.normal(kw, (k, k, cin, cout)) / np.sqrt(k * k * cin)
  m = mesh()
  with jax.set_mesh(m):
    x = jax.device_put(x, NamedSharding(m, P(sharding.MESH_AXES)))
    grad = lambda routed: jax.jit(jax.value_and_grad(
        lambda x, w: loss(x, w, stride, padding, routed), argnums=(0, 1)))
    (v1, (dx1, dw1)), (v0, (dx0, dw0)) = grad(True)(x, w), grad(False)(x, w)
    assert onednn_calls(jax.grad(lambda x, w: loss(x, w, stride, padding, True),
                                 argnums=(0, 1)), x, w) == calls
    # Per device: the examples are not gathered onto every device for the calls.
    forward = jax.jit(lambda x, w: conv(x, w, stride, padding, True)).lower(x, w).compile()
    assert 'all-gather' not in forward.as_text()
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  np.testing.assert_allclose(dx1, dx0, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dw1, dw0, rtol=1e-4, atol=1e-4)
  assert dx1.sharding.spec == P(sharding.MESH_AXES)


def test_a_gradient_penalty_through_the_calls_is_xlas():
  """A derivative of a derivative (R1 on a discriminator) differentiates no FFI call."""
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (jax.device_count(), 6, 6, 32))
  w = jax.random.normal(kw, (3, 3, 32, 32)) / 17.0

  def penalty(w, routed):
    g = jax.grad(lambda x: loss(x, w, 1, 'SAME', routed))(x)
    return jnp.sum(g ** 2)
  with jax.set_mesh(mesh()):
    got = jax.jit(jax.grad(lambda w: penalty(w, True)))(w)
    want = jax.jit(jax.grad(lambda w: penalty(w, False)))(w)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_without_a_mesh_or_an_even_split_or_when_off_the_convolutions_are_xlas():
  x = jnp.ones((jax.device_count() + 1, 6, 6, 32))
  w = jnp.ones((3, 3, 32, 32))
  f = jax.grad(lambda x, w: loss(x, w, 1, 'SAME', True), argnums=(0, 1))
  # No mesh known on several devices: sharded operands would be gathered for the calls.
  assert jax.device_count() > 1 and onednn_calls(f, x[:-1], w) == 0
  with jax.set_mesh(mesh()):
    assert onednn_calls(f, x[:-1], w) == 3
    assert onednn_calls(f, x, w) == 0  # the batch does not split over the devices
    with onednn.off():  # a trace-time switch: for functions traced under it
      fresh = jax.grad(lambda x, w: loss(x, w, 1, 'SAME', True), argnums=(0, 1))
      assert onednn_calls(fresh, x[:-1], w) == 0


@pytest.mark.parametrize('transpose_a', [False, True])
@pytest.mark.parametrize('transpose_b', [False, True])
def test_a_batched_matmul_and_its_derivatives_are_xlas_computed_per_device(transpose_a,
                                                                         transpose_b):
  """op(a) op(b) for each example, its gradients and a second derivative, against XLA's
  einsum; split over the devices, the examples stay where they are."""
  n, rows, inner, cols = 2 * jax.device_count(), 5, 7, 3
  ka, kb = jax.random.split(jax.random.key(3))
  a = jax.random.normal(ka, (n, inner, rows) if transpose_a else (n, rows, inner))
  b = jax.random.normal(kb, (n, cols, inner) if transpose_b else (n, inner, cols))
  spec = f"n{'ki' if transpose_a else 'ik'},n{'jk' if transpose_b else 'kj'}->nij"

  def product(a, b, routed):
    return (onednn.matmul(a, b, transpose_a, transpose_b) if routed
            else jnp.einsum(spec, a, b))

  def loss(a, b, routed):  # a gradient of a gradient: the backward's products differentiated
    g = jax.grad(lambda a: jnp.sum(jnp.sin(product(a, b, routed))))(a)
    return jnp.sum(jnp.sin(product(a, b, routed))) + jnp.sum(g * g)
  m = mesh()
  with jax.set_mesh(m):
    a, b = (jax.device_put(t, NamedSharding(m, P(sharding.MESH_AXES))) for t in (a, b))
    got = jax.jit(lambda a, b: product(a, b, True))(a, b)
    assert got.shape == (n, rows, cols) and got.sharding.spec == P(sharding.MESH_AXES)
    text = jax.jit(lambda a, b: product(a, b, True)).lower(a, b).compile().as_text()
    assert 'jaxgen_onednn_matmul' in text and 'all-gather' not in text
    grads = jax.jit(jax.grad(lambda a, b: loss(a, b, True), argnums=(0, 1)))(a, b)
    want = jax.jit(jax.grad(lambda a, b: loss(a, b, False), argnums=(0, 1)))(a, b)
  np.testing.assert_allclose(got, jnp.einsum(spec, a, b), rtol=1e-5, atol=1e-5)
  for g, w in zip(grads, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  # bfloat16, or no mesh known on several devices: XLA's product.
  half = onednn.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), transpose_a, transpose_b)
  assert half.dtype == jnp.bfloat16
  assert 'jaxgen_onednn' not in jax.jit(
      lambda a, b: onednn.matmul(a, b, transpose_a, transpose_b)).lower(a[1:], b[1:]).as_text()
