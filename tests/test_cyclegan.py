"""CycleGAN: the image history pool against pytorch-CycleGAN's algorithm, a tiny run that
resumes exactly with its pools in the state, two-way grids and jaxgen-translate b2a."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from conftest import tiny_run_resumes_exactly, untrained_classifier
from jaxgen import build, inference, translate
from jaxgen.data import pipeline
from jaxgen.eval import evaluate
from jaxgen.models import cyclegan as cyclegan_model
from jaxgen.objectives import cyclegan


def _count(factory) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(
      nnx.state(nnx.eval_shape(factory), nnx.Param)))


def _reference_pool(pool, count, images, key):
  """ImagePool.query as pytorch-CycleGAN writes it, in numpy, with the same random draws."""
  pool, out = [np.asarray(x) for x in pool], []
  size = len(pool)
  for image, k in zip(np.asarray(images), jax.random.split(key, len(images))):
    swap_key, index_key = jax.random.split(k)
    if count < size:
      pool[count] = image
      count += 1
      out.append(image)
    elif float(jax.random.uniform(swap_key)) > 0.5:
      slot = int(jax.random.randint(index_key, (), 0, size))
      out.append(pool[slot].copy())
      pool[slot] = image
    else:
      out.append(image)
  return np.stack(out), np.stack(pool), count


def test_image_pool_fills_then_swaps_like_pytorch_cyclegans():
  pool = jnp.zeros((5, 2, 2, 1))
  count = jnp.zeros((), jnp.int32)
  ref_pool, ref_count = np.zeros((5, 2, 2, 1)), 0
  query = jax.jit(cyclegan.pool_query)
  swapped = 0
  for step in range(6):
    images = jnp.full((3, 2, 2, 1), float(step)) + jnp.arange(3.0)[:, None, None, None] / 10
    key = jax.random.key(step)
    out, pool, count = query(pool, count, images, key)
    ref_out, ref_pool, ref_count = _reference_pool(ref_pool, ref_count, images, key)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(pool, ref_pool)
    assert int(count) == ref_count == min(3 * (step + 1), 5)
    swapped += int(np.sum(np.asarray(out) != np.asarray(images)) > 0)
  assert swapped > 0  # once full, some queries return older images
  empty = jnp.zeros((0, 2, 2, 1))
  out, _, _ = cyclegan.pool_query(empty, count, images, key)
  np.testing.assert_array_equal(out, images)


class _Affine:
  """A stand-in generator G(x) = scale * x + shift, whose inverse is known."""

  def init(self, rng):
    del rng
    return {'scale': jnp.ones(()), 'shift': jnp.zeros(())}

  def apply(self, params, x):
    return params['scale'] * x + params['shift']


def test_cycle_and_identity_losses_vanish_where_they_should(monkeypatch):
  from jaxgen import models

  real_build = models.build
  monkeypatch.setattr(cyclegan.models, 'build', lambda cfg, shape: (
      _Affine() if cfg.name == 'cyclegan_resnet' else real_build(cfg, shape)))
  from conftest import load_config
  config = load_config('tiny', 'cyclegan_sneaker2boot')
  objective = cyclegan.make_objective(config)
  state = objective.init(jax.random.key(0))
  keys = jax.random.split(jax.random.key(1))
  batch = {'source': jax.random.uniform(keys[0], (4, 28, 28, 1), minval=-1, maxval=1),
           'target': jax.random.uniform(keys[1], (4, 28, 28, 1), minval=-1, maxval=1)}

  def metrics_with(ab, ba):
    params = {**state['params'], 'g': {'ab': ab, 'ba': ba}}
    return objective.train_step({**state, 'params': params}, batch, jax.random.key(2))[1]

  # Identity generators: no identity loss (and no cycle loss).
  one = {'scale': jnp.float32(1), 'shift': jnp.float32(0)}
  m = metrics_with(one, one)
  for name in ('identity_a', 'identity_b', 'cycle_a', 'cycle_b'):
    assert float(m[name]) == 0, name
  # G_ba inverts G_ab: no cycle loss either way, but G_ab(b) != b: an identity loss.
  m = metrics_with({'scale': jnp.float32(2), 'shift': jnp.float32(0.5)},
                   {'scale': jnp.float32(0.5), 'shift': jnp.float32(-0.25)})
  assert float(m['cycle_a']) < 1e-7 and float(m['cycle_b']) < 1e-7
  assert float(m['identity_a']) > 0.1 and float(m['identity_b']) > 0.1
  np.testing.assert_allclose(  # |G_ab(b) - b| = |b + 0.5|
      m['identity_b'], jnp.mean(jnp.abs(batch['target'] + 0.5)), rtol=1e-6)


def test_a_tiny_cyclegan_run_resumes_exactly_and_translates_both_ways(tmp_path):
  # 160 fake images: 16 sneakers and 16 boots, two batches of 8 per domain and epoch.
  config, state = tiny_run_resumes_exactly(
      'cyclegan_sneaker2boot', tmp_path, num_train=160, global_batch_size=8,
      num_sample_images=8, **{'data.eval_split': 'trainA', 'data.target_eval_split': 'trainB',
                              'cyclegan.pool_size': 16})
  pools = state['cyclegan']
  assert int(pools['count_a']) == int(pools['count_b']) == 16  # full after 2 of 6 steps
  assert float(jnp.abs(pools['pool_b']).sum()) > 0
  assert set(state['params']['g']) == {'ab', 'ba'} and set(state['params']['d']) == {'a', 'b'}
  grid = np.asarray(Image.open(tmp_path / 'b' / 'samples' / 'translations_step_0000006.png'))
  assert grid.shape[0] > 4 * 28  # four rows: A, A->B, B, B->A
  # jaxgen-eval: both ways over the 16 + 16 evaluation images.
  clf = untrained_classifier(tmp_path / 'classifier')
  done = evaluate.evaluate_workdir(str(tmp_path / 'b'), evaluate.Options(
      batch_size=8, classifier_dir=clf))
  assert done['best']['metric'] == 'a2b/fd_fmnist'
  (record,) = [json.loads(line) for line in open(tmp_path / 'b' / 'eval' / 'metrics.jsonl')]
  s, restored, _, _ = inference.restore_for_sampling(str(tmp_path / 'b'))
  for way, back, src in (('a2b', 'b2a', 'trainA'), ('b2a', 'a2b', 'trainB')):
    assert record[f'{way}/images'] == 16
    # The evaluation split is the training split here: the real-data floor is 0.
    assert abs(record[f'{way}/fd_fmnist_floor']) < 1e-3 < record[f'{way}/fd_fmnist']
    assert 0 <= record[f'{way}/translation_accuracy'] <= 1
    assert 0 < record[f'{way}/target_class_rate'] <= 1
    sources = pipeline.load_images(s.config.data if src == 'trainA' else
                                   pipeline.target_config(s.config.data), src, 16)
    there = build.jit_translate(s, 16, way)(restored, sources, jax.random.key(0))
    again = build.jit_translate(s, 16, back)(restored, there / 127.5 - 1.0, jax.random.key(0))
    np.testing.assert_allclose(record[f'{way}/cycle_l1'],
                               np.mean(np.abs(again / 127.5 - 1.0 - sources)), rtol=1e-5)
  grid = np.asarray(Image.open(tmp_path / 'b' / 'eval' / 'translations_0000006.png'))
  assert grid.shape[0] >= 4 * 28  # A, A->B, B, B->A

  inputs = tmp_path / 'boots'
  inputs.mkdir()
  boot = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
  Image.fromarray(boot).save(inputs / 'boot.png')
  done = translate.translate_folder(str(tmp_path / 'b'), str(inputs), str(tmp_path / 'out'),
                                    direction='b2a', batch_size=8)
  assert [p.rsplit('/', 1)[1] for p in done['written']] == ['boot.png']
  s, restored, _, _ = inference.restore_for_sampling(str(tmp_path / 'b'))
  batch = np.stack([boot / 127.5 - 1.0] * 8)[..., None].astype(np.float32)
  expected = build.jit_translate(s, 8, 'b2a')(restored, batch, jax.random.key(0))[0, ..., 0]
  got = np.asarray(Image.open(tmp_path / 'out' / 'boot.png')).astype(int)
  assert np.abs(got - expected.astype(int)).max() <= 1


def test_cyclegan_resnet_generator_has_cyclegans_parameter_count_and_keeps_the_size():
  # pytorch's resnet_9blocks (ngf 64, InstanceNorm without affine, every conv with a bias):
  # 11,378,179 parameters (CycleGAN prints 11.378 M). Ours drops the 5,248 bias values that a
  # norm follows and gives each norm an affine scale and shift (2 x 5,248).
  count = _count(lambda: cyclegan_model.ResnetGenerator(
      image_size=256, in_channels=3, out_channels=3, ch=64, num_blocks=9, norm='instance',
      rngs=nnx.Rngs(0)))
  assert count == 11_378_179 + 5_248
  net = cyclegan_model.ResnetGenerator(image_size=28, in_channels=1, out_channels=1, ch=4,
                                 num_blocks=2, norm='instance', rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  y = net(x)
  assert y.shape == (2, 28, 28, 1) and float(jnp.abs(y).max()) <= 1
  np.testing.assert_allclose(cyclegan_model.reflect_pad(x, 3)[:, 0, 3:-3], x[:, 3])  # reflection
  with pytest.raises(ValueError, match='divide by 4'):
    cyclegan_model.ResnetGenerator(image_size=30, in_channels=1, out_channels=1, ch=4, num_blocks=1,
                             norm='instance', rngs=nnx.Rngs(0))
