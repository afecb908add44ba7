"""A video run's frames in: read one at a time, each with its optical flows
to earlier frames, prepared one frame ahead on a worker thread while the
current frame is optimised (OpenCV releases the GIL)."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from typing import Iterator, Optional

import numpy as np

from nst_jax.engine import inputs
from nst_jax.errors import UserError


def video_modules():
  """nst_jax.io.flow, video_read and video_write (OpenCV and PyAV)."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from nst_jax.io import flow, video_read, video_write
  except ImportError as error:
    raise UserError(f'config.content: video needs {error.name}: pip install '
                    "'nst_jax[video]' (opencv-python-headless and av)"
                    ) from None
  return flow, video_read, video_write


@dataclasses.dataclass
class Frame:
  """A content frame at the working size, with its flows to earlier frames.

  Attributes:
    index: 0-based.
    level: `inputs.Level` (the content and styles the network sees).
    references: {offset j: (backward flow from this frame to frame t - j,
      Ruder et al.'s long-term weight c_j)} for the offsets with an earlier
      frame.
    certainty: the raw certainty towards the previous frame (or None).
    input_flicker: the content's own warping error towards the previous
      frame (`flow.warping_error`, values in [0, 1]), or None.
    input_detail: the content's own detail (`flow.detail`).
  """
  index: int
  level: inputs.Level
  references: dict
  certainty: Optional[np.ndarray]
  input_flicker: Optional[float] = None
  input_detail: Optional[float] = None


def prepared_frames(settings, style_sources) -> Iterator[Frame]:
  """Yields a `Frame` per content frame, reading one at a time and keeping
  only the last max(long_term) content frames."""
  flow_lib, video_read, _ = video_modules()
  offsets = settings.video.long_term
  recent = collections.deque(maxlen=max(offsets))  # colour contents, newest last
  for index, pixels in enumerate(video_read.read_frames(settings.content)):
    level = inputs.read_level(settings, pixels, style_sources,
                              settings.image_size)
    current = level.colour_content
    flows, certainties = {}, []
    for offset in offsets:
      if offset > len(recent):
        break
      earlier = recent[-offset]
      backward = flow_lib.compute_flow(current, earlier, settings.video.flow)
      forward = flow_lib.compute_flow(earlier, current, settings.video.flow)
      certainties.append(flow_lib.certainty(forward, backward))
      flows[offset] = backward
    references = {offset: (backward, weight) for (offset, backward), weight
                  in zip(flows.items(),
                         flow_lib.long_term_weights(certainties))}
    certainty = input_flicker = None
    if 1 in flows:
      certainty = certainties[0]
      input_flicker = flow_lib.warping_error(current / 255, recent[-1] / 255,
                                             flows[1], certainty)
    recent.append(current)
    yield Frame(index, level, references, certainty, input_flicker,
                flow_lib.detail(current))


class Prefetcher:
  """Runs an iterator one item ahead on a worker thread."""

  def __init__(self, iterator):
    self._iterator = iterator
    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._next = self._pool.submit(self._advance)

  def _advance(self):
    try:
      return next(self._iterator)
    except StopIteration:
      return None

  def __iter__(self):
    return self

  def __next__(self):
    item = self._next.result()
    if item is None:
      raise StopIteration
    self._next = self._pool.submit(self._advance)
    return item

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)
