"""Scale-out: FSDP memory and equivalence, gradient accumulation, ahead-of-time compile."""


import jax
import numpy as np
import pytest

from conftest import REPO, assert_trees_close, load_config, run_cli
from jaxgen import build, compile_report, train


def _setup(data, fsdp, min_size=0):
  config = load_config('tiny')
  with config.unlocked():
    config.mesh.data, config.mesh.fsdp = data, fsdp
    config.sharding.fsdp_min_size = min_size
  return build.setup(config)


def _bytes_on_device0(tree):
  device = jax.devices()[0]
  return sum(shard.data.nbytes for leaf in jax.tree_util.tree_leaves(tree)
             for shard in leaf.addressable_shards if shard.device == device)


def test_fsdp_holds_an_eighth_per_device_and_steps_the_same():
  replicated, fsdp = _setup(8, 1), _setup(1, 8)
  states = [build.init_state(s, jax.random.key(0)) for s in (replicated, fsdp)]
  full = _bytes_on_device0({k: states[0][k] for k in ('params', 'opt_state', 'ema_params')})
  sharded = _bytes_on_device0({k: states[1][k] for k in ('params', 'opt_state', 'ema_params')})
  # Everything with a dimension divisible by 8 is split; only scalars stay whole.
  assert sharded <= full / 8 * 1.05, (sharded, full)
  rng = np.random.default_rng(0)
  local = {'image': rng.uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32),
           'label': rng.integers(0, 10, 16).astype(np.int32)}
  results = []
  for s, state in zip((replicated, fsdp), states):
    batch = {k: jax.make_array_from_process_local_data(s.batch_sharding, v)
             for k, v in local.items()}
    new_state, m = build.jit_train_step(s)(state, batch, jax.random.key(1))
    results.append((jax.device_get(new_state['params']), float(m['loss'])))
  assert abs(results[0][1] - results[1][1]) < 1e-5
  leaves = [jax.tree_util.tree_leaves(params) for params, _ in results]
  for a, b in zip(*leaves):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compile_report_of_the_tiny_step():
  report = compile_report.compile_report(_setup(4, 2, 1024), device_memory_bytes=2**30)
  assert report['flops_per_device'] > 1e6
  assert report['argument_size_in_bytes'] > 0 and report['temp_size_in_bytes'] > 0
  assert report['fits'] is True
  assert not compile_report.compile_report(_setup(8, 1), device_memory_bytes=1024)['fits']


def test_compile_only_cli_for_the_cifar10_unet():
  """The 35.7M DDPM CIFAR-10 step (8-GPU variant: bf16) compiles for 8 devices on CPU."""
  proc = run_cli('jaxgen.main', f'--config={REPO}/configs/ddpm_cifar10.py:gpu8',
                 '--compile_only', '--device_memory_gb=16', '--num_cpu_devices=8')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'FLOPs per step per device' in proc.stdout
  assert 'fits in 16.0 GiB per device' in proc.stdout


def test_cifar10_accelerator_variants_lay_out_as_documented():
  shapes = {}
  for variant in ('tpu', 'gpu8', 'fsdp8'):
    config = load_config(variant, name='ddpm_cifar10')
    s = build.setup(config)
    assert config.model.compute_dtype == 'bfloat16'
    kernel = s.state_shardings['params']['down'][5]['conv1']['kernel']  # (3, 3, 128, 256)
    mu = s.state_shardings['opt_state'][1][0].mu['down'][5]['conv1']['kernel']
    shapes[variant] = (dict(s.mesh.shape), kernel.spec, mu.spec)
  P = jax.sharding.PartitionSpec
  assert shapes['tpu'] == ({'data': 8, 'fsdp': 1}, P(), P())
  assert shapes['gpu8'] == ({'data': 8, 'fsdp': 1}, P(), P())
  assert shapes['fsdp8'] == ({'data': 1, 'fsdp': 8}, P(None, None, None, 'fsdp'),
                             P(None, None, None, 'fsdp'))


def test_gradient_accumulation_equals_one_large_batch():
  rng = np.random.default_rng(0)
  local = {'image': rng.uniform(-1, 1, (32, 28, 28, 1)).astype(np.float32),
           'label': rng.integers(0, 10, 32).astype(np.int32)}
  results = []
  for accum in (1, 4):
    config = load_config('tiny')
    with config.unlocked():
      config.global_batch_size = 32
      config.grad_accum_steps = accum
      config.model.dropout = 0.0  # dropout masks are drawn per micro-batch
      config.model.num_classes = 10  # also exercises per-example label dropout
    s = build.setup(config)
    state = build.init_state(s, jax.random.key(0))
    batch = {k: jax.make_array_from_process_local_data(s.batch_sharding, v)
             for k, v in local.items()}
    step = build.jit_train_step(s)
    for i in range(2):
      state, m = step(state, batch, jax.random.key(i))
    results.append((jax.device_get(state['params']), float(m['loss']), float(m['grad_norm'])))
  (p1, loss1, norm1), (p4, loss4, norm4) = results
  assert abs(loss1 - loss4) < 1e-5 * max(1.0, loss1)
  assert abs(norm1 - norm4) < 1e-4 * norm1
  assert_trees_close(p1, p4, rtol=1e-4, atol=1e-6)


