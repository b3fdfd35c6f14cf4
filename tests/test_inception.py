"""The Flax FID Inception against torch-fidelity's PyTorch one, with the same random weights.

torch-fidelity (installed without its dependencies, next to a CPU PyTorch, by `make test`)
is the peer: its FeatureExtractorInceptionV3 is pytorch-fid's network with TF1-exact
resizing. Both load the same state dict: PyTorch with torch.load, ours with the
pickle-free reader in jaxgen/eval/weights.py.
"""

import importlib
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from jaxgen.eval import fid, inception, weights


def _torch_fidelity_inception():
  """torch_fidelity.feature_extractor_inceptionv3 without the package __init__ (which
  imports torchvision for other extractors)."""
  spec = importlib.util.find_spec('torch_fidelity')
  if 'torch_fidelity' not in sys.modules:
    package = types.ModuleType('torch_fidelity')
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules['torch_fidelity'] = package
  return importlib.import_module('torch_fidelity.feature_extractor_inceptionv3')


@pytest.fixture(scope='module')
def peer(tmp_path_factory):
  """(torch model with random weights, path of its state dict as a zip .pth)."""
  module = _torch_fidelity_inception()
  directory = tmp_path_factory.mktemp('inception')
  torch.save({}, directory / 'empty.pth')
  original = torch.nn.Module.load_state_dict
  torch.nn.Module.load_state_dict = lambda self, *a, **k: None
  try:
    model = module.FeatureExtractorInceptionV3(
        'inception-v3-compat', ['2048', 'logits_unbiased'],
        feature_extractor_weights_path=str(directory / 'empty.pth'))
  finally:
    torch.nn.Module.load_state_dict = original
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('conv.weight'):
        fan_in = p[0].numel()
        p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
      elif name.endswith('bn.weight'):
        p.copy_(0.5 + torch.rand(p.shape, generator=gen))
      elif name.endswith('bn.bias'):
        p.copy_(0.2 * torch.randn(p.shape, generator=gen))
      else:  # fc
        p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    # BatchNorm statistics from one batch in train mode (momentum 1): well-scaled
    # activations through all 94 layers, and statistics that differ from 0 / 1.
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = 1.0
    model.train()
    calibration = (torch.rand((8, 3, 64, 64), generator=gen) * 255).to(torch.uint8)
    model(calibration)
    model.eval()
  torch.save(model.state_dict(), directory / 'random.pth')
  return model, directory / 'random.pth'


def _images(n, size, seed):
  rng = np.random.default_rng(seed)
  smooth = np.linspace(0, 255, size)[None, :, None, None] * rng.uniform(0.2, 1, (n, 1, 1, 3))
  noise = rng.integers(0, 256, (n, size, size, 3))
  return np.where(rng.random((n, 1, 1, 1)) < 0.5, smooth.transpose(0, 2, 1, 3) + 0 * noise,
                  noise).astype(np.uint8)


def _rel_l2(a, b):
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope='module')
def images():
  """Eight 28x28 RGB images, half smooth ramps and half noise (each Inception pass over
  eight images takes ~15 s on 2 CPU cores, so the module makes two)."""
  return _images(8, 28, 1)


@pytest.fixture(scope='module')
def ours(peer, images):
  from jaxgen.eval import evaluate

  # The evaluator's own path: weights read without pickle, sharded over 8 devices.
  return evaluate.inception_features(images, str(peer[1]))


def test_flax_inception_matches_torch_fidelity(peer, images, ours):
  model, _ = peer
  pool, logits_unbiased = ours
  with torch.no_grad():
    t_pool, t_logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
  t_pool, t_logits = t_pool.numpy(), t_logits.numpy()
  assert np.linalg.norm(t_pool) > 0 and np.isfinite(pool).all()
  assert _rel_l2(pool, t_pool) < 1e-4
  assert _rel_l2(logits_unbiased, t_logits) < 1e-4
  # Two sets of four: their 2048-d covariances are singular (and the square root ill
  # conditioned in any implementation), so compare FID over 3 fixed feature dimensions.
  dims = np.random.default_rng(0).permutation(inception.POOL_DIM)[:3]
  fd = lambda f: fid.frechet_distance(fid.stats_of(f[:4, dims]), fid.stats_of(f[4:, dims]))
  theirs_fd = fd(t_pool.astype(np.float64))
  assert theirs_fd > 0 and abs(fd(pool) - theirs_fd) / theirs_fd < 1e-3


