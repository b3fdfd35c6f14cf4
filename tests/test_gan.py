"""The GAN family: regularisers against closed forms, lazy-regularisation scaling,
augmentation, truncation, ADA's p, shardings, and a tiny run that resumes exactly."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config_with, tiny_run_resumes_exactly
from jaxgen import build, optim
from jaxgen import state as state_lib
from jaxgen.models import dcgan
from jaxgen.objectives import gan


def _config(**overrides):
  return tiny_config_with('dcgan_fashion_mnist', **overrides)


def test_r1_of_a_linear_discriminator_is_its_weight_norm():
  rng = np.random.default_rng(0)
  weights = jnp.asarray(rng.normal(size=(6, 6, 2)), jnp.float32)
  real = jnp.asarray(rng.normal(size=(3, 6, 6, 2)), jnp.float32)

  def linear_d(x):
    return jnp.sum(x * weights, axis=(1, 2, 3)) + 0.3

  penalty, sq_norm = gan.r1_penalty(linear_d, real, gamma=10.0)
  expected = float(jnp.sum(weights**2))
  np.testing.assert_allclose(sq_norm, expected, rtol=1e-5)
  np.testing.assert_allclose(penalty, 5.0 * expected, rtol=1e-5)


def test_input_gradient_norm_matches_finite_differences():
  model = dcgan.Discriminator(image_size=8, channels=1, ch=4, norm='none', num_classes=0,
                              cmap_dim=0, rngs=__import__('flax').nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8, 1)), jnp.float32)
  got = float(gan.input_gradient_sq_norm(model, x)[0])
  h, flat = 1e-2, np.asarray(x).reshape(-1)
  numeric = np.zeros_like(flat)
  for i in range(flat.size):
    step = np.zeros_like(flat)
    step[i] = h
    up, down = (float(model(jnp.asarray((flat + s).reshape(x.shape)))[0]) for s in (step, -step))
    numeric[i] = (up - down) / (2 * h)
  np.testing.assert_allclose(got, np.sum(numeric**2), rtol=2e-2)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
  direction = jnp.zeros((4, 4, 1)).at[0, 0, 0].set(1.0)
  real, fake = jnp.ones((2, 4, 4, 1)), jnp.zeros((2, 4, 4, 1))
  penalty = gan.gradient_penalty(lambda x: jnp.sum(x * direction, axis=(1, 2, 3)), real, fake,
                                 jax.random.key(0))
  assert abs(float(penalty)) < 1e-6
  steep = gan.gradient_penalty(lambda x: 3.0 * jnp.sum(x * direction, axis=(1, 2, 3)), real,
                               fake, jax.random.key(0))
  np.testing.assert_allclose(steep, 4.0, rtol=1e-5)  # (3 - 1)^2


def test_loss_closed_forms():
  zeros, big = jnp.zeros(4), jnp.full(4, 50.0)
  np.testing.assert_allclose(gan.d_loss('logistic', zeros, zeros), 2 * np.log(2), rtol=1e-6)
  assert float(gan.d_loss('logistic', big, -big)) < 1e-6
  np.testing.assert_allclose(gan.g_loss('logistic', zeros), np.log(2), rtol=1e-6)
  assert float(gan.d_loss('hinge', jnp.ones(4), -jnp.ones(4))) == 0.0
  assert float(gan.d_loss('wgan_gp', jnp.full(4, 2.0), jnp.full(4, -1.0))) == -3.0
  assert float(gan.g_loss('hinge', jnp.full(4, 2.0))) == -2.0


def test_lazy_regularisation_scales_learning_rate_and_betas():
  cfg = ml_collections.ConfigDict(dict(learning_rate=0.0025, warmup_steps=0, decay='constant',
                                       end_lr_ratio=1.0, b1=0.5, b2=0.99, eps=1e-8,
                                       weight_decay=0.0, grad_clip=0.0))
  c = 16 / 17
  scaled = optim.lazy_regularised(cfg, 16)
  np.testing.assert_allclose([scaled.learning_rate, scaled.b1, scaled.b2],
                             [0.0025 * c, 0.5**c, 0.99**c], rtol=1e-12)
  assert optim.lazy_regularised(cfg, 0).to_dict() == cfg.to_dict()  # no regulariser, c = 1
  # The optimizer built from it uses them: Adam's first moments after one update.
  opt = optim.build_optimizer(scaled, 100)
  params, grads = {'w': jnp.ones(3)}, {'w': jnp.asarray([1.0, -2.0, 4.0])}
  _, opt_state, lr = opt.update(grads, opt.init(params), params, jnp.asarray(0))
  adam = opt_state[0][0]
  np.testing.assert_allclose(adam.mu['w'], (1 - 0.5**c) * grads['w'], rtol=1e-6)
  np.testing.assert_allclose(adam.nu['w'], (1 - 0.99**c) * grads['w']**2, rtol=1e-5)
  np.testing.assert_allclose(lr, 0.0025 * c, rtol=1e-6)


def test_ema_half_life_in_images():
  # Half-life 10 kimg at batch 64: decay 0.5 ** (64 / 10000); ramp-up caps it early.
  beta = state_lib.ema_decay_images(jnp.asarray(10**6), 64, 10.0, 0.05)
  np.testing.assert_allclose(beta, 0.5 ** (64 / 10_000), rtol=1e-6)
  early = state_lib.ema_decay_images(jnp.asarray(100), 64, 10.0, 0.05)  # 6,400 images seen
  np.testing.assert_allclose(early, 0.5 ** (64 / 320), rtol=1e-6)
  assert float(state_lib.ema_decay_images(jnp.asarray(0), 64, 10.0, 0.05)) == 0.0


def test_truncation_and_style_mixing():
  ws = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6, 4)), jnp.float32)
  w_avg = jnp.asarray([1.0, -1.0, 0.5, 0.0])
  np.testing.assert_allclose(gan.truncate(ws, w_avg, 0.0, None), jnp.broadcast_to(w_avg, ws.shape))
  np.testing.assert_allclose(gan.truncate(ws, w_avg, 1.0, None), ws, rtol=1e-6)
  cut = gan.truncate(ws, w_avg, 0.0, 2)
  np.testing.assert_allclose(cut[:, :2], jnp.broadcast_to(w_avg, (3, 2, 4)))
  np.testing.assert_array_equal(cut[:, 2:], ws[:, 2:])
  other = ws + 100.0
  mixed = gan.mix_styles(ws, other, jnp.asarray([1, 3, 6]))
  for i, cutoff in enumerate([1, 3, 6]):
    np.testing.assert_array_equal(mixed[i, :cutoff], ws[i, :cutoff])
    np.testing.assert_array_equal(mixed[i, cutoff:], other[i, cutoff:])


def test_labels_are_checked_against_the_model():
  from jaxgen.objectives import class_labels
  assert class_labels(None, 4, 0) is None
  with pytest.raises(ValueError, match='not class-conditional'):
    class_labels('3', 4, 0)
  np.testing.assert_array_equal(class_labels('1,2', 5, 10), [1, 2, 1, 2, 1])
  with pytest.raises(ValueError, match=r'give class indices in \[0, 10\)'):
    class_labels('12', 4, 10)


@pytest.mark.parametrize('k,padding', [(4, 'SAME'), (3, ((1, 2), (1, 2)))])
def test_dcgan_upconv_is_the_transposed_convolution_of_nnx(k, padding):
  from flax import nnx
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 5, 6)), jnp.float32)
  ref = nnx.ConvTranspose(6, 4, kernel_size=(k, k), strides=(2, 2), padding=padding,
                          bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
  up = dcgan.UpConv(6, 4, nnx.Rngs(1), kernel_size=k)
  up.kernel[...], up.bias[...] = ref.kernel[...], ref.bias[...]
  np.testing.assert_allclose(up(x), ref(x), rtol=1e-5, atol=1e-5)
  assert up(x).shape == (2, 14, 10, 4)
  grads = [jax.grad(lambda x, m=m: jnp.sum(jnp.sin(m(x))))(x) for m in (up, ref)]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_dcgan_minibatch_stddev_lets_d_see_the_variety_of_its_group():
  from flax import nnx
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 28, 28, 1)), jnp.float32)
  changed = x.at[4].multiply(3.0)  # example 4 shares a group (size 2: 0 and 4) with example 0
  for group, moves in ((0, False), (2, True)):
    d = dcgan.Discriminator(image_size=28, channels=1, ch=4, norm='none', num_classes=0,
                            cmap_dim=0, mbstd_group_size=group, rngs=nnx.Rngs(0))
    before, after = d(x), d(changed)
    assert before.shape == (8,)
    np.testing.assert_array_equal(before[1:4], after[1:4])  # other groups never see it
    assert bool(before[0] != after[0]) == moves


def test_dcgan_discriminator_takes_matmul_gradients_in_lazy_branches():
  from flax import nnx

  from jaxgen.models import conv
  d = dcgan.Discriminator(image_size=28, channels=1, ch=4, norm='none', num_classes=0,
                          cmap_dim=0, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(d)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 28, 28, 1)), jnp.float32)

  def r1_grads(p):  # R1's gradient with respect to D's weights: a second derivative
    return jax.grad(lambda p: gan.r1_penalty(lambda x: nnx.merge(graphdef, p)(x), x, 1.0)[0])(p)

  xla = r1_grads(params)
  assert 'matmul_conv2d' not in str(jax.make_jaxpr(r1_grads)(params))
  with conv.matmul_gradients():  # (a new function: traces are cached without the switch)
    matmul_jaxpr = str(jax.make_jaxpr(lambda p: r1_grads(p))(params))
    matmul = r1_grads(params)
  assert 'matmul_conv2d' in matmul_jaxpr
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), xla, matmul)


def test_style_ranges_follow_the_stylegan_paper():
  # 1024 px (18 w): coarse 4-8 px, middle 16-32 px, fine 64-1024 px.
  assert gan.style_ranges(18) == {'coarse': (0, 4), 'middle': (4, 8), 'fine': (8, 18)}
  assert gan.style_ranges(8) == {'coarse': (0, 4), 'middle': (4, 6), 'fine': (6, 8)}  # 32 px
  assert gan.style_ranges(1) == {}  # DCGAN: one w


def test_ada_p_rises_when_d_is_overconfident_and_falls_when_not():
  gcfg = ml_collections.ConfigDict(dict(ada_interval=4, ada_kimg=1.0, ada_target=0.6))
  start = {'aug_p': jnp.asarray(0.5), 'ada_sign_sum': jnp.asarray(0.0),
           'ada_count': jnp.asarray(0.0)}

  def run(sign, steps=8):
    state = start
    for step in range(steps):
      state = gan.ada_adjust(state, jnp.full(16, sign), jnp.asarray(step), gcfg, 16, adapt=True)
    return state
  speed = 16 * 4 / 1000
  np.testing.assert_allclose(run(1.0)['aug_p'], 0.5 + 2 * speed, rtol=1e-6)  # r_t = 1 > 0.6
  np.testing.assert_allclose(run(-1.0)['aug_p'], 0.5 - 2 * speed, rtol=1e-6)
  # Between adjustments, the signs wait in the state (a resume continues the same sums).
  partial = run(1.0, steps=2)
  assert float(partial['aug_p']) == 0.5 and float(partial['ada_count']) == 32


def test_both_optimizer_states_are_sharded_like_their_networks():
  config = _config(**{'mesh.data': 1, 'mesh.fsdp': 8, 'sharding.fsdp_min_size': 64})
  s = build.setup(config)
  flat_params = dict(jax.tree_util.tree_flatten_with_path(s.state_shardings['params'])[0])
  split = {}
  for network in ('g', 'd'):
    adam = s.state_shardings['opt_state'][network][0]  # chain(adamw(scale_by_adam, ...))
    for moment in (adam[0].mu, adam[0].nu):
      for path, leaf_sharding in jax.tree_util.tree_flatten_with_path(moment)[0]:
        assert leaf_sharding.spec == flat_params[(jax.tree_util.DictKey(network), *path)].spec
        split[network] = split.get(network, 0) + ('fsdp' in leaf_sharding.spec)
  assert split['g'] > 0 and split['d'] > 0
  ema = s.state_shardings['ema_params']
  for path, leaf_sharding in jax.tree_util.tree_flatten_with_path(ema)[0]:
    assert leaf_sharding.spec == flat_params[(jax.tree_util.DictKey('g'), *path)].spec


@pytest.mark.slow
def test_gan_trains_logs_regularisers_when_computed_resumes_exactly_and_samples(tmp_path):
  # Exact: networks, optimizers, EMA, w_avg, pl_mean, aug_p and its sign statistics.
  _, straight = tiny_run_resumes_exactly('dcgan_fashion_mnist', tmp_path)
  assert float(jnp.abs(straight['gan']['w_avg']).sum()) > 0
  assert float(straight['gan']['pl_mean']) > 0

  lines = [json.loads(line) for line in (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()]
  assert [line['step'] for line in lines] == [2, 4, 6]
  # R1 and PL run on steps 0 and 4 (interval 4): in the lines of steps 1-2 and 5-6 only.
  assert ['r1' in line for line in lines] == [True, False, True]
  assert ['pl' in line for line in lines] == [True, False, True]
  for line in lines:
    for key in ('d_loss', 'g_loss', 'logits_real', 'logits_fake', 'd_grad_norm', 'g_grad_norm',
                'r_t', 'aug_p'):
      assert np.isfinite(line[key]), key
  assert (tmp_path / 'b' / 'samples' / 'step_0000006.png').exists()

  from jaxgen import api
  result = api.sample(str(tmp_path / 'b'), num_images=8, seed=0, options={'truncation_psi': '0'})
  images, step = result.images, result.step
  assert step == 6 and images.shape == (8, 28, 28, 1) and images.dtype == np.uint8
  # psi = 0 maps every latent to w_avg: a DCGAN (no noise inputs) draws one image 8 times.
  assert all(np.array_equal(images[0], image) for image in images[1:])
  varied = api.sample(str(tmp_path / 'b'), num_images=8, seed=0).images
  assert not all(np.array_equal(varied[0], image) for image in varied[1:])

  # A truncation sweep: one column per psi, the same latents in each row.
  from PIL import Image

  from jaxgen import api
  path, _ = api.sweep(str(tmp_path / 'b'), 'truncation_psi', ['1', '0.5', '0'], num_images=4)
  grid = np.asarray(Image.open(path))
  assert grid.shape == (4 * 30 + 2, 3 * 30 + 2)
  cells = [[grid[2 + 30 * r:30 * (r + 1), 2 + 30 * c:30 * (c + 1)] for c in range(3)]
           for r in range(4)]
  assert np.array_equal(cells[0][0], varied[0][..., 0])  # psi = 1: the plain samples
  assert all(np.array_equal(cells[0][2], row[2]) for row in cells)  # psi = 0: all w_avg
  # Walks in w between pairs of prior latents.
  written, _ = api.interpolate(str(tmp_path / 'b'), num_pairs=2, num_steps=5)
  assert [os.path.basename(p) for p in written] == ['interpolate_0000006_linear.png']
  assert np.asarray(Image.open(written[0])).shape == (2 * 30 + 2, 5 * 30 + 2)
  with pytest.raises(ValueError, match='--style_mixing needs a model with per-layer styles'):
    api.style_mixing(str(tmp_path / 'b'))
