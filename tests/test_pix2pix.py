"""Pix2Pix: the U-Net and PatchGAN against pytorch-CycleGAN-and-pix2pix's sizes, the losses
in closed form, the G update against a direct gradient, a tiny run that resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import load_config, run_cli, tiny_run_resumes_exactly, untrained_classifier
from jaxgen import build, inference, models
from jaxgen.eval import evaluate
from jaxgen.models import patchgan, pix2pix
from jaxgen.objectives import pix2pix as pix2pix_objective


def _count(factory) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(
      nnx.state(nnx.eval_shape(factory), nnx.Param)))


def test_unet_256_and_the_70x70_patchgan_have_pix2pix_parameter_counts():
  # pytorch's unet_256 with BatchNorm (its convs without bias): 54,413,955 parameters
  # (pix2pix prints 54.414 M). Ours has instance norm with the same affine parameters and
  # keeps the bias of the two down convolutions that no norm follows (64 + 512).
  unet = _count(lambda: pix2pix.UNetGenerator(
      image_size=256, in_channels=3, out_channels=3, ch=64, num_downs=8, norm='instance',
      dropout_blocks=3, rngs=nnx.Rngs(0)))
  assert unet == 54_413_955 + 64 + 512
  # The basic 3-layer PatchGAN on (A, B): 2,768,705 in pytorch (2.769 M), the same here.
  assert _count(lambda: patchgan.PatchDiscriminator(
      in_channels=6, ch=64, num_layers=3, norm='instance', rngs=nnx.Rngs(0))) == 2_768_705


def test_the_3_layer_patchgan_sees_70x70_patches():
  # The support of one logit's input gradient (no norm: a norm's statistics would spread it
  # over the whole image). The width does not change the receptive field.
  disc = patchgan.PatchDiscriminator(in_channels=3, ch=4, num_layers=3, norm='none',
                                     rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 96, 96, 3))
  assert disc(x).shape == (1, 10, 10, 1)  # 96 px: 10 x 10 patches
  grad = jax.grad(lambda x: disc(x)[0, 5, 5, 0])(x)
  rows, cols = np.nonzero(np.abs(np.asarray(grad[0])).sum(-1))
  assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_unet_dropout_is_the_noise_and_skips_carry_the_source():
  net = pix2pix.UNetGenerator(image_size=32, in_channels=1, out_channels=1, ch=8, num_downs=5,
                              norm='instance', dropout_blocks=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
  y = net(x)
  assert y.shape == (2, 32, 32, 1) and float(jnp.abs(y).max()) <= 1
  np.testing.assert_array_equal(net(x), y)  # no key: deterministic
  a, b = net(x, jax.random.key(2)), net(x, jax.random.key(3))
  np.testing.assert_array_equal(a, net(x, jax.random.key(2)))
  assert not np.allclose(a, b)
  # The outermost skip: changing one input pixel changes the output there.
  grad = jax.grad(lambda x: net(x)[0, 10, 20, 0])(x)
  assert float(jnp.abs(grad[0, 10, 20, 0])) > 0
  with pytest.raises(ValueError, match='pad Fashion-MNIST to 32'):
    pix2pix.UNetGenerator(image_size=28, in_channels=1, out_channels=1, ch=8, num_downs=5,
                          norm='instance', dropout_blocks=1, rngs=nnx.Rngs(0))


def test_gan_losses_in_closed_form():
  logits = jnp.array([[0.0, 2.0], [-1.0, 0.5]])
  np.testing.assert_allclose(pix2pix_objective.gan_loss('vanilla', logits, True),
                             np.mean(np.log1p(np.exp(-np.asarray(logits)))), rtol=1e-6)
  np.testing.assert_allclose(pix2pix_objective.gan_loss('vanilla', logits, False),
                             np.mean(np.log1p(np.exp(np.asarray(logits)))), rtol=1e-6)
  np.testing.assert_allclose(pix2pix_objective.gan_loss('lsgan', logits, True),
                             np.mean((np.asarray(logits) - 1) ** 2), rtol=1e-6)
  np.testing.assert_allclose(pix2pix_objective.gan_loss('lsgan', logits, False),
                             np.mean(np.asarray(logits) ** 2), rtol=1e-6)


def test_the_generator_gradient_goes_through_the_updated_discriminator():
  """The step pulls G's gradient back through a kept VJP of one forward: it must equal
  differentiating the whole G loss (G forward included) with the updated D."""
  config = load_config('tiny', 'pix2pix_edges2fashion')
  s = build.setup(config)
  objective = s.objective
  state = objective.init(jax.random.key(0))
  rng = jax.random.key(5)
  keys = jax.random.split(jax.random.key(1), 2)
  batch = {'source': jax.random.uniform(keys[0], (16, 32, 32, 1), minval=-1, maxval=1),
           'target': jax.random.uniform(keys[1], (16, 32, 32, 1), minval=-1, maxval=1)}
  new_state, metrics = jax.jit(objective.train_step)(state, batch, rng)
  gen = models.build(config.model, (32, 32, 1))
  disc = models.build(config.discriminator, (32, 32, 2))

  def g_loss(g_params):
    fake = gen.apply(g_params, batch['source'], rng)
    logits = disc.apply(new_state['params']['d'],
                        jnp.concatenate([batch['source'], fake], axis=-1))
    return (pix2pix_objective.gan_loss('vanilla', logits, True) +
            100.0 * jnp.mean(jnp.abs(fake - batch['target'])))

  value, grads = jax.value_and_grad(g_loss)(state['params']['g'])
  np.testing.assert_allclose(metrics['g_loss'], value, rtol=1e-5)
  np.testing.assert_allclose(metrics['g_grad_norm'], float(jnp.sqrt(sum(
      jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)))), rtol=1e-4)
  assert float(metrics['g_l1']) > 0 and float(metrics['d_loss']) > 0


def test_a_tiny_pix2pix_run_resumes_exactly_writes_grids_and_is_evaluated(tmp_path):
  config, state = tiny_run_resumes_exactly('pix2pix_edges2fashion', tmp_path)
  assert int(state['step']) == config.total_steps
  grids = sorted((tmp_path / 'b' / 'samples').glob('translations_step_*.png'))
  assert [g.name for g in grids] == ['translations_step_0000006.png']
  # jaxgen-eval: PSNR/SSIM/L1 of translations over the 16 test pairs, FD-FMNIST and the
  # classifier's class agreement against their targets.
  done = evaluate.evaluate_workdir(str(tmp_path / 'b'), evaluate.Options(
      batch_size=8, classifier_dir=untrained_classifier(tmp_path / 'classifier')))
  assert done['evaluated'] == [6]
  result = done['best']
  assert result['metric'] == 'test/psnr' and np.isfinite(result['value'])
  (record,) = [json.loads(line) for line in open(tmp_path / 'b' / 'eval' / 'metrics.jsonl')]
  assert record['test_images'] == record['a2b/images'] == 16
  assert 0 <= record['a2b/class_match'] <= 1 and record['a2b/fd_fmnist'] > 0
  assert record['a2b/fd_fmnist_floor'] > 0  # 16 train targets against the 16 test targets
  assert 'b2a/images' not in record and 'a2b/cycle_l1' not in record
  _translate_a_folder(tmp_path)


def _translate_a_folder(tmp_path):
  """jaxgen-translate on a user's folder: padded inputs come back at their size, an odd
  size is resized, a broken file is named and skipped, other files are ignored."""
  from PIL import Image

  inputs, outputs = tmp_path / 'in', tmp_path / 'out'
  inputs.mkdir()
  rng = np.random.default_rng(0)
  edges = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(3)]
  for i, image in enumerate(edges):
    Image.fromarray(image).save(inputs / f'edge{i}.png')
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(inputs / 'photo.jpg')
  (inputs / 'broken.png').write_bytes(b'not an image')
  (inputs / 'notes.txt').write_text('ignored')
  done = run_cli('jaxgen.translate', f'--workdir={tmp_path / "b"}', f'--input_dir={inputs}',
                 f'--output_dir={outputs}', '--batch_size=4')
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'skipped broken.png' in done.stdout and 'wrote 4 translations' in done.stdout
  assert sorted(p.name for p in outputs.iterdir()) == ['edge0.png', 'edge1.png', 'edge2.png',
                                                        'photo.png']
  assert np.asarray(Image.open(outputs / 'photo.png')).shape == (32, 32)
  # The first output is the model's translation of the padded input, cropped back to 28.
  s, state, _, _ = inference.restore_for_sampling(str(tmp_path / 'b'))
  padded = np.pad(edges[0] / 127.5 - 1.0, 2, constant_values=-1.0)[None, ..., None]
  batch = np.concatenate([padded] * 4).astype(np.float32)
  expected = build.jit_translate(s, 4)(state, batch, jax.random.fold_in(jax.random.key(0), 0))
  got = np.asarray(Image.open(outputs / 'edge0.png')).astype(int)
  assert got.shape == (28, 28)
  assert np.abs(got - expected[0, 2:30, 2:30, 0].astype(int)).max() <= 1


def test_translation_metrics_in_closed_form():
  config = load_config('tiny', 'pix2pix_edges2fashion')
  objective = build.setup(config).objective
  params = objective.sample_params(objective.init(jax.random.key(0)))
  source = jax.random.uniform(jax.random.key(1), (4, 32, 32, 1), minval=-1, maxval=1)
  rng = jax.random.key(2)
  output = objective.translate(params, source, rng).astype(np.float32) / 127.5 - 1
  same = objective.test_metrics(params, {'source': source, 'target': output}, rng)
  np.testing.assert_allclose(same['ssim'], 1.0, atol=1e-3)  # up to uint8 rounding
  assert float(same['psnr'].min()) > 45
  target = jnp.zeros_like(source)
  metrics = objective.test_metrics(params, {'source': source, 'target': target}, rng)
  exact = models.build(config.model, (32, 32, 1)).apply(params, source, rng)
  mse = np.mean(((np.asarray(exact) + 1) / 2 - 0.5) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(metrics['psnr'], -10 * np.log10(mse), rtol=1e-4)
  np.testing.assert_allclose(metrics['l1'], np.mean(np.abs(exact), axis=(1, 2, 3)), rtol=1e-5)

