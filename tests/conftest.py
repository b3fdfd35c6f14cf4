"""Tests run on CPU JAX with 8 simulated devices (set before JAX picks a backend)."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests compile far more than they run: XLA's cheapest backend optimisation level makes
# compiling ~2x faster and tiny steps only a little slower. Subprocesses inherit it.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0').strip()

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(variant: str = 'tiny', name: str = 'ddpm_fashion_mnist'):
  from ml_collections import config_flags

  return config_flags.config_flags._LoadConfigModule(
      name, os.path.join(REPO, 'configs', f'{name}.py')).get_config(variant)


@pytest.fixture
def tiny_config():
  return load_config('tiny')


def pytest_configure(config):
  # The suite compiles the same tiny programs many times (every run, resume, restore):
  # a persistent cache shared by the session (and its subprocesses) turns repeats into loads.
  import tempfile

  cache = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                                tempfile.mkdtemp(prefix='jaxgen-test-xla-cache-'))
  # Subprocess workers (CLI, kill -9, multi-process tests) read the same settings from env.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
