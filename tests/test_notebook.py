"""notebooks/quickstart.ipynb runs end to end (nbclient, a real kernel) on the tiny config."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, write_fake_fashion_mnist

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  data = write_fake_fashion_mnist(tmp_path / 'idx', num_train=64, num_test=24)
  for name, value in {'VARIANT': 'tiny', 'WORKDIR': tmp_path / 'run', 'MANUAL_DIR': data,
                      'DATA_DIR': tmp_path / 'tfds', 'CLASSIFIER_DIR': tmp_path / 'none',
                      'NUM_SAMPLES': 16, 'NUM_TEST_IMAGES': 16}.items():
    monkeypatch.setenv(f'JAXGEN_NB_{name}', str(value))  # the kernel inherits them
  notebook = nbformat.read(os.path.join(REPO, 'notebooks', 'quickstart.ipynb'), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': REPO}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  text = ''.join(o.get('text', '') for o in outputs)
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert 'step 6/6 | loss' in text and 'trained to step 6' in text  # progress lines
  assert '(32, 28, 28, 1) uint8 from step 6' in text
  assert '16 test images: ' in text and 'bits/dim' in text
  assert "'evaluated': [6]" in text and "'metric': 'test/nelbo_bits_per_dim'" in text
  # The training grids (samples and reconstructions), the new samples, the two walks and
  # the prior grid.
  assert len(images) == 2 + 1 + 3, [o.get('data', {}).keys() for o in outputs]
