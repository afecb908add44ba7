"""VGG19 weights: conversion, download, random and normalised networks.

Example::

  params, meta = weights.convert_keras('vgg19_..._notop.h5')
  weights.save_weights('weights/vgg19_keras.npz', params, meta)
  params, meta = weights.load_weights('weights/vgg19_keras.npz')

The command line is `python -m nst_jax.weights` (see weights/README.md).
"""

from __future__ import annotations

import os

import numpy as np

from nst_jax.core import vgg
from nst_jax.errors import UserError
from nst_jax.weights.fetch import DEFAULT_OUTPUT, KERAS_MD5, KERAS_URL, fetch
from nst_jax.weights.fileformat import file_sha256, load_weights, save_weights
from nst_jax.weights.keras import convert_keras
from nst_jax.weights.normalize import normalize
from nst_jax.weights.torchvision import convert_torchvision

__all__ = ['convert_keras', 'convert_torchvision', 'fetch', 'file_sha256',
           'load_weights',
           'normalize', 'random_weights', 'resolve_weights', 'save_weights',
           'KERAS_URL', 'KERAS_MD5']

RANDOM_WARNING = ('using RANDOM, UNTRAINED VGG19 weights (seed {seed}): '
                  'results are much weaker than with pretrained ones')


def random_weights(seed: int = 0):
  """Seeded He-normal VGG19 (std sqrt(2 / fan_in), zero biases), offline.

  He, Wang and Hopcroft (NIPS 2016) show an untrained VGG with well-scaled
  random weights still transfers texture. Everything made with these says so.

  Returns:
    (params, meta) with meta['random'] = True and Caffe preprocessing.
  """
  # NumPy's generator: fast for 20M values and the same on every platform.
  rng = np.random.default_rng(seed)
  params = {}
  for name, (cin, cout) in vgg.CONV_SHAPES.items():
    fan_in = 9 * cin
    kernel = rng.standard_normal((3, 3, cin, cout), np.float32)
    params[name] = {'kernel': kernel * np.float32(np.sqrt(2.0 / fan_in)),
                    'bias': np.zeros((cout,), np.float32)}
  meta = {'source': 'random', 'source_file': None, 'source_sha256': None,
          'preprocessing': 'caffe', 'normalized': False, 'random': True,
          'seed': int(seed)}
  return params, meta


AUTO_FILES = ('vgg19_keras.npz', 'vgg19_torchvision.npz')


def default_weights_dir() -> str:
  """$NST_JAX_WEIGHTS_DIR, else ./weights, else the checkout's weights/."""
  if os.environ.get('NST_JAX_WEIGHTS_DIR'):
    return os.environ['NST_JAX_WEIGHTS_DIR']
  checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), 'weights')
  return 'weights' if os.path.isdir('weights') or not os.path.isdir(
      checkout) else checkout


def resolve_weights(source: str, weights_dir: str = None,
                    allow_random_fallback: bool = False, log=print):
  """The weights a run asked for: a file, 'random' or 'auto'.

  'auto' uses `weights_dir/vgg19_keras.npz` or `vgg19_torchvision.npz`;
  failing that it downloads the Keras file (unless the environment sets
  NST_JAX_OFFLINE); failing that it falls back to random weights when
  allowed, loudly, or stops with the command that gets the weights.

  Returns:
    (params, meta, path) where path is None for random weights.
  """
  weights_dir = weights_dir or default_weights_dir()
  if source == 'random':
    log(RANDOM_WARNING.format(seed=0))
    return (*random_weights(0), None)
  if source != 'auto':
    return (*load_weights(source), source)
  for name in AUTO_FILES:
    path = os.path.join(weights_dir, name)
    if os.path.exists(path):
      return (*load_weights(path), path)
  reason = 'offline (NST_JAX_OFFLINE is set)'
  if not os.environ.get('NST_JAX_OFFLINE'):
    path = os.path.join(weights_dir, AUTO_FILES[0])
    try:
      fetch(path, timeout=15, log=log)
      return (*load_weights(path), path)
    except UserError as error:
      reason = str(error)
  if allow_random_fallback:
    log(f'no pretrained VGG19 weights ({reason}); falling back to '
        + RANDOM_WARNING.format(seed=0))
    return (*random_weights(0), None)
  raise UserError(
      f'config.weights: no pretrained VGG19 weights in {weights_dir}/ and '
      f'they could not be downloaded ({reason}): run "python -m '
      'nst_jax.weights fetch" on a machine with internet, or copy a '
      f'converted file to {os.path.join(weights_dir, AUTO_FILES[0])}, or use '
      '--config.weights=random')
