"""Tests of nst_jax.io.flow on a texture sliding a known distance per frame."""

import numpy as np
import pytest

from nst_jax.io import flow
from video_clips import sliding_clip

SHIFT = 2  # Pixels per frame, to the right.


@pytest.fixture(scope='module', name='pair')
def pair_fixture():
  """(previous, current): the texture moved SHIFT pixels right."""
  previous, current = sliding_clip(frames=2, shift=SHIFT)
  return previous, current


def _constant_flow(height, width, dx, dy):
  return np.broadcast_to(np.array([dx, dy], np.float32),
                         (height, width, 2)).copy()


def _interior(array, margin=8):
  return array[margin:-margin, margin:-margin]


@pytest.mark.parametrize('method', ['dis', 'farneback'])
def test_flow_recovers_the_shift(pair, method):
  previous, current = pair
  forward = flow.compute_flow(previous, current, method)
  backward = flow.compute_flow(current, previous, method)
  assert forward.shape == (48, 64, 2) and forward.dtype == np.float32
  for flow_field, expected_dx in ((forward, SHIFT), (backward, -SHIFT)):
    dx, dy = np.median(_interior(flow_field), axis=(0, 1))
    assert abs(dx - expected_dx) < 0.3
    assert abs(dy) < 0.3


def test_flow_accepts_float_frames(pair):
  previous, current = (frame.astype(np.float32) for frame in pair)
  dx, _ = np.median(_interior(flow.compute_flow(previous, current)),
                    axis=(0, 1))
  assert abs(dx - SHIFT) < 0.3


def test_none_flow_is_zero(pair):
  zero = flow.compute_flow(*pair, method='none')
  assert zero.shape == (48, 64, 2) and zero.dtype == np.float32
  assert not zero.any()


def test_unknown_method_names_the_valid_ones(pair):
  with pytest.raises(ValueError, match='dis, farneback, none'):
    flow.compute_flow(*pair, method='deepflow')


def test_different_frame_sizes_raise(pair):
  with pytest.raises(ValueError, match='different sizes'):
    flow.compute_flow(pair[0], pair[1][:40])


@pytest.mark.parametrize('channels', [None, 3, 5])
def test_warp_integer_flow_is_exact(channels):
  shape = (20, 30) if channels is None else (20, 30, channels)
  image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
  dx, dy = 3, -2
  warped = flow.warp(image, _constant_flow(20, 30, dx, dy))
  assert warped.shape == image.shape and warped.dtype == np.float32
  # out[y, x] = image[y + dy, x + dx] wherever that is inside the image.
  np.testing.assert_array_equal(warped[2:, :-3], image[:-2, 3:])


def test_warp_brings_previous_frame_onto_current(pair):
  previous, current = pair
  backward = _constant_flow(48, 64, -SHIFT, 0)
  warped = flow.warp(previous, backward)
  # The left SHIFT columns were not in the previous frame.
  np.testing.assert_array_equal(warped[:, SHIFT:], current[:, SHIFT:])


def test_warp_bilinear_half_pixel():
  image = np.array([[0.0, 10.0, 20.0]], np.float32)
  warped = flow.warp(image, _constant_flow(1, 3, 0.5, 0.0))
  np.testing.assert_allclose(warped[0, :2], [5.0, 15.0])


@pytest.mark.parametrize('method', ['dis', 'farneback'])
def test_certainty_marks_the_strip_that_comes_into_view(pair, method):
  previous, current = pair
  certainty = flow.certainty(flow.compute_flow(previous, current, method),
                             flow.compute_flow(current, previous, method))
  assert certainty.shape == (48, 64) and certainty.dtype == np.float32
  assert certainty.min() >= 0 and certainty.max() <= 1
  # Texture moving right: the current frame's left SHIFT columns are new.
  assert certainty[:, :SHIFT].mean() < 0.2
  assert _interior(certainty, 4).mean() > 0.9


def test_certainty_with_exact_flows():
  forward = _constant_flow(24, 32, SHIFT, 0)
  backward = _constant_flow(24, 32, -SHIFT, 0)
  certainty = flow.certainty(forward, backward)
  # Smoothing softens only the edge of the uncertain strip.
  assert certainty[:, :SHIFT].max() < 0.15
  assert (certainty[:, SHIFT + 1:] == 1.0).all()
  assert 0.8 < certainty[0, SHIFT] < 1.0


def test_certainty_zero_where_flows_disagree():
  forward = _constant_flow(24, 32, 0, 0)
  backward = _constant_flow(24, 32, 0, 0)
  # Forward flow that does not come back: an occlusion in a 6 x 6 block.
  forward[8:14, 12:18] = (5.0, 0.0)
  certainty = flow.certainty(forward, backward)
  assert (certainty[9:13, 13:17] == 0).all()
  assert (certainty[:5] == 1).all()


def test_certainty_zero_at_motion_boundaries():
  forward = _constant_flow(24, 32, 0, 0)
  backward = _constant_flow(24, 32, 0, 0)
  # Left half still, right half moving down: a motion boundary at x = 16.
  backward[:, 16:] = (0.0, -1.0)
  forward[:, 16:] = (0.0, 1.0)
  certainty = flow.certainty(forward, backward)
  # Central differences flag the columns on both sides of the step (0 before
  # smoothing, which lifts a 2-pixel-wide strip to ~0.11).
  assert (certainty[4:20, 15:17] < 0.15).all()
  assert (certainty[4:20, :12] == 1).all()
  assert (certainty[4:20, 20:] == 1).all()


