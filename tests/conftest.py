"""Tests run on CPU JAX with 8 simulated devices (set before JAX picks a backend)."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests compile far more than they run: XLA's cheapest backend optimisation level makes
# compiling ~2x faster and tiny steps only a little slower. Subprocesses inherit it.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0').strip()

import jax  # noqa: E402

from jaxgen import jax_setup  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax_setup.keep_freed_host_memory()  # before the devices exist, as the programs do

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(variant: str | None = 'tiny', name: str = 'ddpm_fashion_mnist'):
  from jaxgen import config_files

  return config_files.load(os.path.join(REPO, 'configs', f'{name}.py'), variant)


def tiny_config_with(config_name: str = 'ddpm_fashion_mnist', **overrides):
  """The tiny variant of configs/<config_name>.py with dotted-path overrides, e.g.
  {'mesh.data': 4} (through jaxgen.api.load_config: a misspelt field is an error)."""
  from jaxgen import api

  return api.load_config(os.path.join(REPO, 'configs', f'{config_name}.py'), 'tiny',
                         **{key.replace('.', '__'): value for key, value in overrides.items()})


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


@pytest.fixture
def fake_fmnist(tmp_path):
  """Config overrides that train on small random Fashion-MNIST IDX files (64 train, 16 test
  images), prepared as TFDS in this test's directory."""
  data = write_fake_fashion_mnist(tmp_path / 'fmnist')
  return {'data.manual_dir': str(data), 'data.data_dir': str(tmp_path / 'tfds')}


def assert_trees_equal(a, b):
  """Same structure and bit-identical leaves (device arrays are fetched first)."""
  a, b = jax.device_get(a), jax.device_get(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
  a, b = jax.device_get(a), jax.device_get(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def tiny_run_resumes_exactly(config_name: str, tmp_path, num_train: int = 64, **overrides):
  """The tiny variant of configs/<config_name>.py trained on fake Fashion-MNIST twice in
  tmp_path: 'a' stopped at step 3 and resumed, 'b' straight through. Asserts the two final
  states are bit-identical; returns (config, the final state)."""
  from jaxgen import train

  data = write_fake_fashion_mnist(tmp_path / 'fmnist', num_train=num_train, num_test=16)
  config = tiny_config_with(config_name, **{'data.manual_dir': str(data),
                                            'data.data_dir': str(tmp_path / 'tfds'),
                                            **overrides})
  train.run(config, str(tmp_path / 'a'), stop_at_step=3)
  resumed = train.run(config, str(tmp_path / 'a'))
  straight = train.run(config, str(tmp_path / 'b'))
  assert_trees_equal(resumed, straight)
  return config, straight


def untrained_classifier(directory) -> str:
  """A Fashion-MNIST classifier checkpoint of random weights: features enough to check
  what is computed from them (a trained one is not needed for that)."""
  import jax

  from jaxgen.eval import classifier

  params = classifier.MODEL.init(jax.random.key(0))
  classifier.save(directory, classifier.Trained(params, 0.0), {'epochs': 0})
  return str(directory)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_cli(module: str, *args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
  """`python -m module args` from the repository root, output captured as text."""
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], capture_output=True,
                        text=True, timeout=timeout, cwd=REPO, **kwargs)


def pytest_configure(config):
  import shutil
  import tempfile

  # Everything the suite and its subprocesses put in the temp directory (TFDS leaves an empty
  # `tmp*tfds` directory each time it builds the info of a dataset that is not prepared yet;
  # the compilation cache below) goes under one directory, removed at the end of the run.
  # xdist workers inherit TMPDIR from the controller, which alone removes it.
  if 'JAXGEN_TEST_TMPDIR' not in os.environ:
    os.environ['JAXGEN_TEST_TMPDIR'] = tempfile.mkdtemp(prefix='jaxgen-tests-')
    os.environ['TMPDIR'] = os.environ['JAXGEN_TEST_TMPDIR']
    if not hasattr(config, 'workerinput'):
      config.add_cleanup(lambda: shutil.rmtree(os.environ['JAXGEN_TEST_TMPDIR'],
                                               ignore_errors=True))
  tempfile.tempdir = os.environ['TMPDIR']
  # The suite compiles the same tiny programs many times (every run, resume, restore):
  # a persistent cache shared by the session (and its subprocesses) turns repeats into loads.
  cache = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                                os.path.join(os.environ['TMPDIR'], 'xla-cache'))
  # Subprocess workers (CLI, kill -9, multi-process tests) read the same settings from env.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
