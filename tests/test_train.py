"""End-to-end training: overfitting, outputs, real data, mesh changes. (Exact resume after
kill -9 and SIGTERM: test_failures.py.)"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import assert_trees_equal, run_cli, tiny_config_with, tiny_run_resumes_exactly
from jaxgen import api, build, checkpoint, grids, inference, metrics, train
from jaxgen.data import fashion_mnist

FMNIST_FILES = os.path.join(fashion_mnist.DEFAULT_IDX_DIR, 'train-images-idx3-ubyte.gz')


def test_tiny_model_overfits_a_fixed_batch():
  config = tiny_config_with(**{'optimizer.learning_rate': 3e-3, 'optimizer.decay': 'constant',
                      'total_steps': 100, 'model.dropout': 0.0})
  # One device: 100 steps of a tiny model are dispatch-bound on 8 simulated ones (the
  # layouts are tested elsewhere); test_scale_out's fixed-batch tests share this program.
  s = build.setup(config, devices=jax.devices()[:1])
  state = build.init_state(s, jax.random.key(0))
  step = build.jit_train_step(s)
  # Two fixed "images": a bright square and a dark bar.
  images = -np.ones((16, 28, 28, 1), np.float32)
  images[::2, 8:20, 8:20] = 1.0
  images[1::2, :, 12:16] = 0.5
  batch = {'image': jax.device_put(images, s.batch_sharding),
           'label': jax.device_put(np.zeros(16, np.int32), s.batch_sharding)}
  losses = []
  for i in range(45):
    state, m = step(state, batch, jax.random.key(i))
    losses.append(float(m['loss']))
  first, last = np.mean(losses[:10]), np.mean(losses[-20:])
  assert np.isfinite(losses).all()
  assert last < 0.35 * first, (first, last)


def test_end_to_end_on_mock_tfds(tmp_path):
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=64):
    state = train.run(tiny_config_with(), workdir)
  assert int(state['step']) == 6
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '3', '6']
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', 'step_0000006.png')))
  assert grid.shape == (3 * 30 + 2, 3 * 30 + 2) and grid.dtype == np.uint8
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in records] == [2, 4, 6]
  assert all(np.isfinite(r['loss']) and r['images_per_sec'] > 0 for r in records[1:])
  # TensorBoard's own reader sees the scalars and the sample image.
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  acc.Reload()
  assert [e.step for e in acc.Scalars('loss')] == [2, 4, 6]
  assert acc.Scalars('loss')[-1].value == pytest.approx(records[-1]['loss'], rel=1e-6)
  assert [e.step for e in acc.Images('samples')] == [6]

  # A run that crashed before its first checkpoint left metrics.jsonl and events behind:
  # a fresh start in the workdir starts them clean, so each step appears once.
  shutil.rmtree(os.path.join(workdir, 'checkpoints'))
  with tfds.testing.mock_data(num_examples=64):
    train.run(tiny_config_with(), workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in records] == [2, 4, 6]
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  acc.Reload()
  assert [e.step for e in acc.Scalars('loss')] == [2, 4, 6]


def test_sample_grids_use_the_same_noise_at_every_step(tmp_path):
  s = build.setup(tiny_config_with())
  state = build.init_state(s, jax.random.key(0))
  image_grids = grids.Grids(s, str(tmp_path), jax.random.key(7))
  writer = metrics.MetricWriter(str(tmp_path), enabled=False)
  # The same weights at two steps: a grid of the same noise is the same image.
  first, later = (image_grids.write(state, step, writer)[0] for step in (2, 4))
  assert first.name == 'step_0000002.png' and later.name == 'step_0000004.png'
  np.testing.assert_array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(later)))


def test_the_step_window_blocks_on_the_step_max_steps_in_flight_back():
  """The loop's bound on queued steps (config.max_steps_in_flight): after step n is added,
  every step up to n - 2 has been waited for, and nothing newer."""
  waited = []

  class Outputs:  # stands in for a step's device arrays
    def __init__(self, step):
      self.step = step

    def block_until_ready(self):
      waited.append(self.step)
      return self

  window = train.StepWindow(2)
  for step in range(6):
    window.add({'loss': Outputs(step)})
    assert waited == list(range(step - 1)), (step, waited)


@pytest.mark.skipif(not os.path.exists(FMNIST_FILES),
                    reason=f'Fashion-MNIST IDX files not in {fashion_mnist.DEFAULT_IDX_DIR} '
                    '(apt-get install dataset-fashion-mnist)')
def test_end_to_end_on_real_fashion_mnist(tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config_with(**{'data.data_dir': str(tmp_path / 'tfds'), 'total_steps': 4,
                      'sample_every': 0})
  state = train.run(config, workdir)
  assert int(state['step']) == 4
  from jaxgen.data import pipeline

  source = pipeline.load_source(config.data)
  assert len(source) == 60_000 and len(pipeline.load_source(config.data, 'test')) == 10_000
  batch = next(pipeline.make_iterator(
      pipeline.make_dataset(config.data, 16, seed=0), num_threads=1))
  # Real garments: mostly black background (-1) with bright pixels, labels 0..9.
  assert batch['image'].shape == (16, 28, 28, 1)
  assert (batch['image'] == -1).mean() > 0.3 and batch['image'].max() > 0.9
  assert set(batch['label']) <= set(range(10))
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert records[-1]['step'] == 4 and np.isfinite(records[-1]['loss'])


def test_checkpoint_restores_onto_a_different_mesh(tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config_with(**{'mesh.data': 4, 'mesh.fsdp': 2, 'sharding.fsdp_min_size': 1024,
                      'total_steps': 3, 'sample_every': 0})
  # A state laid out over 4 x 2 (a trained one restores the same way: test_multiprocess),
  # saved as the trainer saves it.
  trained = build.init_state(build.setup(config), jax.random.key(0))
  ckpt = checkpoint.Checkpointer(workdir, every=1, keep=10, use_async=False)
  ckpt.save(3, trained, None, config, force=True)
  ckpt.close()
  kernel = trained['params']['up'][0]['conv1']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, 'fsdp', None)
  for data, fsdp in ((8, 1), (2, 4)):
    other = tiny_config_with(**{'mesh.data': data, 'mesh.fsdp': fsdp, 'total_steps': 3,
                                'sharding.fsdp_min_size': 1024})
    s = build.setup(other)
    ckpt = checkpoint.Checkpointer(workdir, every=1, keep=10, use_async=False)
    restored = ckpt.restore(3, s.restore_target)
    ckpt.close()
    assert_trees_equal(trained, restored)
    got = restored['params']['up'][0]['conv1']['kernel'].sharding
    assert got.mesh.shape == {'data': data, 'fsdp': fsdp}
    assert got.spec == s.state_shardings['params']['up'][0]['conv1']['kernel'].spec


def test_sample_cli_writes_grid_and_npz_in_batches(tmp_path):
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=64):
    train.run(tiny_config_with(), workdir, stop_at_step=2)
  out = str(tmp_path / 'out' / 'grid')
  # Without the suite's cache variable, the --compilation_cache_dir flag decides where the
  # compiled sampler is kept for the next run.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  cache = tmp_path / 'xla_cache'
  proc = run_cli('jaxgen.sample', f'--workdir={workdir}', '--num_images=6', '--batch_size=4',
                 '--sample.sampler=ddpm', '--sample.steps=3', f'--output={out}',
                 '--num_cpu_devices=2', f'--compilation_cache_dir={cache}', env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert any(cache.iterdir())
  # Two batches of 4 over the 2 devices, each with its progress line.
  assert [line.split(' |')[0] for line in proc.stdout.splitlines()
          if line.startswith('sampled')] == ['sampled 4/6', 'sampled 6/6'], proc.stdout
  images = np.load(out + '.npz')['images']
  assert images.shape == (6, 28, 28, 1) and images.dtype == np.uint8
  assert np.asarray(Image.open(out + '.png')).shape == (2 * 30 + 2, 3 * 30 + 2)
  # Options the model does not declare, or of the wrong type, are errors (from Python too).
  with pytest.raises(ValueError, match=r"no sample option 'stepz' \(did you mean sample.steps"):
    api.sample(workdir, num_images=2, options={'stepz': 3})
  with pytest.raises(ValueError, match=r"sample option steps='x' is not a valid int"):
    api.sample(workdir, num_images=2, options={'steps': 'x'})

  # With a cache directory a stopped sampling job resumes: batches on disk are loaded, not
  # drawn again, and the missing ones are drawn with their own keys.
  s, state, _, _ = inference.restore_for_sampling(workdir)
  n, cache = jax.device_count(), tmp_path / 'batches'
  first = inference.generate(s, state, 2 * n - 1, n, 0, cache_dir=str(cache), sampler='ddim',
                             steps=2)
  files = sorted(cache.iterdir())
  assert [f.name for f in files] == [f'batch_00000_of_{n}.npy', f'batch_00001_of_{n}.npy']
  np.save(files[0], np.zeros((n, 28, 28, 1), np.uint8))
  files[1].unlink()
  again = inference.generate(s, state, 2 * n - 1, n, 0, cache_dir=str(cache), sampler='ddim',
                             steps=2)
  assert not again[:n].any() and np.array_equal(again[n:], first[n:])

  # The sampler table (benchmarks/sampler_table.py) on the same run: every cell measured
  # once, kept in its JSON lines, and skipped when the command runs again.
  from conftest import REPO, untrained_classifier
  from jaxgen.eval import classifier
  clf = untrained_classifier(tmp_path / 'clf')
  images = np.random.default_rng(0).integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
  labels = np.arange(96) % 10
  classifier.write_reference(clf, classifier.load(clf)[0], None,
                             splits=((images[:64], labels[:64]), (images[64:], labels[64:])))
  table = ['benchmarks/sampler_table.py', f'--workdir={workdir}', '--num_samples=16',
           '--samplers=euler,heun', '--nfe=3', '--reference_steps=4', '--num_cpu_devices=2',
           f'--classifier_dir={clf}']
  first = subprocess.run([sys.executable, *table], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  rows = [json.loads(line) for line in open(f'{workdir}/eval/sampler_table.jsonl')]
  assert [(r['sampler'], r['steps'], r['nfe']) for r in rows] == [
      ('euler', 3, 3), ('heun', 2, 3), ('ddpm', 4, 4)]
  assert '| sampler | NFE 3 |' in first.stdout and '| heun |' in first.stdout
  assert 'reference: ddpm at 4 NFE' in first.stdout
  again = subprocess.run([sys.executable, *table], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
  assert again.returncode == 0 and 'FD-FMNIST' in again.stdout
  assert len(open(f'{workdir}/eval/sampler_table.jsonl').readlines()) == 3
  assert 'steps (' not in again.stdout  # no cell sampled again


def test_sample_from_empty_workdir_is_a_clear_error(tmp_path):
  proc = run_cli('jaxgen.sample', f'--workdir={tmp_path}', '--num_cpu_devices=1')
  assert proc.returncode == 2
  assert 'no checkpoint in' in proc.stderr and 'Traceback' not in proc.stderr


def test_objective_sample_returns_uint8_images():
  s = build.setup(tiny_config_with())
  state = build.init_state(s, jax.random.key(0))
  from jaxgen.samplers import SAMPLERS
  # 8 images are split over the 8 devices, 5 are not; every sampler, on two spacings.
  for sampler, n, spacing in [('ddpm', 5, 'trained'), ('ddim', 8, 'trained'),
                              *[(name, 8, 'karras') for name in SAMPLERS]]:
    images = build.jit_sample(s, n, sampler=sampler, steps=3, spacing=spacing)(
        state, jax.random.key(1))
    assert isinstance(images, np.ndarray)
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8, sampler
    if sampler == 'heun':  # EDM's stochastic Heun through the sample options
      churned = build.jit_sample(s, n, sampler=sampler, steps=3, spacing=spacing,
                                 s_churn=20.0, s_noise=1.0)(state, jax.random.key(1))
      assert churned.shape == images.shape and not np.array_equal(churned, images)
  with pytest.raises(ValueError, match="sampler='dpm': use one of ddpm, ddim, euler"):
    build.jit_sample(s, 8, sampler='dpm')(state, jax.random.key(1))
  with pytest.raises(ValueError, match="spacing='linear': use trained, karras or log_snr"):
    build.jit_sample(s, 8, spacing='linear')(state, jax.random.key(1))


def test_linear_decay_schedule_is_constant_then_a_straight_line():
  import ml_collections

  from jaxgen import optim
  cfg = ml_collections.ConfigDict(dict(learning_rate=2e-4, warmup_steps=0, decay='linear',
                                       decay_start=0.5, end_lr_ratio=0.0))
  schedule = optim.learning_rate_schedule(cfg, 100)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 25, 50, 75, 100)],
                             [2e-4, 2e-4, 2e-4, 1e-4, 0.0], atol=1e-10)


def test_a_tiny_flow_dit_run_resumes_exactly_and_samples(tmp_path):
  """A rectified flow on a class-conditional DiT (Heun at time-uniform levels for the grid)
  through the one loop: times drawn per example, the flow's input and target. (EDM on the
  UNet: tests/test_posthoc_ema.py.)"""
  tiny_run_resumes_exactly('dit_fashion_mnist', tmp_path)
  grid = np.asarray(Image.open(tmp_path / 'b' / 'samples' / 'step_0000006.png'))
  assert grid.std() > 0  # samples, not a blank image


@pytest.mark.parametrize('scale', [0.5, 30.0])  # under the clip and over it
def test_the_optimizer_clips_as_optax_with_the_norm_the_step_passes(scale):
  """`optim.clip_by_global_norm` is optax's clipping with the same (empty) state, so a
  checkpoint's optimizer state is the same tree, and the same updates whether the step
  passes the gradients' norm (the metric it already has) or not."""
  import ml_collections
  import optax

  from jaxgen import optim
  cfg = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, decay='constant',
                                       b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01,
                                       grad_clip=1.0))
  opt = optim.build_optimizer(cfg, 10)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(1.0, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01))
  keys = jax.random.split(jax.random.key(0), 3)
  params = {'w': jax.random.normal(keys[0], (4, 3)), 'b': jax.random.normal(keys[1], (3,))}
  grads = jax.tree.map(lambda p: scale * p / 3.0, params)
  state = opt.init(params)
  assert (jax.tree_util.tree_structure(state)
          == jax.tree_util.tree_structure(reference.init(params)))
  want, _ = reference.update(grads, reference.init(params), params)
  want = optax.apply_updates(params, jax.tree.map(lambda u: 1e-2 * u, want))
  norm = optax.tree.norm(grads)
  assert (float(norm) > 1.0) == (scale > 1.0)
  for passed in (None, norm):
    got, _, lr = opt.update(grads, state, params, jax.numpy.int32(3), passed)
    assert float(lr) == pytest.approx(1e-2)
    for k in params:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
  # The norm passed is the one clipped by, not recomputed.
  clip = optim.clip_by_global_norm(1.0)
  clipped, _ = clip.update(grads, clip.init(params), grad_norm=4 * norm)
  for k in params:
    np.testing.assert_allclose(clipped[k], grads[k] / (4 * norm) if 4 * norm > 1 else grads[k],
                               rtol=1e-6)
