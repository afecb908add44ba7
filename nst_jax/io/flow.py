"""Optical flow, warping and flow certainty for temporally consistent video.

After Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos"
(GCPR 2016, arXiv:1604.08610): each stylised frame is kept close to the
previous stylised frame warped along the optical flow, except where the flow
cannot be trusted.

Conventions:

* A flow `w` is a float32 array (H, W, 2) holding (dx, dy) in pixels, defined
  on the pixels of the frame it starts from.
* `compute_flow(a, b)` is the flow from frame a to frame b: pixel (x, y) of
  a moves to (x + dx, y + dy) in b, i.e. a[y, x] ~ b[y + dy, x + dx].
* To bring the previous frame into the current one, use the BACKWARD flow
  `w = compute_flow(cur, prev)` (defined on the current frame's pixels):
  `warp(prev, w)[y, x] = prev[y + dy, x + dx]`, bilinear. Pixels whose
  source lies outside the frame take the nearest edge pixel's value and get
  certainty 0 (see `certainty`).
* The FORWARD flow `compute_flow(prev, cur)` is only needed for the
  consistency check in `certainty`.

Frames are (H, W, 3) RGB, uint8 or float in [0, 255] (nst_jax's pixel
arrays), or (H, W) grey.

Only numpy and OpenCV are used, no JAX.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

FLOW_METHODS = ('dis', 'farneback', 'none')

# DIS (Kroeger et al. 2016) at its 'medium' preset stops at half resolution
# (finest scale 1) and upsamples. On frames below this size (shorter side,
# pixels) half resolution loses too much: the coarse-to-fine pyramid has
# hardly a level, and both sub-pixel and fast motion are estimated less
# accurately. So small frames are matched at full resolution; larger ones at
# the preset's half resolution, which costs less and is as accurate on them.
_DIS_FULL_RESOLUTION_BELOW = 384

# Farneback (2003): a polynomial expansion per pixel. OpenCV's documented
# pairing poly_n 5, poly_sigma 1.1; a 15 px averaging window (OpenCV's
# example) balances noise against detail; 3 iterations per level.
_FARNEBACK_WINDOW = 15
_FARNEBACK_ITERATIONS = 3
_FARNEBACK_POLY_N = 5
_FARNEBACK_POLY_SIGMA = 1.1
# Pyramid levels: as many as keep the coarsest level's shorter side at least
# this many pixels (more levels follow faster motion), at most 5.
_FARNEBACK_COARSEST_SIDE = 24
_FARNEBACK_MAX_LEVELS = 5

# Ruder et al.'s thresholds (section 3.2 of the paper).
_DISOCCLUSION_RELATIVE = 0.01
_DISOCCLUSION_ABSOLUTE = 0.5
_MOTION_BOUNDARY_RELATIVE = 0.01
_MOTION_BOUNDARY_ABSOLUTE = 0.002
# The certainty mask is "slightly smoothed": a 3 x 3 Gaussian of this sigma
# (weights 0.11, 0.79, 0.11 along each axis).
_SMOOTHING_SIGMA = 0.5


def compute_flow(frame_a: np.ndarray, frame_b: np.ndarray,
                 method: str = 'dis') -> np.ndarray:
  """The optical flow from `frame_a` to `frame_b`.

  The frames are matched in grey (OpenCV's BT.601 luma).

  Args:
    frame_a: (H, W, 3) RGB or (H, W) grey; uint8, or float in [0, 255].
    frame_b: the same shape as `frame_a`.
    method: 'dis' (OpenCV's DIS, 'medium' preset, full resolution for
      frames with a shorter side below 384 px), 'farneback' (OpenCV's
      Farneback) or 'none' (zero flow: no motion compensation).

  Returns:
    float32 (H, W, 2): (dx, dy) such that frame_a[y, x] ~
    frame_b[y + dy, x + dx].

  Raises:
    ValueError: unknown method, or frames of different or bad shapes.
  """
  if method not in FLOW_METHODS:
    raise ValueError(f'unknown flow method {method!r}; use one of '
                     f'{", ".join(FLOW_METHODS)}')
  grey_a, grey_b = _grey_uint8(frame_a), _grey_uint8(frame_b)
  if grey_a.shape != grey_b.shape:
    raise ValueError(f'frames of different sizes: {np.shape(frame_a)} and '
                     f'{np.shape(frame_b)}')
  height, width = grey_a.shape
  if method == 'none':
    return np.zeros((height, width, 2), np.float32)
  if method == 'dis':
    return _dis_flow(grey_a, grey_b)
  return _farneback_flow(grey_a, grey_b)


def _grey_uint8(frame) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    frame = np.round(np.clip(np.nan_to_num(frame.astype(np.float32)),
                             0.0, 255.0)).astype(np.uint8)
  if frame.ndim == 3 and frame.shape[2] == 3:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
  if frame.ndim == 2:
    return np.ascontiguousarray(frame)
  raise ValueError(f'expected an (H, W, 3) or (H, W) frame, got shape '
                   f'{frame.shape}')


def _dis_flow(grey_a: np.ndarray, grey_b: np.ndarray) -> np.ndarray:
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  if min(grey_a.shape) < _DIS_FULL_RESOLUTION_BELOW:
    dis.setFinestScale(0)
  return dis.calc(grey_a, grey_b, None).astype(np.float32, copy=False)


def _farneback_flow(grey_a: np.ndarray, grey_b: np.ndarray) -> np.ndarray:
  shorter_side = min(grey_a.shape)
  levels = 1 + int(math.floor(math.log2(
      max(shorter_side / _FARNEBACK_COARSEST_SIDE, 1.0))))
  levels = min(levels, _FARNEBACK_MAX_LEVELS)
  flow = cv2.calcOpticalFlowFarneback(
      grey_a, grey_b, None, pyr_scale=0.5, levels=levels,
      winsize=_FARNEBACK_WINDOW, iterations=_FARNEBACK_ITERATIONS,
      poly_n=_FARNEBACK_POLY_N, poly_sigma=_FARNEBACK_POLY_SIGMA, flags=0)
  return flow.astype(np.float32, copy=False)


INTERPOLATIONS = ('bicubic', 'bilinear')
BORDERS = ('replicate', 'mirror')
_CV_INTERPOLATION = {'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC}
_CV_BORDER = {'replicate': cv2.BORDER_REPLICATE,
              'mirror': cv2.BORDER_REFLECT_101}


def warp(image: np.ndarray, flow: np.ndarray,
         interpolation: str = 'bilinear',
         border: str = 'replicate') -> np.ndarray:
  """Backward warping: `out[y, x] = image[y + dy, x + dx]`.

  With `flow = compute_flow(cur, prev)`, `warp(prev, flow)` is the previous
  frame moved onto the current one. Integer flows inside the frame copy
  pixels exactly; OpenCV quantises the interpolation weights to 1/32
  pixel. Bilinear interpolation at a fraction of a pixel averages
  neighbours, a blur that compounds when each frame is warped from the
  last; bicubic keeps more of the fine detail (and may overshoot slightly
  at sharp edges).

  Args:
    image: (H, W) or (H, W, C) array, any real dtype, any C.
    flow: float (H, W, 2), the (dx, dy) to look up at each output pixel.
    interpolation: 'bilinear' or 'bicubic'.
    border: what sources outside the frame take (`certainty` marks them
      0): 'replicate', the nearest edge pixel; 'mirror', the frame
      reflected about its edge pixel, so that they hold the frame's
      texture rather than streaks.

  Returns:
    float32 array of `image`'s shape.

  Raises:
    ValueError: `flow` does not have shape (H, W, 2).
  """
  image = np.asarray(image, np.float32)
  height, width = image.shape[:2]
  _check_flow(flow, height, width, 'flow')
  if interpolation not in _CV_INTERPOLATION or border not in _CV_BORDER:
    raise ValueError(f'unknown interpolation {interpolation!r} or border '
                     f'{border!r}')
  map_x, map_y = _source_coordinates(flow)
  options = dict(interpolation=_CV_INTERPOLATION[interpolation],
                 borderMode=_CV_BORDER[border])
  if image.ndim == 2:
    return cv2.remap(image, map_x, map_y, **options)
  # cv2.remap takes at most 4 channels: warp wider images in groups.
  groups = [cv2.remap(np.ascontiguousarray(image[..., start:start + 4]),
                      map_x, map_y, **options).reshape(height, width, -1)
            for start in range(0, image.shape[2], 4)]
  return np.concatenate(groups, axis=2)


def _source_coordinates(flow) -> tuple[np.ndarray, np.ndarray]:
  """(x + dx, y + dy) for every pixel, as float32 maps for cv2.remap."""
  height, width = flow.shape[:2]
  grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
  flow = np.asarray(flow, np.float32)
  return grid_x + flow[..., 0], grid_y + flow[..., 1]


def _check_flow(flow, height: int, width: int, name: str) -> None:
  shape = np.shape(flow)
  if shape != (height, width, 2):
    raise ValueError(f'{name}: expected shape {(height, width, 2)}, got '
                     f'{shape}')


def certainty(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
  """Where the previous frame, warped, can be trusted in the current frame.

  Ruder et al.'s per-pixel weight c for the temporal loss, on the current
  frame's pixels. With w = `backward` and w~ = `forward` warped onto the
  current frame, w~ = warp(forward, backward), c is 0 where

  * the two flows disagree (disocclusion: the pixel was hidden in the
    previous frame): |w~ + w|^2 > 0.01 (|w~|^2 + |w|^2) + 0.5;
  * the flow has a motion boundary: |grad u|^2 + |grad v|^2 >
    0.01 |w|^2 + 0.002, where (u, v) = w (central differences);
  * the flow points outside the previous frame (content that came into
    view): x + dx not in [-0.5, W - 0.5] or y + dy not in [-0.5, H - 0.5].
    The half pixel of slack is the edge pixels' own extent: without it,
    the slightest estimation noise would mark whole edge rows of a still
    scene uncertain;

  and 1 elsewhere. The paper "slightly smooths" this mask; here with a 3 x 3
  Gaussian (sigma 0.5, edges replicated), after which every pixel whose
  3 x 3 neighbourhood was all 1 is set back to exactly 1, so smoothing only
  softens the edges of the uncertain regions (beside a straight edge of a
  0 region: 0.11 inside, 0.89 outside; an isolated 0 becomes 0.38).

  Args:
    forward: float (H, W, 2), compute_flow(prev, cur).
    backward: float (H, W, 2), compute_flow(cur, prev).

  Returns:
    float32 (H, W) in [0, 1].

  Raises:
    ValueError: the flows are not both (H, W, 2) of one size.
  """
  backward = np.asarray(backward, np.float32)
  if backward.ndim != 3 or backward.shape[2] != 2:
    raise ValueError(f'backward: expected shape (H, W, 2), got '
                     f'{backward.shape}')
  height, width = backward.shape[:2]
  _check_flow(forward, height, width, 'forward')

  forward_on_current = warp(forward, backward)
  trusted = ~(_disoccluded(forward_on_current, backward)
              | _motion_boundary(backward)
              | _leaves_frame(backward))
  hard = trusted.astype(np.float32)
  smooth = cv2.GaussianBlur(hard, (3, 3), _SMOOTHING_SIGMA,
                            borderType=cv2.BORDER_REPLICATE)
  # Gaussian weights do not sum to exactly 1 in float32: pixels deep inside
  # a trusted region stay exactly 1.
  all_trusted_around = cv2.erode(hard, np.ones((3, 3), np.uint8),
                                 borderType=cv2.BORDER_REPLICATE) == 1.0
  smooth[all_trusted_around] = 1.0
  return np.clip(smooth, 0.0, 1.0)


def _squared_norm(flow: np.ndarray) -> np.ndarray:
  return flow[..., 0]**2 + flow[..., 1]**2


def _disoccluded(forward_on_current, backward) -> np.ndarray:
  """Forward-backward inconsistency: the flows should cancel."""
  round_trip = _squared_norm(forward_on_current + backward)
  return round_trip > (
      _DISOCCLUSION_RELATIVE * (_squared_norm(forward_on_current)
                                + _squared_norm(backward))
      + _DISOCCLUSION_ABSOLUTE)


def _motion_boundary(flow) -> np.ndarray:
  gradient_energy = np.zeros(flow.shape[:2], np.float32)
  for component in (flow[..., 0], flow[..., 1]):
    d_dy, d_dx = np.gradient(component)
    gradient_energy += d_dx**2 + d_dy**2
  return gradient_energy > (_MOTION_BOUNDARY_RELATIVE * _squared_norm(flow)
                            + _MOTION_BOUNDARY_ABSOLUTE)


def _leaves_frame(flow) -> np.ndarray:
  height, width = flow.shape[:2]
  source_x, source_y = _source_coordinates(flow)
  return ((source_x < -0.5) | (source_x > width - 0.5)
          | (source_y < -0.5) | (source_y > height - 0.5))


def long_term_weights(certainties: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Ruder et al.'s long-term weights: each pixel counts once, nearest first.

  For the certainties c_j of the frames j steps back (for the offsets J,
  e.g. 1, 10, 20, 40, closest first), the weight of offset j is
  max(c_j - sum of c_k over the offsets k < j, 0): a pixel is tied to the
  closest earlier frame in which it was visible, not to all of them.

  Args:
    certainties: (H, W) arrays in [0, 1], one per offset, sorted by offset
      ascending (closest first).

  Returns:
    A list of float32 (H, W) arrays in [0, 1], in the same order.

  Raises:
    ValueError: the arrays have different shapes.
  """
  weights = []
  covered = None  # Sum of the certainties of the closer offsets.
  for certainty_map in certainties:
    certainty_map = np.asarray(certainty_map, np.float32)
    if covered is None:
      covered = np.zeros_like(certainty_map)
    elif certainty_map.shape != covered.shape:
      raise ValueError(f'certainties of different shapes: {covered.shape} '
                       f'and {certainty_map.shape}')
    weights.append(np.maximum(certainty_map - covered, 0.0))
    covered = covered + certainty_map
  return weights


def warping_error(current: np.ndarray, previous: np.ndarray,
                  backward_flow: np.ndarray,
                  certainty_map: np.ndarray) -> float:
  """The temporal warping error between two (stylised) frames.

  The certainty-weighted mean squared difference between the current frame
  and the previous one warped onto it:

    sum_px c * mean_channels (current - warp(previous, w))^2 / sum_px c

  with w = `backward_flow`, c = `certainty_map`. 0 for perfectly consistent
  frames; a pixel value difference of d everywhere gives d^2 (pixel units,
  [0, 255] frames give errors up to 65025).

  Args:
    current: (H, W, C) or (H, W) frame.
    previous: the previous frame, same shape.
    backward_flow: float (H, W, 2), compute_flow(current, previous) (best
      computed on the input video, not on the stylised frames).
    certainty_map: (H, W) weights in [0, 1], e.g. `certainty(...)`.

  Returns:
    The error as a float; 0.0 if the certainty is 0 everywhere.

  Raises:
    ValueError: mismatched shapes.
  """
  current = np.asarray(current, np.float32)
  previous = np.asarray(previous, np.float32)
  if current.shape != previous.shape:
    raise ValueError(f'frames of different shapes: {current.shape} and '
                     f'{previous.shape}')
  weights = np.asarray(certainty_map, np.float64)
  if weights.shape != current.shape[:2]:
    raise ValueError(f'certainty_map: expected shape {current.shape[:2]}, '
                     f'got {weights.shape}')
  squared = (current - warp(previous, backward_flow)).astype(np.float64)**2
  if squared.ndim == 3:
    squared = squared.mean(axis=2)
  total_weight = weights.sum()
  if total_weight == 0:
    return 0.0
  return float((weights * squared).sum() / total_weight)


def disoccluded_fill(warped: np.ndarray, content: np.ndarray,
                     certainty_map: np.ndarray) -> np.ndarray:
  """The warped previous result where it is certain, the content elsewhere.

  `c * warped + (1 - c) * content`, with c broadcast over channels: the
  start image for a frame's optimisation (Ruder et al.'s warped
  initialisation), where disoccluded regions, which the warp cannot fill,
  start from the current content frame instead.

  Args:
    warped: (H, W, C) or (H, W), e.g. warp(previous_result, backward_flow).
    content: the current content frame, same shape.
    certainty_map: (H, W) weights in [0, 1].

  Returns:
    float32 array of `warped`'s shape.

  Raises:
    ValueError: mismatched shapes.
  """
  warped = np.asarray(warped, np.float32)
  content = np.asarray(content, np.float32)
  weights = np.asarray(certainty_map, np.float32)
  if warped.shape != content.shape or weights.shape != warped.shape[:2]:
    raise ValueError(f'shapes do not match: warped {warped.shape}, content '
                     f'{content.shape}, certainty_map {weights.shape}')
  if warped.ndim == 3:
    weights = weights[..., None]
  return weights * warped + (1.0 - weights) * content


# BT.601 luma, the weights OpenCV's grey conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def detail(frame: np.ndarray) -> float:
  """How much fine detail a frame holds: the variance of the Laplacian of
  its luminance, values in [0, 1].

  Flicker alone rewards a clip that holds still by washing out: a frame
  pulled towards a resampled (blurred) copy of the last loses its fine
  texture, and its warping error falls. The Laplacian's variance, a common
  focus and blur measure, falls with it. The 4-neighbour Laplacian, edges
  replicated: 0 for a flat frame, 16 inside a checkerboard of 0 and 1.

  Args:
    frame: (H, W, 3) RGB or (H, W) grey; uint8, or float in [0, 255].

  Returns:
    The variance as a float.

  Raises:
    ValueError: not an (H, W, 3) or (H, W) frame.
  """
  frame = np.asarray(frame, np.float32) / 255.0
  if frame.ndim == 3 and frame.shape[2] == 3:
    frame = frame @ _LUMA
  elif frame.ndim != 2:
    raise ValueError(f'expected an (H, W, 3) or (H, W) frame, got shape '
                     f'{frame.shape}')
  laplacian = cv2.Laplacian(np.ascontiguousarray(frame), cv2.CV_32F, ksize=1,
                            borderType=cv2.BORDER_REPLICATE)
  return float(np.var(laplacian, dtype=np.float64))
