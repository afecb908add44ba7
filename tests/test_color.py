"""Colour control: luminance, chroma restoration and colour histogram matching.

Images are small seeded random arrays whose values stay away from 0 and 255,
so that clipping does not interfere unless a test asks for it.
"""

import numpy as np
import pytest

from nst_jax.core import color

# The I and Q rows of YIQ, to check that chroma is kept.
_IQ = np.array([[0.596, -0.274, -0.322],
                [0.211, -0.523, 0.312]])


def _uniform(seed, shape, low=60, high=190):
  rng = np.random.default_rng(seed)
  return rng.uniform(low, high, size=shape + (3,)).astype(np.float32)


def _colourful(seed, shape, centre, mix):
  """Gaussian colours with correlated channels: centre + z @ mix, z ~ N(0, I).

  Correlations make the colour transforms differ from one another.
  """
  rng = np.random.default_rng(seed)
  z = rng.normal(size=shape + (3,))
  return (np.asarray(centre) + z @ np.asarray(mix)).astype(np.float32)


def _style():
  return _colourful(1, (16, 16), (120, 110, 140),
                    [[22, 8, -5], [4, 18, 6], [-3, 5, 14]])


def _content():
  return _colourful(2, (12, 20), (130, 125, 105),
                    [[12, -6, 3], [7, 20, 9], [2, -4, 10]])


def _stats(pixels):
  """Mean and population covariance of an image on the [0, 1] scale."""
  flat = pixels.reshape(-1, 3).astype(np.float64) / 255
  mean = flat.mean(axis=0)
  centred = flat - mean
  return mean, centred.T @ centred / len(flat)


def _recover_transform(style, out, content):
  """The A with out = A (style - mu_S) + mu_C, by least squares ([0, 1])."""
  x = style.reshape(-1, 3).astype(np.float64) / 255
  y = out.reshape(-1, 3).astype(np.float64) / 255
  x = x - x.mean(axis=0)
  y = y - content.reshape(-1, 3).astype(np.float64).mean(axis=0) / 255
  a_transposed = np.linalg.lstsq(x, y, rcond=None)[0]
  return a_transposed.T


def _sym_power(matrix, power):
  values, vectors = np.linalg.eigh(matrix)
  return vectors @ np.diag(values**power) @ vectors.T


# ---------------------------------------------------------------- luminance


def test_luminance_is_the_y_row_of_yiq():
  pixels = _uniform(0, (16, 16), 0, 255)
  y = color.luminance(pixels)
  assert y.shape == (16, 16) and y.dtype == np.float32
  expected = (0.299 * pixels[..., 0] + 0.587 * pixels[..., 1]
              + 0.114 * pixels[..., 2])
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-4)
  np.testing.assert_allclose(color.luminance(np.full((2, 3, 3), 77.0)), 77.0,
                             rtol=1e-6)


def test_match_luminance_formula():
  style_y = color.luminance(_uniform(3, (16, 16)))
  content_y = color.luminance(_uniform(4, (12, 20), 100, 150))
  out = color.match_luminance(style_y, content_y)
  assert out.shape == (16, 16) and out.dtype == np.float32
  s = style_y.astype(np.float64)
  c = content_y.astype(np.float64)
  expected = c.std() / s.std() * (s - s.mean()) + c.mean()
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_match_luminance_of_constant_style_is_the_content_mean():
  content_y = color.luminance(_uniform(4, (12, 20)))
  out = color.match_luminance(np.full((5, 7), 42.0, np.float32), content_y)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, content_y.astype(np.float64).mean(),
                             rtol=1e-6)


def test_luminance_only_repeats_y():
  pixels = _uniform(5, (16, 16))
  out = color.luminance_only(pixels)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  for channel in range(3):
    np.testing.assert_array_equal(out[..., channel], color.luminance(pixels))


