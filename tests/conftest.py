"""Tests run on CPU JAX with 8 simulated devices (set before JAX picks a backend)."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

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
