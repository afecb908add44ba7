r"""Winograd convolution for 3x3 SAME, stride-1 layers (Lavin and Gray, 2016).

A 3x3 convolution computes each output from 9 multiply-adds per input
channel. Winograd's minimal filtering algorithm F(m x m, 3 x 3) computes an
m x m output tile from an (m+2) x (m+2) input tile ``d`` with

.. math::

  Y = A^T \left[ (G g G^T) \odot (B^T d B) \right] A

where ``g`` is the 3x3 kernel. Summed over input channels, the elementwise
product becomes (m+2)^2 independent matrix products (tiles x C_in) @ (C_in x
C_out), so the multiply-adds per output pixel drop from 9 to (m+2)^2 / m^2:
2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3). The transforms are
additions over a few neighbouring values, cheap next to the matrix products
once a layer has 64 or more channels. Rounding: the F(2x2) transforms use only
0, +-1/2 and +-1, exact in binary, so float32 results round about as a direct
convolution's do; F(4x4)'s larger coefficients (4, 5, 1/6, 1/24) round
somewhat more.

The transformed kernel ``U = G g G^T`` is computed once per weights
(`transform_kernel`), like the pre-flipped kernels of `nst_jax.core.vgg`.

Example::

  u = winograd.transform_kernel(kernel, 'F2')      # (4, 4, C_in, C_out)
  y = winograd.conv(x, u, 'F2')                     # == lax 3x3 SAME conv
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Interpolation points 0, +-1 (F2) and 0, +-1, +-2 (F4), Lavin and Gray's
# matrices. Each entry: (B^T, G, A^T).
TILES = {
    'F2': (np.array([[1, 0, -1, 0],
                     [0, 1, 1, 0],
                     [0, -1, 1, 0],
                     [0, 1, 0, -1]], np.float64),
           np.array([[1, 0, 0],
                     [.5, .5, .5],
                     [.5, -.5, .5],
                     [0, 0, 1]], np.float64),
           np.array([[1, 1, 1, 0],
                     [0, 1, -1, -1]], np.float64)),
    'F4': (np.array([[4, 0, -5, 0, 1, 0],
                     [0, -4, -4, 1, 1, 0],
                     [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0],
                     [0, 4, 0, -5, 0, 1]], np.float64),
           np.array([[1 / 4, 0, 0],
                     [-1 / 6, -1 / 6, -1 / 6],
                     [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6],
                     [1 / 24, -1 / 12, 1 / 6],
                     [0, 0, 1]], np.float64),
           np.array([[1, 1, 1, 1, 1, 0],
                     [0, 1, -1, 2, -2, 0],
                     [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float64)),
}


def choose_tile(height: int, width: int, channels_in: int,
                channels_out: int):
  """The tile ('F2', 'F4') for a layer's input shape, or None for a direct
  convolution (the rule `conv_algorithm='winograd'` follows on CPU).

  The rule comes from timing each VGG19 layer forward and backward and
  whole evaluations (docs/performance.md). The transforms are
  memory-bound, so feature maps of 256 x 256 and more stay direct, and so
  does the input layer (3 channels: too few products to save); F(4x4) pays
  off on large maps and wide layers, F(2x2) on the small, narrower ones.
  Where a layer alone and whole evaluations disagree, the rule follows
  whole evaluations: 128 x 128 maps with 64 channels and 64 x 64 maps with
  128 output channels take F(4x4), at the cost of 36 instead of 16
  transformed kernel matrices per layer held in memory. 16 x 16 maps take
  F(2x2) even with 512 channels: there the two tiles cost about the same,
  and F(2x2)'s kernels are smaller.

  Args:
    height, width: the layer's input map.
    channels_in, channels_out: the convolution's channels.
  Returns:
    'F2', 'F4' or None.
  """
  pixels = height * width
  if channels_in < 16 or pixels >= 256 * 256:
    return None
  if (pixels >= 128 * 128 or (pixels >= 64 * 64 and channels_out >= 128)
      or (pixels >= 32 * 32 and channels_out >= 512)):
    return 'F4'
  return 'F2'


def tile_side(tile: str) -> int:
  """m + 2: the side of an input tile and of a transformed kernel."""
  return TILES[tile][0].shape[0]


def transform_kernel(kernel: jax.Array, tile: str) -> jax.Array:
  """HWIO 3x3 kernel -> U = G g G^T, shape (m+2, m+2, C_in, C_out)."""
  g = TILES[tile][1]
  taps = kernel.astype(jnp.float32)
  # Sums of the 9 taps (one fused loop over C_in x C_out); an einsum with
  # G would make XLA transpose the kernels first.
  rows = _combine(g, [taps[u] for u in range(3)])
  u = jnp.stack([jnp.stack(_combine(g, [r[v] for v in range(3)]))
                 for r in rows])
  return u.astype(kernel.dtype)


def _combine(matrix, values):
  """[sum_k matrix[i, k] * values[k] for each row i], skipping zeros, as
  additions where the coefficient is +-1 (XLA fuses these into one loop)."""
  rows = []
  for coefficients in matrix:
    total = None
    for c, v in zip(coefficients, values):
      if c == 0:
        continue
      term = v if c == 1 else -v if c == -1 else v * float(c)
      total = term if total is None else total + term
    rows.append(total)
  return rows


def conv(x: jax.Array, u: jax.Array, tile: str) -> jax.Array:
  """3x3 SAME stride-1 convolution of NHWC `x` with a transformed kernel.

  Args:
    x: (N, H, W, C_in), any H and W (the last tiles are zero-padded).
    u: `transform_kernel(kernel, tile)`, (m+2, m+2, C_in, C_out).
    tile: 'F2' or 'F4'.
  Returns:
    (N, H, W, C_out), equal to `lax.conv_general_dilated(x, kernel, (1, 1),
    'SAME')` up to rounding.
  """
  bt, _, at = TILES[tile]
  m, n = at.shape
  _, height, width, _ = x.shape
  tiles_h, tiles_w = -(-height // m), -(-width // m)
  padded = jnp.pad(x, ((0, 0), (1, tiles_h * m + 1 - height),
                       (1, tiles_w * m + 1 - width), (0, 0)))
  # Input tiles overlap by 2: row k of every tile is a stride-m slice.
  rows = _combine(bt, [padded[:, k:k + m * tiles_h:m] for k in range(n)])
  v = jnp.stack([jnp.stack(_combine(
      bt, [r[:, :, k:k + m * tiles_w:m] for k in range(n)])) for r in rows])
  # (n, n, N, tiles_h, tiles_w, C_in) @ (n, n, C_in, C_out): n^2 matmuls.
  products = jnp.einsum('abnhwc,abcd->abnhwd', v, u)
  out_rows = _combine(at, [products[a] for a in range(n)])
  y = jnp.stack([jnp.stack(_combine(at, [r[b] for b in range(n)]))
                 for r in out_rows])             # (m, m, N, th, tw, C_out)
  y = jnp.transpose(y, (2, 3, 0, 4, 1, 5))
  y = y.reshape(y.shape[0], tiles_h * m, tiles_w * m, y.shape[-1])
  return y[:, :height, :width]
