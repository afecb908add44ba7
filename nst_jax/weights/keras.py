"""Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` -> params.

Layout (the Keras HDF5 weights file): root attribute `layer_names` (an input layer, then
`block{b}_conv{l}` and `block{b}_pool`); each conv group has attribute
`weight_names` = [`block{b}_conv{l}_W_1:0`, `block{b}_conv{l}_b_1:0`] naming
its datasets: kernel (3, 3, Cin, Cout) HWIO, bias (Cout,). The first layer's
input channels are B, G, R (Caffe preprocessing). Groups are looked up by
name, never by position.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from nst_jax.core import vgg
from nst_jax.errors import UserError
from nst_jax.weights.fileformat import check_params, file_sha256


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _dataset(group, name):
  """A dataset by its stored name; h5py may read 'a/b:0' as a nested path."""
  if name in group:
    return group[name]
  # Some writers put the name under a sub-group of the layer's name.
  for child in group.values():
    if isinstance(child, h5py.Group) and name in child:
      return child[name]
  return None


def convert_keras(path: str):
  """Reads the Keras VGG19 notop file.

  Args:
    path: the `.h5` file.
  Returns:
    (params, meta) with preprocessing 'caffe'.
  Raises:
    UserError: not HDF5, truncated, another model, missing or misshapen layer.
  """
  where = f'Keras weights file {path}'
  if not os.path.isfile(path):
    raise UserError(f'{where}: file not found')
  try:
    with h5py.File(path, 'r') as f:
      root = f['model_weights'] if 'model_weights' in f else f
      names = [_text(n) for n in root.attrs.get('layer_names', [])]
      if 'block1_conv1' not in names and 'block1_conv1' not in root:
        raise UserError(f'{where}: not a VGG19 weights file (no layer '
                        'block1_conv1; layers: '
                        + (', '.join(names[:5]) or 'none') + ')')
      params = {}
      for name in vgg.CONV_LAYERS:
        block, index = name[4], name.split('_')[1]
        group_name = f'block{block}_conv{index}'
        if group_name not in root:
          raise UserError(f'{where}: missing layer {group_name}')
        group = root[group_name]
        weight_names = [_text(n) for n in group.attrs.get('weight_names', [])]
        if len(weight_names) != 2:
          weight_names = [f'{group_name}_W_1:0', f'{group_name}_b_1:0']
        arrays = []
        for weight_name in weight_names:
          dataset = _dataset(group, weight_name)
          if dataset is None:
            raise UserError(f'{where}: layer {group_name} has no dataset '
                            f'{weight_name}')
          arrays.append(np.asarray(dataset))
        params[name] = {'kernel': arrays[0], 'bias': arrays[1]}
  except UserError:
    raise
  except (OSError, KeyError, ValueError) as error:
    raise UserError(f'{where}: not a readable HDF5 file, or truncated '
                    f'({error})'.splitlines()[0]) from None
  params = check_params(params, where)
  meta = {'source': 'keras', 'source_file': os.path.basename(path),
          'source_sha256': file_sha256(path), 'preprocessing': 'caffe',
          'normalized': False, 'random': False, 'seed': None}
  return params, meta
