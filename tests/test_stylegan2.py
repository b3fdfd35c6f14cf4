"""StyleGAN2's pieces against closed forms and references, and a tiny run that resumes
exactly with path-length regularisation and style mixing on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_run_resumes_exactly
from jaxgen import fir
from jaxgen.models import conv
from jaxgen.models import stylegan2 as sg
from jaxgen.models.functional import FunctionalModel
from jaxgen.objectives import gan


def test_demodulated_conv_has_unit_variance_for_unit_variance_inputs_and_weights():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 12, 12, 32)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(3, 3, 32, 48)), jnp.float32)
  styles = jnp.asarray(rng.uniform(0.2, 3.0, size=(16, 32)), jnp.float32)  # any modulation
  out = sg.modulated_conv2d(x, weight, styles, demodulate=True)
  interior = np.asarray(out[:, 1:-1, 1:-1])  # 'SAME' borders see fewer inputs
  assert abs(interior.var() - 1.0) < 0.05, interior.var()
  # Each example's output channel has unit-norm effective weights: the variance per
  # example is 1 whatever its styles are.
  per_example = interior.reshape(16, -1).var(axis=1)
  np.testing.assert_allclose(per_example, 1.0, atol=0.12)
  # Without demodulation the styles' scale passes through.
  raw = sg.modulated_conv2d(x, weight, styles * 0 + 2.0, demodulate=False)
  assert np.asarray(raw[:, 1:-1, 1:-1]).var() > 100


def test_modulated_conv_equals_the_grouped_convolution_of_per_example_weights():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 6, 6, 4)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  styles = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  got = sg.modulated_conv2d(x, weight, styles, demodulate=True)
  for b in range(3):  # StyleGAN2's formulation: w' = s w, d = rsqrt(sum w'^2 + 1e-8)
    w = weight * styles[b][None, None, :, None]
    w = w * jax.lax.rsqrt(jnp.sum(w**2, axis=(0, 1, 2)) + 1e-8)
    np.testing.assert_allclose(got[b], sg.conv2d(x[b:b + 1], w)[0], rtol=1e-4, atol=1e-5)


def test_fir_resampling_keeps_constants_and_sizes():
  ones = jnp.ones((1, 8, 8, 2))
  up = fir.upsample2d(ones)
  assert up.shape == (1, 16, 16, 2)
  np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1.0, rtol=1e-6)  # DC gain 1 away from borders
  down = sg.Conv(2, 2, 3, nnx.Rngs(0), down=True, activation='linear')(ones)
  assert down.shape == (1, 4, 4, 2)
  skip = fir.upfirdn2d(ones, down=2, pad=(1, 1))
  assert skip.shape == (1, 4, 4, 2)
  np.testing.assert_allclose(skip[:, 1:-1, 1:-1], 1.0, rtol=1e-6)


@pytest.mark.parametrize('taps,up,down,pad,flip', [
    (fir.BINOMIAL, 2, 1, (2, 1), True), (fir.BINOMIAL, 1, 2, (1, 1), True),
    (fir.SYM6, 2, 1, (6, 5), True), (fir.SYM6, 1, 2, (-1, -1), False)])
def test_upfirdn2d_matches_the_depthwise_convolution_reference(taps, up, down, pad, flip):
  """The matrix form against upfirdn2d_ref's recipe: zero insertion, pad/crop, a
  depthwise convolution with the (flipped) 2-D filter, subsampling."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 16, 18, 3)), jnp.float32)
  gain = up * up
  kernel = np.outer(taps, taps) / np.sum(taps)**2 * gain
  kernel = kernel[::-1, ::-1] if flip else kernel
  ref = x
  if up > 1:
    ref = jnp.zeros((2, 16 * up, 18 * up, 3)).at[:, ::up, ::up].set(x)
  ref = jax.lax.pad(ref, 0.0, ((0, 0, 0), (*pad, 0), (*pad, 0), (0, 0, 0)))
  ref = jax.lax.conv_general_dilated(
      ref, jnp.tile(jnp.asarray(kernel.copy(), jnp.float32)[:, :, None, None], (1, 1, 1, 3)),
      (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=3)[:, ::down, ::down]
  got = fir.upfirdn2d(x, taps, up=up, down=down, pad=pad, gain=gain, flip=flip)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride,padding,k', [(1, ((1, 1), (1, 1)), 3), (2, ((0, 0), (0, 0)), 3),
                                              (1, ((0, 0), (0, 0)), 1), (2, ((1, 1), (1, 1)), 3)])
