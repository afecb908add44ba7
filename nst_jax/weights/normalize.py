"""Gatys et al.'s normalised VGG19.

"We normalized the network by scaling the weights such that the mean
activation of each convolutional filter over images and positions is equal
to one." Layer by layer in forward order, each filter's kernel and bias are
divided by its mean rectified activation over the images, computed with the
earlier layers already rescaled. Because relu(a / m) = relu(a) / m for m > 0,
rescaling a layer just divides its (already computed) output, so one forward
pass does it all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import vgg


@jax.jit
def _normalize(params, network_inputs):
  activations = list(network_inputs)
  scaled = {}
  dead = jnp.zeros((), jnp.int32)
  for name in vgg.layers_to_run(['conv5_4']):
    if name.startswith('pool'):
      activations = [vgg.avg_pool(x) for x in activations]
      continue
    layer = params[name]
    kernel, bias = layer['kernel'], layer['bias']
    activations = [vgg.conv_relu(x, kernel, bias, vgg.flip_kernel(kernel))
                   for x in activations]
    total = sum(jnp.sum(x, axis=(0, 1, 2)) for x in activations)
    positions = sum(x.shape[1] * x.shape[2] for x in activations)
    mean = total / positions
    active = mean > 0
    dead = dead + jnp.sum(~active)
    scale = jnp.where(active, 1.0 / jnp.where(active, mean, 1.0), 1.0)
    scaled[name] = {'kernel': kernel * scale, 'bias': bias * scale}
    activations = [x * scale for x in activations]
  return scaled, dead


def normalize(params: dict, meta: dict, images) -> tuple:
  """Rescales each filter so its mean activation over `images` is 1.

  Args:
    params: {layer: {'kernel', 'bias'}}.
    meta: the weights' metadata (its 'preprocessing' is applied).
    images: list of RGB float arrays (H, W, 3) in [0, 255], any sizes.
  Returns:
    (params, meta) with meta['normalized'] = True and meta['dead_filters']
    counting filters never active on the images (left unscaled).
  """
  inputs = [vgg.preprocess(jnp.asarray(image, jnp.float32),
                           meta['preprocessing'])[None] for image in images]
  scaled, dead = _normalize(
      jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params),
      inputs)
  scaled = jax.tree_util.tree_map(np.asarray, scaled)
  return scaled, dict(meta, normalized=True, dead_filters=int(dead))
