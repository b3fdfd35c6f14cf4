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


def tiny_config_with(config_name: str = 'ddpm_fashion_mnist', **overrides):
  """The tiny variant of configs/<config_name>.py with dotted-path overrides, e.g.
  {'mesh.data': 4}."""
  config = load_config('tiny', config_name)
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split('.')
      for part in parents:
        node = node[part]
      node[leaf] = value
  return config


def write_idx(path, array):
  """A gzipped unsigned-byte IDX file, the Fashion-MNIST download format."""
  import gzip
  import struct

  import numpy as np

  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion_mnist(directory, num_train: int = 64, num_test: int = 16):
  """Random images in the four Fashion-MNIST IDX files; labels cycle through 0..9."""
  import numpy as np

  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (('train', num_train), ('t10k', num_test)):
    write_idx(directory / f'{prefix}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 28, 28)))
    write_idx(directory / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
  return directory


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
