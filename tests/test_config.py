"""Each bad config stops before anything compiles, with one line naming the field."""


import pytest

from conftest import REPO, load_config, run_cli
from jaxgen import registry, validate


def _cli(tmp_path, *overrides):
  workdir = tmp_path / 'run'
  proc = run_cli('jaxgen.main', f'--config={REPO}/configs/ddpm_fashion_mnist.py:tiny',
                 f'--workdir={workdir}', '--num_cpu_devices=8', *overrides, timeout=120)
  assert not workdir.exists(), 'a failed start must not create the workdir'
  return proc


@pytest.mark.parametrize('override,message', [
    ('--config.model.chh=3', 'config has no field model.chh (did you mean model.ch?)'),
    ('--config.modell.ch=3', 'config has no field modell (did you mean model?)'),
    ('--config.model.qqqq=3', 'config has no field model.qqqq'),
    ('--config.total_steps=abc', 'flag --config.total_steps=abc: invalid literal for int()'),
    ('--config.global_batch_size=12',
     'config.global_batch_size=12 is not divisible by the 8 devices'),
    ('--config.mesh.data=3', "config.mesh={'data': 3, 'fsdp': 1} needs 3 devices but 8 are"),
])
def test_cli_config_errors_are_one_line(tmp_path, override, message):
  proc = _cli(tmp_path, override)
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith('jaxgen: error: ') and message in lines[-1], proc.stderr
  if 'has no field' in message:  # the whole line, exactly: no repr of a KeyError in it
    assert lines == [f'jaxgen: error: {message}'], proc.stderr
  assert 'Traceback' not in proc.stderr


def _check(config, num_devices=8, processes=1):
  validate.validate(config, num_devices, processes, registry.known_values(config))


@pytest.mark.parametrize('field,value,message', [
    ('diffusion.sampler', 'dpm', "config.diffusion.sampler='dpm' is not one of"),
    ('objective', 'flow', "config.objective='flow' is not one of"),
    ('total_steps', 0, 'config.total_steps must be a positive integer, got 0'),
    ('data.resize', 'crop', 'config.data.resize=\'crop\' must be'),
    ('mesh.fsdp', 16, "config.mesh: mesh: {'data': -1, 'fsdp': 16} cannot be filled from 8"),
    ('sharding.rules', (('.*', 'shard_everything'),), "rule 'shard_everything' must be"),
    ('data.jitter_size', 20, 'config.data.jitter_size=20 must be 0 (no jitter) or at least'),
    ('data.source_key', 'edges', 'data.source_key and data.target_key go together'),
    ('data.target_name', 'cycle_gan/apple2orange', 'need data.target_split'),
    ('diffusion.formulation', 'sde', "config.diffusion.formulation='sde' is not one of"),
])
def test_validate_names_the_field(field, value, message):
  config = load_config('tiny')
  with config.unlocked():
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  with pytest.raises(validate.ConfigError) as e:
    _check(config)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_batch_must_divide_over_processes():
  config = load_config('tiny')
  with config.unlocked():
    config.global_batch_size = 8
    config.mesh.data = 2
  with pytest.raises(validate.ConfigError, match='not divisible by the 3 processes'):
    _check(config, num_devices=2, processes=3)


@pytest.mark.parametrize('name', ['ddpm_fashion_mnist', 'edm_fashion_mnist',
                                  'flow_fashion_mnist', 'dit_fashion_mnist', 'ldm_fashion_mnist'])
@pytest.mark.parametrize('variant', ['tiny', 'demo', None])
def test_shipped_variants_validate(name, variant):
  config = load_config(variant, name)
  _check(config, num_devices=8)
  assert config.is_locked


@pytest.mark.parametrize('name', ['edm_cifar10', 'dit_imagenet256'])
@pytest.mark.parametrize('variant', ['tpu', 'gpu8', None])
def test_diffusion_accelerator_variants_validate(name, variant):
  config = load_config(variant, name)
  _check(config, num_devices=8)
  assert config.is_locked


@pytest.mark.parametrize('name,variants', [
    ('dcgan_fashion_mnist', ('tiny', 'demo', None)),
    ('stylegan2_fashion_mnist', ('tiny', 'demo', None)),
    ('stylegan2_cifar10', ('tpu', 'gpu8', None)),
    ('pix2pix_edges2fashion', ('tiny', 'demo', None)),
    ('cyclegan_sneaker2boot', ('tiny', 'demo', None)),
    ('pix2pix_facades', ('tpu', 'gpu8', None)),
    ('cyclegan_horse2zebra', ('tpu', 'gpu8', None))])
def test_gan_configs_validate_and_build(name, variants):
  import jax

  from jaxgen import build, registry
  for variant in variants:
    config = load_config(variant, name)
    validate.validate(config, 8, 1, registry.known_values(config))
    params = build.abstract_state(config)['params']
    assert set(params) == {'g', 'd'}
  size = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  if name == 'pix2pix_facades':  # unet_256 (see test_pix2pix for the count)
    assert size(params['g']) == 54_413_955 + 576
  if name == 'cyclegan_horse2zebra':  # two resnet_9blocks (see test_cyclegan)
    assert size(params['g']) == 2 * (11_378_179 + 5_248)
  if name != 'stylegan2_cifar10':
    return
  # ADA's cifar settings: 512 wide at 32 px, mapping depth 2, no residual D skips.
  g = sum(x.size for x in jax.tree_util.tree_leaves(params['g']))
  assert 19e6 < g < 21e6, g
  assert not any('skip' in str(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(params['d'])[0])


@pytest.mark.parametrize('formulation,spacing', [('edm', 'karras'), ('flow', 'time_uniform')])
def test_edm_and_flow_models_have_no_trained_timesteps_to_sample_at(formulation, spacing):
  config = load_config('tiny')
  with config.unlocked():
    config.diffusion.formulation = formulation
  with pytest.raises(validate.ConfigError, match="config.diffusion.spacing='trained' is not"):
    _check(config)
  with config.unlocked():
    config.diffusion.spacing = spacing
  _check(config)