def test_micro_batches_must_split_over_devices():
  from jaxgen import registry, validate

  config = load_config('tiny')
  with config.unlocked():
    config.grad_accum_steps = 4  # 16 / 4 = 4 examples cannot split over 8 devices
  with pytest.raises(validate.ConfigError, match='config.grad_accum_steps=4'):
    validate.validate(config, 8, 1, registry.known_values(config))


def _fixed_batch(s, n=16):
  images = -np.ones((n, 28, 28, 1), np.float32)
  images[::2, 8:20, 8:20] = 1.0
  images[1::2, :, 12:16] = 0.5
  return {'image': jax.device_put(images, s.batch_sharding),
          'label': jax.device_put(np.zeros(n, np.int32), s.batch_sharding)}


def _with(**model_fields):
  config = load_config('tiny')
  with config.unlocked():
    config.model.dropout = 0.0
    config.optimizer.learning_rate = 3e-3
    config.optimizer.decay = 'constant'
    config.total_steps = 100
    config.model.update(model_fields)
  # One device, as test_train's overfitting test (the same program for remat='none').
  return build.setup(config, devices=jax.devices()[:1])


def test_bfloat16_compute_with_float32_params_trains():
  s = _with(compute_dtype='bfloat16')
  state = build.init_state(s, jax.random.key(0))
  batch = _fixed_batch(s)
  step = build.jit_train_step(s)
  hlo = step.lower(state, batch, jax.random.key(0)).as_text()
  convolutions = [line for line in hlo.splitlines() if 'stablehlo.convolution' in line]
  assert convolutions and all('bf16' in line for line in convolutions)
  losses = []
  for i in range(45):
    state, m = step(state, batch, jax.random.key(i))
    losses.append(float(m['loss']))
  for part in ('params', 'ema_params', 'opt_state'):
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state[part]) if x.ndim}
    assert dtypes == {np.dtype('float32')}, (part, dtypes)
  assert np.isfinite(losses).all()
  assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), losses


def test_remat_gives_the_same_loss_and_gradients():
  results = []
  for remat in ('none', 'full', 'dots'):
    s = _with(remat=remat, dropout=0.1)
    state = build.init_state(s, jax.random.key(0))
    batch = _fixed_batch(s)
    jaxpr = str(jax.make_jaxpr(s.objective.train_step)(state, batch, jax.random.key(0)))
    assert ('remat' in jaxpr or 'checkpoint' in jaxpr) == (remat != 'none')
    if remat == 'full':  # the jaxpr check suffices: compiling it too costs 17 s of suite time
      continue
    new_state, m = build.jit_train_step(s)(state, batch, jax.random.key(3))
    results.append((float(m['loss']), jax.device_get(new_state['params'])))
  for loss, params in results[1:]:
    assert loss == results[0][0]
    assert_trees_close(results[0][1], params, rtol=1e-5, atol=1e-7)


def test_a_run_trained_with_gradient_accumulation_samples_and_evaluates(tmp_path):
  """Sampling and evaluation must not inherit training-only constraints: 32 examples in 4
  micro-batches over 8 devices train fine, but a sampler has no such batch to split."""
  import tensorflow_datasets as tfds

  from jaxgen import api, inference
  from jaxgen.eval import evaluate

  config = load_config('tiny')
  with config.unlocked():  # the accum=4 config above: its compiled step is reused
    config.global_batch_size, config.grad_accum_steps, config.sample_every = 32, 4, 0
    config.model.dropout, config.model.num_classes = 0.0, 10
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=64):
    train.run(config, workdir, stop_at_step=1)
  s, state, step, saved = inference.restore_for_sampling(workdir)
  assert step == 1 and saved.grad_accum_steps == 4
  images = api.sample(workdir, num_images=3, options={'steps': 2}).images
  assert images.shape == (3, 28, 28, 1)
  done = evaluate.evaluate_workdir(workdir, evaluate.Options(
      num_samples=8, batch_size=8, classifier_dir='', sample_options={'steps': 2}))
  assert done['evaluated'] == [1]
