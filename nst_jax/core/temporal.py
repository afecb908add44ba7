r"""Ruder, Dosovitskiy and Brox's temporal loss ("Artistic style transfer
for videos", 2016, arXiv:1604.08610), in JAX.

For the frame x being optimised, a reference w (an earlier stylised frame
warped into this one along the optical flow) and the flow's certainty
c in [0, 1] per pixel::

  L_temporal(x, w, c) = 1/D sum_k c_k (x_k - w_k)^2,     D = H W 3

over every pixel value k in the optimiser's pixel space (RGB 0-255), the
certainty shared by a pixel's three values. Frame after frame
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

import jax
import jax.numpy as jnp


def temporal_loss(pixels: jax.Array, warped: jax.Array,
                  certainty: jax.Array) -> jax.Array:
  """1/D sum_k c_k (x_k - w_k)^2 for one frame.

  Args:
    pixels: (H, W, 3) the frame x.
    warped: (H, W, 3) the reference w.
    certainty: (H, W) c in [0, 1].
  Returns:
    A scalar (float32).
  """
  difference = pixels.astype(jnp.float32) - warped.astype(jnp.float32)
  return jnp.mean(certainty[..., None] * jnp.square(difference))


def fixed_references_loss(pixels, warped, certainty) -> jax.Array:
  """The sum of `temporal_loss` over fixed references (J, H, W, 3) with
  certainties (J, H, W): the long-term terms of sequential mode."""
  return jnp.sum(jax.vmap(temporal_loss, in_axes=(None, 0, 0))(
      pixels, warped, certainty))


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
                    certainty: jax.Array) -> jax.Array:
  """sum_{i>=1} L_temporal(x_i, warp(x_{i-1}, f_i), c_i) over a window.

  Args:
    frames: (N, H, W, 3).
    flows: (N - 1, H, W, 2): f_i, the flow from frame i to frame i - 1.
    certainty: (N - 1, H, W).
  """
  if frames.shape[0] < 2:
    return jnp.zeros((), jnp.float32)
  warped = jax.vmap(warp)(frames[:-1], flows)
  return jnp.sum(jax.vmap(temporal_loss)(frames[1:], warped, certainty))