def test_certainty_checks_shapes():
  with pytest.raises(ValueError, match='forward'):
    flow.certainty(np.zeros((4, 5, 2)), np.zeros((4, 6, 2)))


def test_long_term_weights():
  closest = np.array([[1.0, 0.0, 0.5, 0.0]], np.float32)
  middle = np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)
  farthest = np.array([[1.0, 1.0, 1.0, 0.25]], np.float32)
  weights = flow.long_term_weights([closest, middle, farthest])
  np.testing.assert_allclose(weights[0], closest)
  np.testing.assert_allclose(weights[1], [[0.0, 1.0, 0.5, 0.0]])
  np.testing.assert_allclose(weights[2], [[0.0, 0.0, 0.0, 0.25]])
  assert flow.long_term_weights([]) == []


def test_long_term_weights_checks_shapes():
  with pytest.raises(ValueError, match='different shapes'):
    flow.long_term_weights([np.ones((2, 2)), np.ones((3, 2))])


def test_warping_error(pair):
  previous, current = pair
  backward = flow.compute_flow(current, previous)
  certainty = flow.certainty(flow.compute_flow(previous, current), backward)
  consistent = flow.warping_error(current, previous, backward, certainty)
  unrelated = sliding_clip(frames=1, seed=7)[0]
  inconsistent = flow.warping_error(current, unrelated, backward, certainty)
  # Squared pixel levels. Not 0: smoothing gives the new strip's inner
  # column a certainty of ~0.1, and the warp there repeats the edge.
  assert consistent < 5.0
  assert inconsistent > 500.0
  # Certain only where the previous frame has the content: exactly 0.
  visible = np.ones((48, 64))
  visible[:, :SHIFT] = 0
  exact = _constant_flow(48, 64, -SHIFT, 0)
  assert flow.warping_error(current, previous, exact, visible) == 0.0
  assert flow.warping_error(current, unrelated, backward,
                            np.zeros((48, 64))) == 0.0


def test_warping_error_is_certainty_weighted_mean():
  current = np.zeros((2, 2, 3), np.float32)
  previous = current.copy()
  previous[0, 0] = 4.0  # Squared difference 16 in one pixel.
  still = _constant_flow(2, 2, 0, 0)
  assert flow.warping_error(current, previous, still, np.ones((2, 2))) == 4.0
  only_that_pixel = np.array([[1.0, 0.0], [0.0, 0.0]])
  assert flow.warping_error(current, previous, still, only_that_pixel) == 16.0


def test_disoccluded_fill():
  warped = np.full((2, 2, 3), 100.0, np.float32)
  content = np.zeros((2, 2, 3), np.float32)
  certainty = np.array([[1.0, 0.0], [0.5, 0.25]], np.float32)
  filled = flow.disoccluded_fill(warped, content, certainty)
  np.testing.assert_allclose(filled[..., 0], [[100.0, 0.0], [50.0, 25.0]])
  assert filled.shape == (2, 2, 3)


def test_detail_falls_with_every_bilinear_resampling(pair):
  """Detail (variance of the Laplacian of luminance) is 0 for a flat frame,
  16 inside a checkerboard of 0 and 1, the same for grey and RGB, and
  falls each time a frame is moved half a pixel and back."""
  assert flow.detail(np.full((8, 8, 3), 77.0)) == 0.0
  checker = (np.indices((66, 66)).sum(0) % 2 * 255.0)[1:-1, 1:-1]
  laplacian_inside = flow.detail(checker[1:-1, 1:-1])
  assert laplacian_inside == pytest.approx(16.0, rel=0.1)
  assert flow.detail(np.stack([checker] * 3, -1)) == pytest.approx(
      flow.detail(checker), rel=1e-5)
  frame = pair[0].astype(np.float32)
  half = _constant_flow(48, 64, 0.5, 0)
  details = [flow.detail(frame)]
  for _ in range(3):
    frame = flow.warp(flow.warp(frame, half), -half)
    details.append(flow.detail(frame))
  assert all(a > 1.05 * b for a, b in zip(details, details[1:]))
  assert details[-1] < 0.5 * details[0]
  # An integer shift copies pixels: no detail lost inside the frame.
  moved = flow.warp(pair[0], _constant_flow(48, 64, -SHIFT, 0))
  assert flow.detail(moved[:, SHIFT:]) == pytest.approx(
      flow.detail(pair[0][:, :-SHIFT]), rel=1e-6)
  with pytest.raises(ValueError, match='shape'):
    flow.detail(np.zeros((4, 4, 2)))


def test_bicubic_and_mirrored_warps(pair):
  """Bicubic keeps more detail than bilinear at half a pixel; integer
  flows copy pixels either way; a mirrored border reflects the frame."""
  previous = pair[0].astype(np.float32)
  half = _constant_flow(48, 64, 0.5, 0)
  assert flow.detail(flow.warp(previous, half, 'bicubic')) > 1.2 * (
      flow.detail(flow.warp(previous, half)))
  shift = _constant_flow(48, 64, -SHIFT, 0)
  np.testing.assert_allclose(flow.warp(previous, shift, 'bicubic')[:, SHIFT:],
                             previous[:, :-SHIFT], atol=1e-3)
  mirrored = flow.warp(previous, shift, border='mirror')
  np.testing.assert_array_equal(mirrored[:, :SHIFT],
                                previous[:, SHIFT:0:-1])
  with pytest.raises(ValueError, match='interpolation'):
    flow.warp(previous, shift, 'nearest')
