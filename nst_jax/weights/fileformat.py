"""The converted weights file: a `.npz` of float32 HWIO arrays plus metadata.

Keys `conv1_1/kernel`, `conv1_1/bias`, ... for the 16 VGG19 convolutions and
`meta`, a JSON string with: `format` ('nst_jax-vgg19'), `format_version`,
`source` ('keras' | 'torchvision' | 'random'), `source_file`,
`source_sha256`, `preprocessing` ('caffe' | 'torchvision'), `normalized`,
`random` and `seed`. Read with `allow_pickle=False`: loading never runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from nst_jax.core import vgg
from nst_jax.io import files
from nst_jax.errors import UserError

FORMAT = 'nst_jax-vgg19'
FORMAT_VERSION = 1


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def check_params(params: dict, where: str) -> dict:
  """Checks all 16 layers, their shapes and dtypes; returns float32 arrays.

  Args:
    params: {layer: {'kernel': HWIO, 'bias': (Cout,)}}.
    where: what to name in errors (e.g. "weights file w.npz").
  """
  checked = {}
  for name in vgg.CONV_LAYERS:
    if name not in params:
      raise UserError(f'{where}: missing layer {name}')
    cin, cout = vgg.CONV_SHAPES[name]
    expected = {'kernel': (3, 3, cin, cout), 'bias': (cout,)}
    checked[name] = {}
    for part, shape in expected.items():
      if part not in params[name]:
        raise UserError(f'{where}: layer {name} has no {part}')
      array = np.asarray(params[name][part])
      if tuple(array.shape) != shape:
        raise UserError(f'{where}: layer {name} {part} has shape '
                        f'{tuple(array.shape)}, expected {shape}')
      if not np.issubdtype(array.dtype, np.floating):
        raise UserError(f'{where}: layer {name} {part} has dtype '
                        f'{array.dtype}, expected floating point')
      if not np.all(np.isfinite(array)):
        raise UserError(f'{where}: layer {name} {part} holds NaN or inf')
      checked[name][part] = array.astype(np.float32, copy=False)
  return checked


def save_weights(path: str, params: dict, meta: dict) -> None:
  """Writes a converted file atomically, with the umask's permissions.

  Args:
    path: output `.npz` path; its folder is created.
    params: the 16 layers (checked before writing).
    meta: metadata (see module docstring); format fields are added.
  """
  params = check_params(params, f'weights for {path}')
  meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
  arrays = {f'{name}/{part}': array for name, layer in params.items()
            for part, array in layer.items()}
  arrays['meta'] = np.array(json.dumps(meta))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # To a file object, np.savez appends no '.npz' to the name.
  files.atomic_write(path, lambda file: np.savez(file, **arrays))


def load_weights(path: str):
  """Reads and checks a converted weights file.

  Returns:
    (params, meta): params {layer: {'kernel', 'bias'}} float32 numpy arrays,
    meta the metadata dict.
  Raises:
    UserError: missing, unreadable, truncated or wrong file, missing layer,
      wrong shape or dtype.
  """
  where = f'weights file {path}'
  if not os.path.exists(path):
    raise UserError(f'{where}: file not found')
  if os.path.isdir(path):
    raise UserError(f'{where}: is a directory')
  try:
    with np.load(path, allow_pickle=False) as data:
      if 'meta' not in data.files:
        raise UserError(f'{where}: not an nst_jax weights file (no meta); '
                        'convert it with python -m nst_jax.weights convert')
      meta = json.loads(str(data['meta']))
      params = {}
      for key in data.files:
        if '/' in key:
          name, part = key.split('/', 1)
          params.setdefault(name, {})[part] = data[key]
  except UserError:
    raise
  except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError,
          json.JSONDecodeError) as error:
    raise UserError(f'{where}: not a readable nst_jax weights file '
                    f'({type(error).__name__}: {error})'.splitlines()[0]
                    ) from None
  if meta.get('format') != FORMAT:
    raise UserError(f'{where}: not an nst_jax weights file (format '
                    f'{meta.get("format")!r})')
  if meta.get('preprocessing') not in vgg.PREPROCESSING:
    raise UserError(f'{where}: unknown preprocessing '
                    f'{meta.get("preprocessing")!r}')
  return check_params(params, where), meta
