"""Read PyTorch `.pth` weight files without executing pickled code, into Flax params.

A `.pth` is a pickle (in a zip archive since PyTorch 1.6, a bare stream before). Unpickling
can call any importable function, so this reader resolves only the handful of names a
plain state dict uses (OrderedDict, the tensor-rebuild helpers, storage types) to its own
numpy constructors, and refuses anything else: a malicious file fails to load, it never
runs. File names with a hash suffix (`...-6726825d.pth`, the torch.hub convention) are
checked against the SHA-256 of the contents before anything is parsed.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import re
import struct
import zipfile
from typing import Any

import numpy as np
from etils import epath

FID_WEIGHTS_NAME = 'pt_inception-2015-12-05-6726825d.pth'
FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   + FID_WEIGHTS_NAME)

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class WeightFileError(ValueError):
  """A weight file that is corrupt, tampered with, or not a plain state dict."""


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyStorage:
  """A legacy-format storage: its bytes follow the pickle, so tensors are built afterwards."""

  def __init__(self, key: str, dtype: np.dtype):
    self.key, self.dtype = key, dtype


class _LazyTensor:
  def __init__(self, storage: _LazyStorage, args: tuple):
    self.storage, self.args = storage, args


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused  # requires_grad, backward hooks, metadata
  if isinstance(storage, _LazyStorage):
    return _LazyTensor(storage, (offset, size, stride))
  # as_strided does no bounds checks: a tampered size, stride or offset would read memory
  # outside the storage. Every element the view can reach must lie inside it.
  if not (isinstance(offset, int) and len(size) == len(stride) and
          all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
    raise WeightFileError(f'a tensor with offset {offset!r}, size {size!r}, stride {stride!r}')
  if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(storage):
    raise WeightFileError(f'a tensor (offset {offset}, size {tuple(size)}, stride '
                          f'{tuple(stride)}) reaches past its storage of {len(storage)} elements')
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *unused):
  del unused
  return data


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _SafeUnpickler(pickle.Unpickler):
  """Resolves only the names a state dict needs, to our numpy code; refuses the rest."""

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise WeightFileError(f'refusing to load {module}.{name}: a weight file holds only '
                          'tensors, and unpickling anything else could run code')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise WeightFileError(f'unexpected persistent id {pid!r} in the weight file')
    return self._load_storage(pid)


def _load_zip(data: bytes) -> Any:
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkl) != 1:
      raise WeightFileError('no data.pkl in the archive')
    prefix = pkl[0][:-len('data.pkl')]

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid[:5]
      raw = archive.read(f'{prefix}data/{key}')
      return np.frombuffer(raw, storage_type.dtype, count=numel)

    return _SafeUnpickler(io.BytesIO(archive.read(pkl[0])), load_storage).load()


def _load_legacy(data: bytes) -> Any:
  """The pre-1.6 format: magic, protocol, sys info, the pickle, its storage keys, storages."""
  f = io.BytesIO(data)

  def no_storage(pid):
    raise WeightFileError('a storage outside the state dict')

  try:
    magic = _SafeUnpickler(f, no_storage).load()
  except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
    raise WeightFileError('not a PyTorch weight file (neither a zip archive nor a legacy '
                          f'pickle stream): {e}') from e
  if magic != _LEGACY_MAGIC:
    raise WeightFileError('not a PyTorch weight file (bad magic number)')
  _SafeUnpickler(f, no_storage).load()  # protocol version
  _SafeUnpickler(f, no_storage).load()  # sys info
  lazy: dict[str, _LazyStorage] = {}

  def load_storage(pid):
    _, storage_type, key, _location, _numel, *view = pid
    if view and view[0] is not None:
      raise WeightFileError('storage views are not supported')
    return lazy.setdefault(key, _LazyStorage(key, storage_type.dtype))

  result = _SafeUnpickler(f, load_storage).load()
  storages = {}
  for key in _SafeUnpickler(f, no_storage).load():
    (numel,) = struct.unpack('<q', f.read(8))
    dtype = lazy[key].dtype
    raw = f.read(numel * dtype.itemsize)
    if len(raw) != numel * dtype.itemsize:
      raise WeightFileError('the file is truncated')
    storages[key] = np.frombuffer(raw, dtype)

  def build(value):
    if isinstance(value, _LazyTensor):
      return _rebuild_tensor(storages[value.storage.key], *value.args)
    return value

  if not isinstance(result, dict):
    raise WeightFileError(f'the file holds a {type(result).__name__}, not a state dict')
  return {k: build(v) for k, v in result.items()}


def check_hash(path: str | os.PathLike, data: bytes) -> None:
  """`name-<hex>.pth`: the SHA-256 of the contents must start with <hex> (torch.hub's rule)."""
  match = re.search(r'-([0-9a-f]{8,64})\.pth$', os.fspath(path))
  if match:
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(match.group(1)):
      raise WeightFileError(f'{path}: SHA-256 {digest[:16]}... does not match the {match.group(1)} '
                            'in its name: the file is corrupt or not the published weights; '
                            'download it again')


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """name -> numpy array from a `.pth` state dict, verified and parsed without running code."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'weight file {path} does not exist; download {FID_WEIGHTS_URL} '
                            'and pass its path')
  data = path.read_bytes()
  check_hash(path, data)
  try:
    state = _load_zip(data) if zipfile.is_zipfile(io.BytesIO(data)) else _load_legacy(data)
  except (pickle.UnpicklingError, EOFError, KeyError, struct.error, ValueError) as e:
    if isinstance(e, WeightFileError):
      raise
    raise WeightFileError(f'{path} is not a readable PyTorch state dict: {e}') from e
  if not isinstance(state, dict):
    raise WeightFileError(f'{path} holds a {type(state).__name__}, not a state dict')
  return dict(state)


def torch_to_flax(state: dict[str, np.ndarray], abstract: dict[str, Any]) -> dict[str, Any]:
  """Map a PyTorch state dict onto Flax params named alike; every parameter must be there."""
  params: dict[str, Any] = {}
  used = set()

  def convert(path: tuple[str, ...], leaf):
    name = '.'.join(path)
    if path[-1] == 'kernel':
      key = '.'.join(path[:-1] + ('weight',))
      value = state.get(key)
      if value is not None:
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T  # OIHW->HWIO, OI->IO
    else:
      key = name
      value = state.get(key)
    if value is None:
      raise WeightFileError(f'the weight file has no {key!r}')
    if tuple(value.shape) != tuple(leaf.shape):
      raise WeightFileError(f'{key}: shape {tuple(value.shape)} in the file, {tuple(leaf.shape)} '
                            'in the network')
    used.add(key)
    return np.ascontiguousarray(value, dtype=np.float32)

  def walk(tree, path):
    if isinstance(tree, dict):
      return {k: walk(v, path + (str(k),)) for k, v in tree.items()}
    return convert(path, tree)

  params = walk(abstract, ())
  unused = [k for k in state if k not in used and not k.endswith('num_batches_tracked')]
  if unused:
    raise WeightFileError(f'the weight file has parameters the network does not: {unused[:5]}')
  return params
