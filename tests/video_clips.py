"""Small synthetic clips for the video tests (numpy, PIL and PyAV only).

Tests import it as `from video_clips import ...`: pytest's default
('prepend') import mode puts tests/, which has no __init__.py, on sys.path.
"""

from __future__ import annotations

import fractions
import os
from typing import Sequence

import av
import numpy as np
from PIL import Image

# Canvas border around the largest crop, so that no frame shows an edge.
_MARGIN = 8

# H.264 at crf 18 with 4:2:0 colour is lossy: the bound on `mean_abs_diff`
# between a `sliding_clip` and the same clip written and read back, with room
# above what the coding loses on this texture.
LOSSY_TOLERANCE = 8.0


def sliding_clip(frames: int = 6, height: int = 48, width: int = 64,
                 shift: int = 2, seed: int = 0) -> list[np.ndarray]:
  """A seeded texture moving `shift` pixels to the right per frame.

  Frame i is a crop of one canvas, so frame[i + 1][y, x] ==
  frame[i][y, x - shift] exactly wherever x - shift is in the frame: the
  backward flow (current -> previous) is (-shift, 0) and the forward flow
  (previous -> current) (+shift, 0). The left `shift` columns of each frame
  after the first come into view.

  The texture is mostly brightness (random 16 x 16 values upsampled with
  PIL's bicubic filter), with a mild colour tint (random 4 x 4, +-40 levels)
  and fine grey grain (sigma 8) for the optical flow to lock on to. Colours
  are kept moderate so that 4:2:0 video coding (half-resolution colour) is
  nearly lossless on it.

  Args:
    frames: number of frames.
    height: frame height.
    width: frame width.
    shift: pixels moved right per frame (non-negative integer).
    seed: numpy random seed.

  Returns:
    A list of uint8 (height, width, 3) RGB frames.
  """
  rng = np.random.default_rng(seed)
  canvas_height = height + 2 * _MARGIN
  canvas_width = width + shift * (frames - 1) + 2 * _MARGIN
  brightness = _upsample(rng.uniform(0, 255, (16, 16)),
                         canvas_width, canvas_height)[..., None]
  tint = _upsample(rng.uniform(0, 255, (4, 4, 3)),
                   canvas_width, canvas_height) - 128.0
  grain = rng.normal(0.0, 8.0, (canvas_height, canvas_width, 1))
  canvas = np.clip(brightness + tint * (40 / 128) + grain, 0, 255)
  canvas = np.round(canvas).astype(np.uint8)
  clip = []
  for index in range(frames):
    # Moving the crop window left moves the content right.
    left = _MARGIN + shift * (frames - 1 - index)
    clip.append(canvas[_MARGIN:_MARGIN + height, left:left + width].copy())
  return clip


def mean_abs_diff(frames_a, frames_b) -> float:
  """The mean absolute difference of two clips' frames, in pixel levels.

  Args:
    frames_a: uint8 (H, W, 3) frames (any iterable).
    frames_b: as many frames of the same shape.

  Returns:
    The mean over frame pairs of each pair's mean absolute difference.
  """
  return float(np.mean([np.abs(a.astype(np.int16) - b).mean()
                        for a, b in zip(frames_a, frames_b)]))


def _upsample(values: np.ndarray, width: int, height: int) -> np.ndarray:
  image = Image.fromarray(values.astype(np.uint8))
  return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC),
                    np.float32)


def write_mp4(frames: Sequence[np.ndarray], path, fps: float = 12.0,
              audio_seconds: float = 0.0) -> str:
  """Writes frames as an H.264 .mp4 with PyAV directly (not through
  nst_jax.io.video_write), optionally with an AAC 440 Hz tone.

  Args:
    frames: uint8 (H, W, 3) frames with even H and W.
    path: the output file.
    fps: frames per second.
    audio_seconds: length of the mono 48 kHz tone; 0 for no audio stream.

  Returns:
    `path` as a str.
  """
  path = os.fspath(path)
  height, width = frames[0].shape[:2]
  with av.open(path, 'w', format='mp4') as container:
    video = container.add_stream(
        'libx264', rate=fractions.Fraction(fps).limit_denominator(1001))
    video.width, video.height, video.pix_fmt = width, height, 'yuv420p'
    audio = (container.add_stream('aac', rate=48000, layout='mono')
             if audio_seconds > 0 else None)
    for frame in frames:
      for packet in video.encode(
          av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in video.encode(None):
      container.mux(packet)
    if audio is not None:
      _write_tone(container, audio, audio_seconds)
  return path


def _write_tone(container, audio, seconds: float) -> None:
  sample_rate = 48000
  samples = np.arange(int(seconds * sample_rate)) / sample_rate
  tone = (0.3 * np.sin(2 * np.pi * 440.0 * samples)).astype(np.float32)
  chunk = 1024  # AAC's frame size.
  for start in range(0, len(tone), chunk):
    frame = av.AudioFrame.from_ndarray(tone[None, start:start + chunk],
                                       format='fltp', layout='mono')
    frame.sample_rate = sample_rate
    frame.pts = start
    for packet in audio.encode(frame):
      container.mux(packet)
  for packet in audio.encode(None):
    container.mux(packet)


def write_folder(frames: Sequence[np.ndarray], folder) -> str:
  """Writes frames as frame_0000.png, frame_0001.png, ... into `folder`
  (created if missing); returns the folder as a str."""
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  for index, frame in enumerate(frames):
    Image.fromarray(frame).save(os.path.join(folder, f'frame_{index:04d}.png'))
  return folder


def write_clip(path, frames, fps=12.0, **kwargs) -> str:
  """Writes `frames` with nst_jax's own writer (`video_write.VideoWriter`)."""
  from nst_jax.io import video_write  # pylint: disable=g-import-not-at-top
  height, width = frames[0].shape[:2]
  with video_write.VideoWriter(path, fps, (width, height), **kwargs) as writer:
    for frame in frames:
      writer.write(frame)
  return str(path)
