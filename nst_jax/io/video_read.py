"""Reading clips, one frame at a time.

A clip is a video file (.mp4 .mov .mkv .webm .avi .gif) or a folder of
numbered image files. Frames are numpy uint8 arrays (H, W, 3), RGB; a clip
is never held in memory as a whole: `read_frames` yields one decoded frame
at a time, and `probe` decodes every frame but keeps none.

Folders: the frames are the files with an image suffix (.png .jpg .jpeg
.bmp .tif .tiff .webp), in plain `sorted` name order, so number them with
zero padding (frame_0001.png, ...). Other files and hidden files (names
starting with '.') are ignored. A folder has no frame rate.

Files are decoded with PyAV (FFmpeg). The frame count comes from decoding
every frame, since the count in a container's header can be missing or
wrong. YUV is converted to RGB with the matrix the file is tagged with
(BT.601 if untagged); rotation metadata and non-square pixels are ignored:
frames come out as stored.

Every problem with a clip the user named raises `UserError` with one line,
`<path>: <problem>`. Writing clips is `nst_jax.io.video_write`, which shares
`check_exists` and `describe_error` with this module.

Only numpy, PIL and PyAV are used, no JAX.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Iterator, Optional

import av
import numpy as np
from PIL import Image

from nst_jax.errors import UserError

VIDEO_SUFFIXES = ('.mp4', '.mov', '.mkv', '.webm', '.avi', '.gif')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')

# What PIL raises on an unreadable, corrupt or huge image (its decoders are
# not consistent; see nst_jax.io.images); UnidentifiedImageError is an OSError.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError,
               KeyError, TypeError, Image.DecompressionBombError)

# What PyAV raises on a file FFmpeg cannot open or decode. FFmpegError
# subclasses ValueError or OSError; IndexError and EOFError come out of a
# few demuxers on truncated input.
_AV_ERRORS = (av.FFmpegError, IndexError, EOFError)

# The frame rate of a GIF whose frames have no delays: what browsers show.
_DEFAULT_GIF_FPS = 10.0


def is_video(path) -> bool:
  """Whether `path` names a clip: a folder, or a file with a video suffix.

  Only the name is looked at (and whether it is a folder): a .gif with one
  frame counts as a video, a .png does not.

  Args:
    path: str or os.PathLike.

  Returns:
    True for an existing folder or a name ending in one of `VIDEO_SUFFIXES`
    (any case).
  """
  path = os.fspath(path)
  return (os.path.isdir(path)
          or os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """What `probe` found out about a clip.

  Attributes:
    path: the clip as given.
    frame_count: the number of frames (decoded, not read from a header).
    fps: frames per second; None for a folder.
    width: frame width in pixels.
    height: frame height in pixels.
    has_audio: whether the file has an audio stream (False for folders).
    frame_names: a folder's frame file names in order; () for a file.
  """
  path: str
  frame_count: int
  fps: Optional[float]
  width: int
  height: int
  has_audio: bool
  frame_names: tuple[str, ...]



def probe(path) -> ClipInfo:
  """Checks a clip and describes it, decoding every frame of a file.

  Decoding is the only reliable frame count, and it finds corrupt data
  before a long style transfer starts rather than after. Decoded frames are
  dropped at once (only the first one's size is kept), so memory does not
  grow with the clip. A folder's images are checked by their headers only.

  Args:
    path: a video file or a folder of image files (str or os.PathLike).

  Returns:
    A `ClipInfo`.

  Raises:
    UserError: `<path>: <problem>` if the path is missing, the file is not a
      video FFmpeg can read, has no video stream, has no frames or fails to
      decode; or if the folder has no image files, an image is unreadable or
      the images differ in size.
  """
  path = os.fspath(path)
  if check_exists(path):
    names = _folder_frame_names(path)
    width, height = _check_folder_sizes(path, names)
    return ClipInfo(path=path, frame_count=len(names), fps=None, width=width,
                    height=height, has_audio=False, frame_names=tuple(names))
  return _probe_file(path)


def read_frames(path) -> Iterator[np.ndarray]:
  """Yields a clip's frames one at a time.

  The path is checked when `read_frames` is called (missing file, not a
  video, folder without images or with images of different sizes), so
  these errors come before the first frame; a frame that fails to decode
  raises when it is reached.

  Args:
    path: a video file or a folder of image files (str or os.PathLike).

  Returns:
    An iterator of uint8 arrays (H, W, 3), RGB, all of one size.

  Raises:
    UserError: as for `probe`.
  """
  path = os.fspath(path)
  if check_exists(path):
    names = _folder_frame_names(path)
    size = _check_folder_sizes(path, names)
    return _folder_frames(path, names, size)
  container, stream = _open_video(path)
  return _file_frames(path, container, stream)


def check_exists(path: str) -> bool:
  """Checks that a clip's path names something to read.

  Args:
    path: a video file or folder (str).

  Returns:
    Whether `path` is a folder.

  Raises:
    UserError: `path` does not exist, or is an empty file.
  """
  if os.path.isdir(path):
    return True
  if not os.path.exists(path):
    raise UserError(f'{path}: no such file or folder')
  if os.path.getsize(path) == 0:
    raise UserError(f'{path}: empty file (0 bytes)')
  return False


def _folder_frame_names(folder: str) -> list[str]:
  """The image files of a folder, sorted; UserError if there are none."""
  try:
    entries = os.listdir(folder)
  except OSError as error:
    raise UserError(f'{folder}: cannot list the folder '
                    f'({error.strerror})') from None
  names = sorted(
      name for name in entries
      if not name.startswith('.')
      and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
      and os.path.isfile(os.path.join(folder, name)))
  if not names:
    raise UserError(f'{folder}: no image files in the folder (looked for '
                    f'{" ".join(IMAGE_SUFFIXES)})')
  return names


def _check_folder_sizes(folder: str, names: list[str]) -> tuple[int, int]:
  """Reads each image's header; returns the common (width, height)."""
  first_size = None
  for name in names:
    frame_path = os.path.join(folder, name)
    try:
      with Image.open(frame_path) as image:  # Lazy: the header only.
        size = image.size
    except _PIL_ERRORS as error:
      raise UserError(f'{frame_path}: not an image PIL can read '
                      f'({describe_error(error)})') from None
    if first_size is None:
      first_size = size
    elif size != first_size:
      raise UserError(
          f'{frame_path}: frame is {size[0]}x{size[1]} but {names[0]} is '
          f'{first_size[0]}x{first_size[1]} (all frames of {folder} must '
          f'have one size)')
  return first_size


def _folder_frames(folder: str, names: list[str],
                   size: tuple[int, int]) -> Iterator[np.ndarray]:
  for name in names:
    frame_path = os.path.join(folder, name)
    try:
      with Image.open(frame_path) as image:
        frame = np.asarray(image.convert('RGB'))
    except _PIL_ERRORS as error:
      raise UserError(f'{frame_path}: cannot decode the image '
                      f'({describe_error(error)})') from None
    if frame.shape[1::-1] != size:  # A header that lied about the size.
      raise UserError(f'{frame_path}: decoded to {frame.shape[1]}x'
                      f'{frame.shape[0]}, expected {size[0]}x{size[1]}')
    yield frame


def _open_video(path: str):
  """Opens a file with PyAV; returns (container, its first video stream)."""
  try:
    container = av.open(path)
  except PermissionError:
    raise UserError(f'{path}: permission denied') from None
  except _AV_ERRORS as error:
    raise UserError(f'{path}: not a video file FFmpeg can read '
                    f'({describe_error(error)})') from None
  except OSError as error:
    raise UserError(f'{path}: cannot read it ({error.strerror})') from None
  if not container.streams.video:
    container.close()
    raise UserError(f'{path}: no video stream in the file')
  stream = container.streams.video[0]
  # Decoding on several threads speeds up large frames; the frames still
  # come out in order.
  stream.thread_type = 'AUTO'
  return container, stream


def _decoded(path: str, container, stream) -> Iterator:
  """The stream's av.VideoFrames; FFmpeg errors become UserError."""
  count = 0
  try:
    for frame in container.decode(stream):
      count += 1
      yield frame
  except _AV_ERRORS as error:
    raise UserError(f'{path}: decoding failed after {count} frame(s), the '
                    f'file is truncated or corrupt ({describe_error(error)})'
                    ) from None
  if count == 0:
    raise UserError(f'{path}: the video has no frames (truncated or empty '
                    f'file?)')


def _file_frames(path: str, container, stream) -> Iterator[np.ndarray]:
  with container:
    for frame in _decoded(path, container, stream):
      # Converts with the matrix and range the frame is tagged with.
      yield frame.to_ndarray(format='rgb24')


def _probe_file(path: str) -> ClipInfo:
  container, stream = _open_video(path)
  with container:
    frame_count = 0
    width = height = 0
    # For the frame rate of a GIF, which has one delay per frame.
    total_duration = fractions.Fraction(0)
    for frame in _decoded(path, container, stream):
      if frame_count == 0:
        width, height = frame.width, frame.height
      frame_count += 1
      time_base = frame.time_base or stream.time_base
      if frame.duration and time_base:
        total_duration += frame.duration * time_base
    fps = _frame_rate(container, stream, frame_count, total_duration)
    return ClipInfo(path=path, frame_count=frame_count, fps=fps, width=width,
                    height=height, has_audio=bool(container.streams.audio),
                    frame_names=())


def _frame_rate(container, stream, frame_count: int,
                total_duration: fractions.Fraction) -> float:
  """The clip's frames per second.

  A GIF stores a delay per frame (in 1/100 s), and FFmpeg's average_rate
  only looks at the first few, so for a GIF (and any file without an
  average rate) the rate is frames / summed frame durations.
  """
  average = stream.average_rate
  if container.format.name != 'gif' and average:
    return float(average)
  if total_duration > 0:
    return float(frame_count / total_duration)
  if stream.guessed_rate:
    return float(stream.guessed_rate)
  return _DEFAULT_GIF_FPS


def describe_error(error: BaseException) -> str:
  """An exception as one line for a `UserError`: its type and message."""
  text = str(error).strip()
  return f'{type(error).__name__}: {text}' if text else type(error).__name__
