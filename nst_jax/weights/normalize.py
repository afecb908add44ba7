"""Gatys et al.'s normalised VGG19.

"We normalized the network by scaling the weights such that the mean
activation of each convolutional filter over images and positions is equal
to one." Layer by layer in forward order, each filter's kernel and bias are
divided by its mean rectified activation, computed with the earlier layers
already rescaled. Since VGG has only ReLUs and (average) pooling between
convolutions, the next layer sees scaled inputs, which its own rescaling
then absorbs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import vgg


def normalize(params: dict, meta: dict, images) -> tuple:
  """Rescales each filter so its mean activation over `images` is 1.

  Args:
    params: {layer: {'kernel', 'bias'}}.
    meta: the weights' metadata (its 'preprocessing' is applied).
    images: list of RGB float arrays (H, W, 3) in [0, 255].
  Returns:
    (params, meta) with meta['normalized'] = True and meta['dead_filters']
    counting filters never active on the images (left unscaled).
  """
  params = {name: {part: np.asarray(array, np.float32)
                   for part, array in layer.items()}
            for name, layer in params.items()}
  inputs = [vgg.preprocess(jnp.asarray(image, jnp.float32),
                           meta['preprocessing'])[None] for image in images]
  features = jax.jit(vgg.extract_features, static_argnames=('layers',
                                                            'pooling'))
  dead = 0
  for name in vgg.CONV_LAYERS:
    variables = {'params': params}
    total = 0.0
    positions = 0
    for network_input in inputs:
      output = features(variables, network_input, layers=(name,),
                        pooling='avg')[name]
      total = total + np.asarray(jnp.sum(output, axis=(0, 1, 2)), np.float64)
      positions += output.shape[1] * output.shape[2]
    mean = total / positions
    active = mean > 0
    dead += int(np.sum(~active))
    scale = np.where(active, 1.0 / np.where(active, mean, 1.0), 1.0)
    params[name] = {'kernel': params[name]['kernel'] * scale.astype(np.float32),
                    'bias': params[name]['bias'] * scale.astype(np.float32)}
  return params, dict(meta, normalized=True, dead_filters=dead)
