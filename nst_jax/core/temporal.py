r"""Ruder, Dosovitskiy and Brox's temporal loss ("Artistic style transfer
for videos", 2016, arXiv:1604.08610), in JAX.

For the frame x being optimised, a reference w (an earlier stylised frame
warped into this one along the optical flow) and the flow's certainty
c in [0, 1] per pixel::

  L_temporal(x, w, c) = 1/D sum_k c_k (x_k - w_k)^2,     D = H W 3

over every pixel value k in the optimiser's pixel space (RGB 0-255), the
certainty shared by a pixel's three values.

With a blur sigma > 0 the difference is low-passed before it is squared::

  L_temporal(x, w, c) = 1/D sum_k (G_sigma * (sqrt(c) (x - w)))_k^2

G_sigma a normalised Gaussian (radius ceil(3 sigma), edges replicated)
applied to each channel. The reference is an earlier result resampled
along the flow; where the flow magnifies (a zoom, a camera moving in) its
fine texture is stretched frame after frame, and the plain loss holds each
frame to that stretched, blurred texture. Low-passed, the loss holds the
coarse picture in place (the strokes' positions and colours) and leaves the
finest scale free for the style term to keep painting. sigma = 0 is the
plain loss exactly. Frame after frame
(`video.mode='sequential'`) the references are fixed: the previous
stylised frames at each of `video.long_term`'s offsets, each with its own
certainty (`nst_jax.io.flow.long_term_weights`), and the loss is their sum.

Optimised jointly (`video.mode='joint'`), a window of N frames x_0..x_{N-1}
is one problem: each frame's content and style terms, plus the temporal
terms between neighbours, L_temporal(x_i, warp(x_{i-1}, f_i), c_i) for
i = 1..N-1, whose gradient reaches both frames through the bilinear warp,
and for x_0 the fixed previous window's last frame, already warped.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_kernel(sigma: float) -> np.ndarray:
  """The normalised 1-D Gaussian of `sigma` pixels, radius ceil(3 sigma)."""
  radius = max(1, math.ceil(3 * sigma))
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-0.5 * (offsets / sigma)**2)
  return (kernel / kernel.sum()).astype(np.float32)


def low_pass(image: jax.Array, sigma: float) -> jax.Array:
  """G_sigma * image per channel, separable, edges replicated.

  Args:
    image: (H, W, C).
    sigma: static, > 0.
  """
  kernel = jnp.asarray(gaussian_kernel(sigma))
  radius = kernel.shape[0] // 2
  channels = image.shape[-1]
  blurred = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)),
                    mode='edge')[None]
  for shape in ((kernel.shape[0], 1), (1, kernel.shape[0])):  # rows, columns
    blurred = jax.lax.conv_general_dilated(
        blurred, jnp.broadcast_to(kernel.reshape(shape + (1, 1)),
                                 shape + (1, channels)),
        window_strides=(1, 1), padding='VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST)
  return blurred[0]


def temporal_loss(pixels: jax.Array, warped: jax.Array,
                  certainty: jax.Array, blur: float = 0.0) -> jax.Array:
  """1/D sum_k c_k (x_k - w_k)^2 for one frame, or with `blur` > 0
  1/D sum_k (G_blur * (sqrt(c) (x - w)))_k^2.

  Args:
    pixels: (H, W, 3) the frame x.
    warped: (H, W, 3) the reference w.
    certainty: (H, W) c in [0, 1].
    blur: static: the low-pass filter's sigma in pixels (0: none).
  Returns:
    A scalar (float32).
  """
  difference = pixels.astype(jnp.float32) - warped.astype(jnp.float32)
  if not blur:
    return jnp.mean(certainty[..., None] * jnp.square(difference))
  weighted = jnp.sqrt(certainty)[..., None] * difference
  return jnp.mean(jnp.square(low_pass(weighted, blur)))


def fixed_references_loss(pixels, warped, certainty,
                          blur: float = 0.0) -> jax.Array:
  """The sum of `temporal_loss` over fixed references (J, H, W, 3) with
  certainties (J, H, W): the long-term terms of sequential mode."""
  return jnp.sum(jax.vmap(
      lambda w, c: temporal_loss(pixels, w, c, blur))(warped, certainty))


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward warping: out[y, x] = image[y + dy, x + dx], bilinear, the
  border's values beyond the edge; differentiable in `image`.

  Args:
    image: (H, W, C).
    flow: (H, W, 2) of (dx, dy) in pixels, from the output frame to
      `image`'s frame (`nst_jax.io.flow`'s convention).
  """
  height, width = image.shape[:2]
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing='ij')
  coordinates = [ys + flow[..., 1], xs + flow[..., 0]]
  return jax.vmap(
      lambda channel: jax.scipy.ndimage.map_coordinates(
          channel, coordinates, order=1, mode='nearest'),
      in_axes=-1, out_axes=-1)(image.astype(jnp.float32))


def neighbours_loss(frames: jax.Array, flows: jax.Array,
                    certainty: jax.Array, blur: float = 0.0) -> jax.Array:
  """sum_{i>=1} L_temporal(x_i, warp(x_{i-1}, f_i), c_i) over a window.

  Args:
    frames: (N, H, W, 3).
    flows: (N - 1, H, W, 2): f_i, the flow from frame i to frame i - 1.
    certainty: (N - 1, H, W).
    blur: static, as in `temporal_loss`.
  """
  if frames.shape[0] < 2:
    return jnp.zeros((), jnp.float32)
  warped = jax.vmap(warp)(frames[:-1], flows)
  return jnp.sum(jax.vmap(lambda x, w, c: temporal_loss(x, w, c, blur))(
      frames[1:], warped, certainty))
