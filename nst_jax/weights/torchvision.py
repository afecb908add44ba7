"""torchvision's VGG19 state dict (`vgg19-dcbb9e9d.pth`) -> params.

Keys `features.{i}.weight` (Cout, Cin, 3, 3) OIHW and `features.{i}.bias` at
the convolution indices below; `classifier.*` is ignored. RGB input,
torchvision preprocessing.

A `.pth` is a zip holding `<prefix>/data.pkl` (a pickle) and raw tensor
storages `<prefix>/data/<key>`. Unpickling it unrestricted can run arbitrary
code, so it is never done: with torch installed, `torch.load(...,
weights_only=True)`; without, `SafeUnpickler` allows only the handful of
globals a state dict needs and refuses everything else before it runs.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile

import numpy as np

from nst_jax.core import vgg
from nst_jax.errors import UserError
from nst_jax.weights.fileformat import check_params, file_sha256

# torchvision features.N index of each convolution, in order.
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'HalfStorage': np.float16, 'BFloat16Storage': None,
    'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8,
    'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class _StorageType:
  """Stands in for torch.FloatStorage etc.: just the numpy dtype."""

  def __init__(self, name):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2 without torch: a strided numpy view."""
  del unused
  if not size:
    return storage[offset].copy()
  itemsize = storage.dtype.itemsize
  needed = offset + 1 + sum((s - 1) * st for s, st in zip(size, stride))
  if needed > storage.size:
    raise ValueError('tensor reaches past the end of its storage')
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(st * itemsize for st in stride))
  return np.array(view)


class SafeUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict, refusing any global it does not expect."""

  ALLOWED = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
  }

  def __init__(self, file, archive, prefix, where):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._where = where

  def find_class(self, module, name):
    if (module, name) in self.ALLOWED:
      return self.ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      if _STORAGE_DTYPES[name] is None:
        raise UserError(f'{self._where}: unsupported tensor type {name}')
      return _StorageType(name)
    raise UserError(f'{self._where}: refuses to load pickle global '
                    f'{module}.{name} (a weights file must hold only tensors)')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType)):
      raise UserError(f'{self._where}: unexpected persistent id in pickle')
    storage_type, key = pid[1], str(pid[2])
    data = self._archive.read(f'{self._prefix}/data/{key}')
    return np.frombuffer(data, dtype=storage_type.dtype)


def read_state_dict(path: str, where: str) -> dict:
  """The state dict of a torch zip file, as numpy arrays, without torch."""
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')
                 or n == 'data.pkl']
      if not pickles:
        raise UserError(f'{where}: not a torch zip file (no data.pkl)')
      prefix = pickles[0][:-len('/data.pkl')] if '/' in pickles[0] else ''
      byteorder = f'{prefix}/byteorder'
      if byteorder in archive.namelist() and archive.read(
          byteorder).strip() not in (b'little', b''):
        raise UserError(f'{where}: big-endian tensors are not supported')
      with archive.open(pickles[0]) as f:
        return SafeUnpickler(f, archive, prefix, where).load()
  except UserError:
    raise
  except zipfile.BadZipFile:
    raise UserError(f'{where}: not a zip-format torch file (truncated, or '
                    'the legacy pre-1.6 format: re-save it with torch.save '
                    'in a current torch)') from None
  except (OSError, EOFError, pickle.UnpicklingError, ValueError, KeyError,
          TypeError, IndexError, AttributeError) as error:
    raise UserError(f'{where}: unreadable torch file ({type(error).__name__}:'
                    f' {error})'.splitlines()[0]) from None


def _load(path: str, where: str) -> dict:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return read_state_dict(path, where)
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # pylint: disable=broad-except
    raise UserError(f'{where}: torch refused to load it safely '
                    f'({type(error).__name__}: {error})'.splitlines()[0]
                    ) from None
  return {k: v.float().numpy() for k, v in state.items()
          if hasattr(v, 'numpy')}


def convert_torchvision(path: str):
  """Reads a torchvision VGG19 state dict without executing pickle code.

  Args:
    path: the `.pth` file.
  Returns:
    (params, meta) with preprocessing 'torchvision'; kernels HWIO.
  Raises:
    UserError: unsafe, unreadable or wrong file, missing or misshapen layer.
  """
  where = f'torchvision weights file {path}'
  if not os.path.isfile(path):
    raise UserError(f'{where}: file not found')
  state = _load(path, where)
  if not isinstance(state, dict):
    raise UserError(f'{where}: holds a {type(state).__name__}, not a state '
                    'dict')
  params = {}
  for name, index in zip(vgg.CONV_LAYERS, CONV_INDICES):
    weight, bias = f'features.{index}.weight', f'features.{index}.bias'
    for key in (weight, bias):
      if key not in state:
        raise UserError(f'{where}: missing {key} (layer {name}); is this '
                        'a VGG19 state dict?')
    kernel = np.asarray(state[weight])
    if kernel.ndim != 4:
      raise UserError(f'{where}: {weight} (layer {name}) has shape '
                      f'{kernel.shape}, expected 4 dimensions')
    params[name] = {'kernel': np.transpose(kernel, (2, 3, 1, 0)),  # OIHW->HWIO
                    'bias': np.asarray(state[bias])}
  params = check_params(params, where)
  meta = {'source': 'torchvision', 'source_file': os.path.basename(path),
          'source_sha256': file_sha256(path), 'preprocessing': 'torchvision',
          'normalized': False, 'random': False, 'seed': None}
  return params, meta