def test_legacy_and_zip_weight_files_read_alike(peer, tmp_path):
  model, path = peer
  torch.save(model.state_dict(), tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
  zipped, legacy = weights.load_state_dict(path), weights.load_state_dict(tmp_path / 'legacy.pth')
  assert zipped.keys() == legacy.keys() and len(zipped) > 300
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(zipped[key], value.numpy())
    np.testing.assert_array_equal(legacy[key], value.numpy())


def test_wrong_checksum_is_refused(tmp_path):
  path = tmp_path / weights.FID_WEIGHTS_NAME
  path.write_bytes(b'not the weights')
  with pytest.raises(weights.WeightFileError, match='SHA-256 .* does not match the 6726825d'):
    weights.load_state_dict(path)


def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  path = tmp_path / 'evil.pth'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('evil/data.pkl', pickle.dumps({'w': Exploit()}))
  with pytest.raises(weights.WeightFileError, match='refusing to load posix.system'):
    weights.load_state_dict(path)
  assert not marker.exists()


def _tensor_file(path, offset, size, stride):
  """A zip .pth written opcode by opcode: {'w': a view (offset, size, stride) of 4 floats}."""
  def integer(v):
    return b'J' + struct.pack('<i', v)

  def text(v):
    return b'X' + struct.pack('<I', len(v)) + v.encode()
  storage = (b'(' + text('storage') + b'ctorch\nFloatStorage\n' + text('0') + text('cpu') +
             integer(4) + b'tQ')  # a persistent id: the tuple, then BINPERSID
  args = (b'(' + storage + integer(offset) + b'(' + b''.join(map(integer, size)) + b't(' +
          b''.join(map(integer, stride)) + b't\x89ccollections\nOrderedDict\n)Rt')
  pkl = b'\x80\x02}' + text('w') + b'ctorch._utils\n_rebuild_tensor_v2\n' + args + b'Rs.'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('t/data.pkl', pkl)
    archive.writestr('t/data/0', np.arange(4, dtype=np.float32).tobytes())
  return path


def test_a_tensor_view_past_its_storage_is_refused(tmp_path):
  ok = weights.load_state_dict(_tensor_file(tmp_path / 'ok.pth', 1, (2, 1), (2, 1)))
  np.testing.assert_array_equal(ok['w'], [[1.0], [3.0]])
  for offset, size, stride in ((0, (4,), (100000,)), (3, (2,), (1,)), (0, (2,), (-1,))):
    with pytest.raises(weights.WeightFileError, match='a tensor .*(past its storage|stride)'):
      weights.load_state_dict(_tensor_file(tmp_path / 'bad.pth', offset, size, stride))


def test_missing_or_mismatched_parameters_are_named(peer):
  _, path = peer
  state = weights.load_state_dict(path)
  del state['Mixed_6b.branch1x1.conv.weight']
  with pytest.raises(weights.WeightFileError, match='Mixed_6b.branch1x1.conv.weight'):
    weights.torch_to_flax(state, inception.MODEL.abstract_params())


def test_eval_inception_metrics_against_reference_statistics(peer, images, ours, tmp_path):
  from jaxgen.eval import evaluate

  features, logits = ours
  # Reference statistics with a zero covariance, so FID has the closed form
  # |mu - mu_ref|^2 + Tr(sigma) (8 samples give a singular 2048-d covariance), and the
  # reference features, as `jaxgen-eval stats` writes them: here, of the samples.
  ref = fid.Stats(features.mean(0) + 0.1, np.zeros((inception.POOL_DIM,) * 2))
  fid.save_stats(tmp_path / 'ref.npz', ref, features)
  out = evaluate.inception_metrics(images, str(peer[1]), str(tmp_path / 'ref.npz'))
  expected = inception.POOL_DIM * 0.1**2 + np.trace(fid.stats_of(features).sigma)
  np.testing.assert_allclose(out['fid'], expected, rtol=1e-6)
  assert out['precision'] == 1.0 and out['recall'] == 1.0
  np.testing.assert_allclose(out['inception_score'], fid.inception_score(logits)[0], rtol=1e-6)
  assert np.isfinite(out['inception_score']) and np.isfinite(out['kid'])


def test_grayscale_images_are_repeated_to_rgb():
  gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
  rgb = inception.to_rgb_uint8(gray)
  assert rgb.shape == (2, 4, 4, 3) and (rgb == gray).all()
  with pytest.raises(ValueError, match='uint8'):
    inception.to_rgb_uint8(gray.astype(np.float32))
