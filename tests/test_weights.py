"""Weights: synthetic files in the exact Keras and torchvision layouts."""

import functools
import hashlib
import http.server
import io
import os
import pickle
import random
import subprocess
import sys
import threading
import types
import zipfile

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import weights
from nst_jax.core import vgg
from nst_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


@pytest.fixture(scope='module')
def reference_params():
  """Distinct small values in every real shape (float32, HWIO)."""
  rng = np.random.default_rng(42)
  return {name: {'kernel': rng.normal(0, 0.05, (3, 3, cin, cout)).astype(
      np.float32), 'bias': rng.normal(0, 0.1, cout).astype(np.float32)}
          for name, (cin, cout) in vgg.CONV_SHAPES.items()}


def keras_group(name):
  block, index = name[4], name.split('_')[1]
  return f'block{block}_conv{index}'


def write_keras_h5(path, params, skip=None, reshape=None, dtype=None):
  """The Keras notop file's layout; groups written in a shuffled order."""
  layer_names = ['input_1']
  for block, count in enumerate((2, 2, 4, 4, 4), start=1):
    layer_names += [f'block{block}_conv{i}' for i in range(1, count + 1)]
    layer_names.append(f'block{block}_pool')
  order = list(params)
  random.Random(0).shuffle(order)
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = np.array([n.encode() for n in layer_names])
    f.attrs['backend'] = b'tensorflow'
    f.attrs['keras_version'] = b'2.0.8'
    for name in ['input_1'] + [f'block{b}_pool' for b in range(1, 6)]:
      f.create_group(name).attrs['weight_names'] = np.array([], dtype='S1')
    for name in order:
      group_name = keras_group(name)
      if group_name == skip:
        continue
      group = f.create_group(group_name)
      names = [f'{group_name}_W_1:0', f'{group_name}_b_1:0']
      group.attrs['weight_names'] = np.array([n.encode() for n in names])
      kernel = params[name]['kernel']
      if group_name == reshape:
        kernel = kernel[..., :-1]
      if dtype is not None:
        kernel = kernel.astype(dtype)
      group.create_dataset(names[0], data=kernel)
      group.create_dataset(names[1], data=params[name]['bias'])


class _FakeStorage:
  """Pickled by reference as torch.FloatStorage (never imported here)."""


_FakeStorage.__module__ = 'torch'
_FakeStorage.__qualname__ = _FakeStorage.__name__ = 'FloatStorage'


def _rebuild_tensor_v2():
  pass


_rebuild_tensor_v2.__module__ = 'torch._utils'
_rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'


class _Storage:

  def __init__(self, key, array):
    self.key, self.array = key, array


