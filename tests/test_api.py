"""The Python API: configs, training, sampling and evaluation with keyword arguments and
no absl flag parsing (what a notebook does)."""

import subprocess
import sys

import pytest

from conftest import REPO
from jaxgen import api, validate


def test_import_defines_no_flags_and_sampling_code_never_imports_the_loop():
  code = ('import sys, jaxgen.api; from absl import flags; '
          'assert "jaxgen.runtime" not in sys.modules; '
          'assert "workdir" not in flags.FLAGS and "num_cpu_devices" not in flags.FLAGS; '
          'import jaxgen.sample, jaxgen.eval.evaluate, jaxgen.inference; '
          'assert "jaxgen.train" not in sys.modules, "sampling/eval code imports train.py"')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_load_config_takes_overrides_and_names_a_misspelt_field():
  path = f'{REPO}/configs/vae_fashion_mnist.py'
  with pytest.raises(validate.ConfigError,
                     match=r'^config has no field model.chh \(did you mean model.ch\?\)$'):
    api.load_config(path, 'tiny', model__chh=3)
  config = api.load_config(path, 'tiny', total_steps=2, data__image_size=32)
  assert (config.total_steps, config.data.image_size, config.is_locked) == (2, 32, True)
  # Training, sampling, latent walks and evaluation through this API, with no flags:
  # notebooks/quickstart.ipynb, executed by test_notebook.py.
