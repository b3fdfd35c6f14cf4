"""The Python API: configs, training, sampling and evaluation with keyword arguments and
no absl flag parsing (what a notebook does)."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, write_fake_fashion_mnist
from jaxgen import api, validate


def test_import_defines_no_command_line_flags():
  code = ('import sys, jaxgen.api; from absl import flags; '
          'assert "jaxgen.runtime" not in sys.modules; '
          'assert "workdir" not in flags.FLAGS and "num_cpu_devices" not in flags.FLAGS')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_train_sample_evaluate_with_keyword_arguments(tmp_path, capsys):
  data = write_fake_fashion_mnist(tmp_path / 'idx')
  path = f'{REPO}/configs/vae_fashion_mnist.py'
  with pytest.raises(validate.ConfigError,
                     match=r'^config has no field model.chh \(did you mean model.ch\?\)$'):
    api.load_config(path, 'tiny', model__chh=3)
  config = api.load_config(path, 'tiny', total_steps=2, log_every=1, sample_every=0,
                           data__manual_dir=str(data), data__data_dir=str(tmp_path / 'tfds'))
  assert config.total_steps == 2 and config.is_locked
  workdir = str(tmp_path / 'run')
  state = api.train(config, workdir)
  assert int(state['step']) == 2
  assert 'step 2/2 | loss' in capsys.readouterr().out  # progress lines, as the CLI prints
  result = api.sample(workdir, num_images=5, output='')
  assert result.images.shape == (5, 28, 28, 1) and result.images.dtype == np.uint8
  assert result.output.endswith('samples/sample_0000002')
  done = api.evaluate(workdir, num_samples=8, batch_size=8, test_images=8, classifier_dir='')
  assert done['evaluated'] == [2] and done['best']['metric'] == 'test/nelbo_bits_per_dim'