class _Tensor:

  def __init__(self, key, array):
    self.key, self.array = key, array

  def __reduce__(self):
    import collections  # pylint: disable=g-import-not-at-top
    stride = tuple(s // self.array.itemsize for s in self.array.strides)
    return (_rebuild_tensor_v2, (_Storage(self.key, self.array), 0,
                                 self.array.shape, stride, False,
                                 collections.OrderedDict()))


class _TorchPickler(pickle.Pickler):

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ('storage', _FakeStorage, obj.key, 'cpu', obj.array.size)
    return None


def write_torch_zip(path, state, payload=None):
  """torch.save's zip layout: archive/data.pkl, archive/data/N, version."""
  tensors = {}
  objects = {}
  for key, array in state.items():
    tensor = _Tensor(str(len(tensors)), np.ascontiguousarray(array))
    tensors[tensor.key] = tensor.array
    objects[key] = tensor
  buffer = io.BytesIO()
  # Pickling by reference imports the named module: stand-ins for torch and
  # torch._utils, only while dumping (real torch, if installed, is restored).
  fake_torch = types.ModuleType('torch')
  fake_torch.FloatStorage = _FakeStorage
  fake_utils = types.ModuleType('torch._utils')
  fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # pylint: disable=protected-access
  saved = {name: sys.modules.get(name) for name in ('torch', 'torch._utils')}
  sys.modules.update({'torch': fake_torch, 'torch._utils': fake_utils})
  try:
    _TorchPickler(buffer, protocol=2).dump(payload if payload is not None
                                           else _OrderedDict(objects))
  finally:
    for name, module in saved.items():
      if module is None:
        del sys.modules[name]
      else:
        sys.modules[name] = module
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', buffer.getvalue())
    archive.writestr('archive/byteorder', 'little')
    for key, array in tensors.items():
      archive.writestr(f'archive/data/{key}', array.tobytes())
    archive.writestr('archive/version', '3\n')


class _OrderedDict(dict):
  """Pickles as collections.OrderedDict, like a torch state dict."""

  def __reduce__(self):
    import collections  # pylint: disable=g-import-not-at-top
    return (collections.OrderedDict, (), None, None, iter(self.items()))


def torchvision_state(params):
  """A torchvision VGG19 state dict (OIHW) of the same network, RGB input."""
  state = {}
  for name, index in zip(vgg.CONV_LAYERS, CONV_INDICES):
    kernel = params[name]['kernel']
    state[f'features.{index}.weight'] = np.transpose(kernel, (3, 2, 0, 1))
    state[f'features.{index}.bias'] = params[name]['bias']
  state['classifier.0.weight'] = np.zeros((4, 8), np.float32)
  state['classifier.0.bias'] = np.zeros((4,), np.float32)
  return state


@pytest.fixture(scope='module')
def keras_file(tmp_path_factory, reference_params):
  path = tmp_path_factory.mktemp('keras') / 'vgg19_notop.h5'
  write_keras_h5(path, reference_params)
  return path


def test_keras_conversion_exact(keras_file, reference_params):
  params, meta = weights.convert_keras(str(keras_file))
  for name in vgg.CONV_LAYERS:
    np.testing.assert_array_equal(params[name]['kernel'],
                                  reference_params[name]['kernel'])
    np.testing.assert_array_equal(params[name]['bias'],
                                  reference_params[name]['bias'])
  assert meta['source'] == 'keras' and meta['preprocessing'] == 'caffe'
  assert meta['source_sha256'] == hashlib.sha256(
      keras_file.read_bytes()).hexdigest()


def test_torchvision_conversion_transposes_oihw(tmp_path, reference_params):
  state = torchvision_state(reference_params)
  path = tmp_path / 'vgg19.pth'
  write_torch_zip(path, state)
  params, meta = weights.convert_torchvision(str(path))
  kernel = params['conv2_1']['kernel']
  oihw = state['features.5.weight']
  assert kernel.shape == (3, 3, 64, 128)
  for h, w, i, o in [(0, 1, 2, 3), (2, 0, 63, 127), (1, 1, 10, 0)]:
    assert kernel[h, w, i, o] == oihw[o, i, h, w]
  np.testing.assert_array_equal(params['conv5_4']['bias'],
                                reference_params['conv5_4']['bias'])
  assert meta['source'] == 'torchvision'
  assert meta['preprocessing'] == 'torchvision'


def test_keras_bgr_and_torchvision_rgb_see_the_same_image(
    tmp_path, reference_params):
  """Keras' first layer reads B,G,R; torchvision's R,G,B. Built as the same
  network (first-layer input channels reversed, and the preprocessing folded
  into that layer), both give the same features of one RGB image."""
  keras_path = tmp_path / 'k.h5'
  write_keras_h5(keras_path, reference_params)
  keras_params, keras_meta = weights.convert_keras(str(keras_path))
  # torchvision input t = (x/255 - mean)/std, caffe input c = x[::-1] - m.
  # Choose W_t so that conv(t, W_t) + b_t == conv(c, W_k) + b_k for every x:
  # W_t[..., rgb] = W_k[..., bgr] * 255 * std, with the bias absorbing means.
  # (Exact only away from the zero-padded border, so compare the centre.)
  mean = np.array(vgg.TORCHVISION_MEAN)
  std = np.array(vgg.TORCHVISION_STD)
  caffe_mean = np.array(vgg.CAFFE_MEAN_BGR)[::-1]  # as RGB
  kernel_rgb = keras_params['conv1_1']['kernel'][:, :, ::-1, :]
  kernel_t = kernel_rgb * (255 * std)[None, None, :, None]
  bias_t = keras_params['conv1_1']['bias'] + np.einsum(
      'hwio,i->o', kernel_rgb, 255 * mean - caffe_mean)
  torch_params = dict(reference_params)
  torch_params['conv1_1'] = {'kernel': kernel_t.astype(np.float32),
                             'bias': bias_t.astype(np.float32)}
  torch_path = tmp_path / 't.pth'
  write_torch_zip(torch_path, torchvision_state(torch_params))
  torch_params, torch_meta = weights.convert_torchvision(str(torch_path))
  image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3))
  features = []
  for params, meta in ((keras_params, keras_meta), (torch_params,
                                                    torch_meta)):
    network_input = vgg.preprocess(jnp.asarray(image, jnp.float32),
                                   meta['preprocessing'])
    features.append(vgg.extract_features({'params': params},
                                         network_input[None],
                                         ('conv1_1',))['conv1_1'][0])
  np.testing.assert_allclose(features[0][1:-1, 1:-1],
                             features[1][1:-1, 1:-1], rtol=1e-3, atol=1e-3)


