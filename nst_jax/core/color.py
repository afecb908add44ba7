r"""Colour control: style transfer that keeps the content image's colours.

Plain style transfer copies the style image's colours along with its brush
strokes. Gatys, Bethge, Hertzmann and Shechtman, "Preserving Color in Neural
Artistic Style Transfer" (2016, arXiv:1606.05897), give two ways to keep the
content's colours instead; jcjohnson's neural-style adds a third
(``-original_colors 1``). The choices, by name in `COLOR_CONTROLS`:

``'none'``
  Plain transfer; the result takes the style's colours.
``'luminance'``
  Luminance-only transfer (the paper's section 2): the network sees only
  luminance, `luminance_only(content)` and `luminance_only(style, content)`
  (the style's luminance matched to the content's mean and spread), and the
  result's luminance is then put together with the content's chroma,
  `restore_chroma(result, content)`.
``'histogram'``
  Colour histogram matching (the paper's section 1): before the transfer the
  style image is recoloured by `match_histogram(style, content)` so that its
  colour mean and covariance are the content's.
``'original_colors'``
  Plain transfer, then `restore_chroma(result, content)`: the result's
  luminance with the content's chroma.

Luminance is the Y row of YIQ, the colour space of the paper::

  Y = 0.299 R + 0.587 G + 0.114 B
  I = 0.596 R - 0.274 G - 0.322 B
  Q = 0.211 R - 0.523 G + 0.312 B

Pixels are numpy float32 arrays (H, W, 3), RGB, values in [0, 255], as
`nst_jax.io.images` loads them; luminance arrays are float32 (H, W) on the same
scale. Only numpy is used: all of this runs on the host, before or after the
optimisation.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

COLOR_CONTROLS = ('none', 'luminance', 'histogram', 'original_colors')
COLOR_TRANSFORMS = ('pca', 'cholesky', 'sym')

# The Y row of YIQ (ITU-R BT.601 luma weights). It sums to 1, which is what
# makes `restore_chroma` a plain addition.
_Y_WEIGHTS = np.array([0.299, 0.587, 0.114])


def luminance(pixels: np.ndarray) -> np.ndarray:
  """The luminance of an image: Y = 0.299 R + 0.587 G + 0.114 B.

  Args:
    pixels: (H, W, 3) RGB, 0-255.

  Returns:
    float32 (H, W), 0-255: a grey image has its grey value as luminance.
  """
  pixels = _check_pixels(pixels, 'pixels')
  return (pixels.astype(np.float64) @ _Y_WEIGHTS).astype(np.float32)


def match_luminance(style_y: np.ndarray, content_y: np.ndarray) -> np.ndarray:
  r"""Shifts and scales the style's luminance to the content's mean and spread.

  The paper's luminance matching::

    Y_S' = (sigma_C / sigma_S) (Y_S - mu_S) + mu_C

  with mu, sigma the mean and population standard deviation over all pixels
  of each image, so that Y_S' has the content's mean and standard deviation
  while keeping the style's own pattern of light and dark. A constant style
  (sigma_S = 0) has no pattern to scale: it becomes mu_C everywhere, with no
  epsilon anywhere, so non-constant inputs get the formula exactly.

  The result is not clipped: it can leave [0, 255] a little where the style
  is more lopsided than the content, and clipping would undo the match.

  Args:
    style_y: (H_s, W_s) style luminance.
    content_y: (H_c, W_c) content luminance; any size.

  Returns:
    float32 (H_s, W_s).
  """
  style_y = np.asarray(style_y, np.float64)
  content_y = np.asarray(content_y, np.float64)
  if style_y.ndim != 2 or content_y.ndim != 2:
    raise ValueError('expected luminance arrays of shape (H, W), got '
                     f'{style_y.shape} and {content_y.shape}')
  mu_s, sigma_s = style_y.mean(), style_y.std()
  mu_c, sigma_c = content_y.mean(), content_y.std()
  scale = sigma_c / sigma_s if sigma_s > 0 else 0.0
  return (scale * (style_y - mu_s) + mu_c).astype(np.float32)


def luminance_only(pixels: np.ndarray,
                   content: Optional[np.ndarray] = None) -> np.ndarray:
  """The image the network sees in luminance-only transfer.

  Its luminance Y repeated in all three channels, i.e. a grey image. With
  `content` (another image, any size) Y is first matched to the content's
  luminance mean and spread (`match_luminance`): that is how the style image
  is prepared. The content image itself is prepared with ``content=None``.

  Args:
    pixels: (H, W, 3) RGB, 0-255.
    content: the content image, (H_c, W_c, 3), or None.

  Returns:
    float32 (H, W, 3) with three equal channels. Not clipped: with `content`
    a few values can leave [0, 255] slightly (see `match_luminance`), which
    the network accepts as it is.
  """
  y = luminance(pixels)
  if content is not None:
    y = match_luminance(y, luminance(content))
  return np.repeat(y[:, :, None], 3, axis=2)


def restore_chroma(result: np.ndarray, content: np.ndarray) -> np.ndarray:
  """The result's luminance with the content's chroma (colour).

  Computed as::

    RGB_out = clip(RGB_content + (Y_result - Y_content) (1, 1, 1), 0, 255)

  This is exactly "Y of the result, I and Q of the content" in YIQ: adding
  the same amount d to R, G and B changes Y by d, since Y's row
  (0.299, 0.587, 0.114) sums to 1, and leaves I and Q unchanged, since their
  rows (0.596, -0.274, -0.322) and (0.211, -0.523, 0.312) sum to 0. So the
  output has Y = Y_content + (Y_result - Y_content) = Y_result and the
  content's I, Q, with no conversion to YIQ and back. Any linear
  luminance/chroma space with the same Y row (jcjohnson's YUV, for one) gives
  the same image. Clipping only changes pixels whose colour cannot carry that
  luminance inside the RGB cube (a saturated colour made very bright or dark).

  Args:
    result: (H, W, 3) the stylised image, RGB 0-255.
    content: (H, W, 3) the content image at the result's size (the caller
      resizes).

  Returns:
    float32 (H, W, 3) in [0, 255].
  """
  result = _check_pixels(result, 'result')
  content = _check_pixels(content, 'content')
  if result.shape != content.shape:
    raise ValueError('result and content must have the same shape, got '
                     f'{result.shape} and {content.shape}')
  shift = luminance(result).astype(np.float64) - luminance(content)
  out = content.astype(np.float64) + shift[:, :, None]
  return np.clip(out, 0, 255).astype(np.float32)


def match_histogram(style: np.ndarray, content: np.ndarray,
                    transform: str = 'pca', eps: float = 1e-5) -> np.ndarray:
  r"""Recolours the style image to the content's colour mean and covariance.

  The paper's colour histogram matching: each style pixel x (an RGB vector)
  goes to::

    x' = A (x - mu_S) + mu_C,   with   A Sigma_S A^T = Sigma_C

  so that the recoloured style has the content's mean mu_C and covariance
  Sigma_C. As in the authors' code, pixels are scaled to [0, 1] first, the
  means and 3x3 population covariances are over all pixels of each image,
  eps I is added to both covariances (so that a single-colour or grey image,
  whose covariance is singular, still has an invertible one), and x' is
  clipped to [0, 1] before scaling back to 0-255. Many A satisfy the
  condition; `transform` picks one:

  ``'pca'`` (the authors' choice, default)
    A = Sigma_C^(1/2) Sigma_S^(-1/2), with symmetric square roots by
    eigendecomposition: whiten in the style's principal axes, colour in the
    content's.
  ``'cholesky'``
    A = L_C L_S^(-1), with Sigma = L L^T the Cholesky factors; A is lower
    triangular, so it depends on the order R, G, B.
  ``'sym'``
    A = Sigma_S^(-1/2) (Sigma_S^(1/2) Sigma_C Sigma_S^(1/2))^(1/2)
    Sigma_S^(-1/2), the only symmetric positive definite solution: the
    optimal-transport (Monge) map between Gaussians, which moves colours
    least in mean square.

  Because of eps, the output's covariance is Sigma_C + eps (I - A A^T)
  rather than Sigma_C exactly (before clipping): a difference of order eps.

  Args:
    style: (H_s, W_s, 3) RGB 0-255, the image to recolour.
    content: (H_c, W_c, 3) RGB 0-255, the colours to take; any size.
    transform: one of `COLOR_TRANSFORMS`.
    eps: added to both covariances' diagonals, on the [0, 1] scale. Must be
      positive when either image is a single colour or grey.

  Returns:
    float32 (H_s, W_s, 3) in [0, 255]. Computed in float64.

  Raises:
    ValueError: for an unknown transform, a negative eps or inputs that are
      not (H, W, 3).
  """
  if transform not in COLOR_TRANSFORMS:
    raise ValueError(f'unknown colour transform {transform!r}; expected one '
                     f'of {", ".join(COLOR_TRANSFORMS)}')
  if not eps >= 0:
    raise ValueError(f'eps must be >= 0, got {eps}')
  style = _check_pixels(style, 'style').astype(np.float64) / 255
  content = _check_pixels(content, 'content').astype(np.float64) / 255
  mu_s, cov_s = _mean_and_covariance(style, eps)
  mu_c, cov_c = _mean_and_covariance(content, eps)
  a = _color_transform(cov_s, cov_c, transform)
  out = (style - mu_s) @ a.T + mu_c
  return (np.clip(out, 0, 1) * 255).astype(np.float32)


# ---------------------------------------------------------------- helpers


def _check_pixels(pixels, what: str) -> np.ndarray:
  pixels = np.asarray(pixels)
  if pixels.ndim != 3 or pixels.shape[2] != 3:
    raise ValueError(f'{what}: expected pixels of shape (H, W, 3), got '
                     f'{pixels.shape}')
  return pixels


def _mean_and_covariance(pixels: np.ndarray, eps: float) -> tuple:
  """The mean colour (3,) and population covariance (3, 3) + eps I."""
  flat = pixels.reshape(-1, 3)
  mean = flat.mean(axis=0)
  centred = flat - mean
  cov = centred.T @ centred / len(flat) + eps * np.eye(3)
  return mean, cov


def _sqrtm(matrix: np.ndarray, power: float = 0.5) -> np.ndarray:
  """matrix^power for a symmetric positive semi-definite matrix.

  By eigendecomposition, so the result is symmetric too. Eigenvalues that
  rounding made slightly negative count as 0.
  """
  values, vectors = np.linalg.eigh(matrix)
  values = np.maximum(values, 0) ** power
  return (vectors * values) @ vectors.T


def _color_transform(cov_s: np.ndarray, cov_c: np.ndarray,
                     transform: str) -> np.ndarray:
  """The 3x3 A with A cov_s A^T = cov_c that `transform` names."""
  if transform == 'pca':
    return _sqrtm(cov_c) @ _sqrtm(cov_s, -0.5)
  if transform == 'cholesky':
    # L_C L_S^(-1) = (L_S^(-T) L_C^T)^T, by a solve instead of an inverse.
    l_s = np.linalg.cholesky(cov_s)
    l_c = np.linalg.cholesky(cov_c)
    return np.linalg.solve(l_s.T, l_c.T).T
  # 'sym'
  root_s = _sqrtm(cov_s)
  inv_root_s = _sqrtm(cov_s, -0.5)
  return inv_root_s @ _sqrtm(root_s @ cov_c @ root_s) @ inv_root_s