def test_matmul_conv_gradients_equal_xla_to_second_order(stride, padding, k):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float32)

  def loss(conv_fn):
    return lambda x, w: jnp.sum(jnp.sin(conv_fn(x, w, stride, padding)))

  def xla(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours, ref = loss(conv.matmul_conv2d), loss(xla)
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-6)
  for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  def r1_like(fn):  # the gradient, with respect to w, of a squared input gradient
    return jax.grad(lambda w: jnp.sum(jax.grad(fn)(x, w) ** 2))(w)
  np.testing.assert_allclose(r1_like(ours), r1_like(ref), rtol=1e-4, atol=1e-3)
  # conv2d switches to it only while tracing under matmul_gradients().
  with conv.matmul_gradients():
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(conv.conv2d), 1))(x, w))
  assert 'custom_vjp' in jaxpr
  assert 'custom_vjp' not in str(jax.make_jaxpr(jax.grad(loss(conv.conv2d), 1))(x, w))


def test_minibatch_stddev_against_numpy():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(8, 4, 4, 6)).astype(np.float32)
  out = np.asarray(sg.minibatch_stddev(jnp.asarray(x), group_size=4, num_channels=2))
  assert out.shape == (8, 4, 4, 8)
  np.testing.assert_array_equal(out[..., :6], x)
  groups = x.reshape(4, 2, 4, 4, 2, 3)  # example n belongs with n + 2, n + 4, n + 6
  expected = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=(1, 2, 4))  # [2, 2]
  for n in range(8):
    np.testing.assert_allclose(out[n, 0, 0, 6:], expected[n % 2], rtol=1e-5)


def _generator():
  return FunctionalModel(lambda rngs: sg.Generator(
      image_size=16, channels=1, z_dim=8, w_dim=8, mapping_layers=2, mapping_lr_multiplier=0.01,
      channel_base=64, channel_max=8, num_classes=0, rngs=rngs))


def test_style_mixing_changes_only_the_layers_after_the_crossover():
  gen = _generator()
  params = gen.init(jax.random.key(0))
  num_ws = gen.attribute('num_ws')
  assert num_ws == 6  # 4, 8, 16: two styles per resolution
  z = jax.random.normal(jax.random.key(1), (2, 8))
  ws_a = gen.apply(params, z[:1], method='mapping')
  ws_b = gen.apply(params, z[1:], method='mapping')
  probe = jax.random.normal(jax.random.key(2), (1, 16, 16, 1))
  for cutoff in (1, 3, 5):
    def image_of_b(ws_b, cutoff=cutoff):
      mixed = gan.mix_styles(ws_a, ws_b, jnp.asarray([cutoff]))
      return jnp.sum(gen.apply(params, mixed, jax.random.key(3), method='synthesis') * probe)
    grad = np.asarray(jax.grad(image_of_b)(ws_b))[0]  # [num_ws, w_dim]
    assert np.all(grad[:cutoff] == 0), cutoff  # layers before the crossover: A's alone
    assert np.all(np.abs(grad[cutoff:]).sum(axis=-1) > 0), cutoff


def test_noise_inputs_start_silent_and_the_mapping_is_broadcast():
  gen = _generator()
  params = gen.init(jax.random.key(0))
  ws = gen.apply(params, jax.random.normal(jax.random.key(1), (3, 8)), method='mapping')
  assert ws.shape == (3, 6, 8) and bool(jnp.all(ws == ws[:, :1]))
  # Noise strengths initialise to 0: the noise key does not change the first images.
  a = gen.apply(params, ws, jax.random.key(5), method='synthesis')
  b = gen.apply(params, ws, jax.random.key(6), method='synthesis')
  np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_stylegan2_tiny_run_resumes_exactly(tmp_path):
  # PL regularisation, style mixing (0.9), R1, EMA, w_avg and ADA's p all move the state.
  _, state = tiny_run_resumes_exactly('stylegan2_fashion_mnist', tmp_path)
  assert float(state['gan']['pl_mean']) > 0
  assert 0 < float(state['gan']['aug_p']) != 0.2  # moved 3 times by 0.064

  # The style-mixing figure: sources B along the top, A down the side, one grid per range.
  from PIL import Image

  from jaxgen import api
  written, step = api.style_mixing(str(tmp_path / 'b'), num_rows=2, num_columns=3)
  assert step == 6 and [p.rsplit('_', 1)[1] for p in written] == [
      'coarse.png', 'middle.png', 'fine.png']
  grids = [np.asarray(Image.open(p)) for p in written]
  assert all(g.shape == (3 * 34 + 2, 4 * 34 + 2) for g in grids)
  # Every grid shows the same sources; its cells differ from A where B's styles came in.
  for g in grids[1:]:
    np.testing.assert_array_equal(g[:, :36], grids[0][:, :36])
    np.testing.assert_array_equal(g[:36], grids[0][:36])
  assert float(jnp.abs(state['gan']['w_avg']).sum()) > 0