def test_luminance_only_with_content_matches_its_luminance_statistics():
  style = _uniform(6, (16, 16), 20, 235)        # spread wider than content
  content = _uniform(7, (12, 20), 100, 170)
  out = color.luminance_only(style, content)
  assert out.shape == (16, 16, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  y = out[..., 0].astype(np.float64)
  content_y = color.luminance(content).astype(np.float64)
  np.testing.assert_allclose(y.mean(), content_y.mean(), rtol=1e-5)
  np.testing.assert_allclose(y.std(), content_y.std(), rtol=1e-5)
  # Same pattern as the style's luminance, only shifted and scaled.
  style_y = color.luminance(style).astype(np.float64)
  assert np.corrcoef(y.ravel(), style_y.ravel())[0, 1] > 1 - 1e-6


def test_luminance_only_of_a_grey_image_is_the_image():
  grey = np.repeat(_uniform(8, (16, 16))[..., :1], 3, axis=2)
  np.testing.assert_allclose(color.luminance_only(grey), grey, rtol=1e-6)


# ---------------------------------------------------------------- chroma


def test_restore_chroma_takes_result_luminance_and_content_chroma():
  result = _uniform(9, (12, 20), 100, 155)
  content = _uniform(10, (12, 20), 100, 155)
  out = color.restore_chroma(result, content)
  assert out.shape == (12, 20, 3) and out.dtype == np.float32
  assert 0 < out.min() and out.max() < 255        # nothing clipped
  np.testing.assert_allclose(color.luminance(out), color.luminance(result),
                             atol=1e-3)
  np.testing.assert_allclose(out.astype(np.float64) @ _IQ.T,
                             content.astype(np.float64) @ _IQ.T, atol=1e-3)


def test_restore_chroma_clips_to_the_rgb_cube():
  content = np.zeros((2, 2, 3), np.float32)
  content[...] = (250, 10, 10)                       # saturated red, Y ~ 81
  result = np.zeros((2, 2, 3), np.float32)
  result[0] = 250                                    # very bright
  result[1] = 2                                      # very dark
  out = color.restore_chroma(result, content)
  assert out.min() >= 0 and out.max() <= 255
  assert out[0, 0, 0] == 255 and out[1, 0, 1] == 0   # it did clip


def test_restore_chroma_needs_equal_shapes():
  with pytest.raises(ValueError, match='same shape'):
    color.restore_chroma(_uniform(0, (12, 20)), _uniform(0, (16, 16)))


# ---------------------------------------------------------------- histogram


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_takes_content_mean_and_covariance(transform):
  style, content = _style(), _content()
  out = color.match_histogram(style, content, transform)
  assert out.shape == style.shape and out.dtype == np.float32
  assert 0 < out.min() and out.max() < 255          # nothing clipped
  mean, cov = _stats(out)
  content_mean, content_cov = _stats(content)
  np.testing.assert_allclose(mean, content_mean, atol=1e-6)
  # eps I in both covariances leaves a difference eps (I - A A^T).
  np.testing.assert_allclose(cov, content_cov, atol=1e-4)
  # Without eps the match is exact up to rounding.
  _, cov = _stats(color.match_histogram(style, content, transform, eps=0))
  np.testing.assert_allclose(cov, content_cov, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_transform_matrix(transform):
  eps = 1e-5
  style, content = _style(), _content()
  out = color.match_histogram(style, content, transform, eps)
  a = _recover_transform(style, out, content)
  cov_s = _stats(style)[1] + eps * np.eye(3)
  cov_c = _stats(content)[1] + eps * np.eye(3)
  np.testing.assert_allclose(a @ cov_s @ a.T, cov_c, rtol=1e-5, atol=1e-8)
  if transform == 'pca':
    expected = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
  elif transform == 'cholesky':
    expected = np.linalg.cholesky(cov_c) @ np.linalg.inv(
        np.linalg.cholesky(cov_s))
    np.testing.assert_allclose(np.triu(a, 1), 0, atol=1e-5)
  else:
    root_s, inv_root_s = _sym_power(cov_s, 0.5), _sym_power(cov_s, -0.5)
    expected = inv_root_s @ _sym_power(root_s @ cov_c @ root_s,
                                       0.5) @ inv_root_s
    np.testing.assert_allclose(a, a.T, atol=1e-5)
  np.testing.assert_allclose(a, expected, atol=1e-5)


def test_match_histogram_transforms_differ():
  style, content = _style(), _content()
  outs = [color.match_histogram(style, content, t)
          for t in color.COLOR_TRANSFORMS]
  for i in range(len(outs)):
    for j in range(i):
      assert np.abs(outs[i] - outs[j]).max() > 1


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_onto_itself_is_identity(transform):
  style = _style()
  np.testing.assert_allclose(color.match_histogram(style, style, transform),
                             style, atol=1e-3)


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_of_constant_style(transform):
  style = np.zeros((16, 16, 3), np.float32)
  style[...] = (200, 50, 120)
  content = _content()
  out = color.match_histogram(style, content, transform)
  assert np.all(np.isfinite(out))
  content_mean = content.reshape(-1, 3).astype(np.float64).mean(axis=0)
  np.testing.assert_allclose(out, np.broadcast_to(content_mean, out.shape),
                             atol=1e-3)


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_onto_grey_content_is_nearly_grey(transform):
  style = _style()
  content = np.repeat(_content()[..., 1:2], 3, axis=2)
  out = color.match_histogram(style, content, transform)
  assert np.all(np.isfinite(out))
  mean, cov = _stats(out)
  content_mean, content_cov = _stats(content)
  np.testing.assert_allclose(mean, content_mean, atol=1e-6)
  np.testing.assert_allclose(cov, content_cov, atol=1e-4)
  # Off the grey axis only an eps-sized spread is left: well under 1 level.
  off_grey = out - out.mean(axis=2, keepdims=True)
  assert np.abs(off_grey).max() < 5 and off_grey.std() < 1


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_match_histogram_of_grey_style(transform):
  style = np.repeat(_style()[..., :1], 3, axis=2)
  out = color.match_histogram(style, _content(), transform)
  assert np.all(np.isfinite(out))
  assert out.min() >= 0 and out.max() <= 255


def test_match_histogram_rejects_unknown_transform():
  with pytest.raises(ValueError, match='pca, cholesky, sym'):
    color.match_histogram(_style(), _content(), 'chol')


def test_names():
  assert color.COLOR_CONTROLS == ('none', 'luminance', 'histogram',
                                  'original_colors')
  assert color.COLOR_TRANSFORMS == ('pca', 'cholesky', 'sym')