def test_malicious_pickle_refused_without_running(tmp_path, reference_params):
  marker = tmp_path / 'PWNED'

  class Evil:

    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  path = tmp_path / 'evil.pth'
  write_torch_zip(path, {}, payload={'features.0.weight': Evil()})
  with pytest.raises(UserError, match='refuses to load pickle global '
                     'posix.system|refused to load it safely'):
    weights.convert_torchvision(str(path))
  assert not marker.exists()


@pytest.mark.parametrize('kind, match', [
    ('missing', 'missing layer block3_conv2'),
    ('shape', r'conv4_1 kernel has shape \(3, 3, 256, 511\), expected '
     r'\(3, 3, 256, 512\)'),
    ('dtype', 'conv1_1 kernel has dtype int32'),
])
def test_keras_bad_layers(tmp_path, reference_params, kind, match):
  path = tmp_path / 'bad.h5'
  write_keras_h5(path, reference_params,
                 skip='block3_conv2' if kind == 'missing' else None,
                 reshape='block4_conv1' if kind == 'shape' else None,
                 dtype=np.int32 if kind == 'dtype' else None)
  with pytest.raises(UserError, match=match) as error:
    weights.convert_keras(str(path))
  assert str(path) in str(error.value)


def test_truncated_and_foreign_hdf5(tmp_path, keras_file):
  truncated = tmp_path / 'cut.h5'
  truncated.write_bytes(keras_file.read_bytes()[:len(keras_file.read_bytes())
                                                // 2])
  with pytest.raises(UserError, match='truncated|not a VGG19'):
    weights.convert_keras(str(truncated))
  other = tmp_path / 'resnet.h5'
  with h5py.File(other, 'w') as f:
    f.attrs['layer_names'] = np.array([b'conv1', b'res2a_branch2a'])
    f.create_group('conv1')
  with pytest.raises(UserError, match='not a VGG19 weights file'):
    weights.convert_keras(str(other))
  with pytest.raises(UserError, match='missing features.0.weight'):
    path = tmp_path / 'resnet.pth'
    write_torch_zip(path, {'conv1.weight': np.zeros((2, 3, 3, 3),
                                                    np.float32)})
    weights.convert_torchvision(str(path))


def test_save_load_round_trip_and_errors(tmp_path, reference_params):
  path = tmp_path / 'w.npz'
  weights.save_weights(str(path), reference_params,
                       {'source': 'keras', 'preprocessing': 'caffe'})
  assert os.listdir(tmp_path) == ['w.npz']
  params, meta = weights.load_weights(str(path))
  np.testing.assert_array_equal(params['conv3_3']['kernel'],
                                reference_params['conv3_3']['kernel'])
  assert meta['format'] == 'nst_jax-vgg19'
  broken = dict(reference_params)
  del broken['conv5_4']
  np.savez(tmp_path / 'partial.npz', meta=np.array(
      '{"format": "nst_jax-vgg19", "preprocessing": "caffe"}'),
           **{f'{n}/{p}': a for n, l in broken.items() for p, a in l.items()})
  with pytest.raises(UserError, match='missing layer conv5_4'):
    weights.load_weights(str(tmp_path / 'partial.npz'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(UserError, match='junk.npz'):
    weights.load_weights(str(tmp_path / 'junk.npz'))


def test_random_weights_seeded():
  a, meta = weights.random_weights(0)
  b, _ = weights.random_weights(0)
  c, _ = weights.random_weights(1)
  np.testing.assert_array_equal(a['conv2_1']['kernel'], b['conv2_1']['kernel'])
  assert not np.array_equal(a['conv2_1']['kernel'], c['conv2_1']['kernel'])
  assert meta['random'] is True
  # He-normal: std sqrt(2 / fan_in).
  std = float(np.std(a['conv3_1']['kernel']))
  assert abs(std / np.sqrt(2 / (9 * 128)) - 1) < 0.01


def test_normalize_sets_mean_activation_to_one(reference_params):
  params, meta = weights.random_weights(3)
  images = [np.random.default_rng(i).uniform(0, 255, (32, 32, 3))
            for i in range(2)]
  normalized, new_meta = weights.normalize(params, meta, images)
  assert new_meta['normalized'] is True
  inputs = [vgg.preprocess(jnp.asarray(x, jnp.float32), 'caffe')[None]
            for x in images]
  for name in ('conv1_1', 'conv2_2', 'conv3_1'):
    means = np.mean([np.asarray(vgg.extract_features(
        {'params': normalized}, x, (name,))[name]).mean(axis=(0, 1, 2))
                     for x in inputs], axis=0)
    active = means > 0
    assert active.sum() > 0.5 * len(means)
    np.testing.assert_allclose(means[active], 1.0, rtol=1e-3)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):
    pass


@pytest.fixture
def local_server(tmp_path, keras_file):
  """Serves the synthetic Keras file on 127.0.0.1 (an ephemeral port)."""
  served = tmp_path / 'served'
  served.mkdir()
  (served / 'vgg19.h5').write_bytes(keras_file.read_bytes())
  handler = functools.partial(_QuietHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


def test_fetch_from_local_server(tmp_path, keras_file, local_server):
  md5 = hashlib.md5(keras_file.read_bytes()).hexdigest()
  out = tmp_path / 'w' / 'vgg19_keras.npz'
  weights.fetch(str(out), url=f'{local_server}/vgg19.h5', md5=md5,
                log=lambda _: None)
  params, meta = weights.load_weights(str(out))
  assert meta['source'] == 'keras' and params['conv1_1']['kernel'].shape == (
      3, 3, 3, 64)
  assert os.listdir(out.parent) == ['vgg19_keras.npz']


def test_fetch_bad_checksum_or_404_leaves_nothing(tmp_path, local_server):
  out = tmp_path / 'w' / 'vgg19_keras.npz'
  with pytest.raises(UserError, match='MD5 .* does not match'):
    weights.fetch(str(out), url=f'{local_server}/vgg19.h5', md5='0' * 32,
                  log=lambda _: None)
  assert os.listdir(out.parent) == []
  with pytest.raises(UserError, match='HTTP 404'):
    weights.fetch(str(out), url=f'{local_server}/missing.h5', md5='0' * 32,
                  log=lambda _: None)
  assert os.listdir(out.parent) == []


def test_auto_offline_message_and_fallback(tmp_path):
  with pytest.raises(UserError, match='nst_jax.weights fetch'):
    weights.resolve_weights('auto', weights_dir=str(tmp_path),
                            log=lambda _: None)
  messages = []
  _, meta, path = weights.resolve_weights(
      'auto', weights_dir=str(tmp_path), allow_random_fallback=True,
      log=messages.append)
  assert meta['random'] and path is None
  assert any('RANDOM' in m for m in messages)


def test_cli_convert_and_error(tmp_path, keras_file):
  env = dict(os.environ, NST_JAX_OFFLINE='1')
  out = tmp_path / 'out.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'nst_jax.weights', 'convert', '--source=keras',
       str(keras_file), str(out)], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert weights.load_weights(str(out))[1]['source'] == 'keras'
  result = subprocess.run(
      [sys.executable, '-m', 'nst_jax.weights', 'convert',
       '--source=torchvision', str(keras_file), str(tmp_path / 'x.npz')],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.npz').exists()
