"""Writing clips, one frame at a time, with the sound of a source clip.

`VideoWriter` encodes each frame as it is written, so a clip is never held
in memory as a whole. Frames are numpy arrays (H, W, 3), RGB: uint8, or any
numeric type with values in [0, 255].

Written files: H.264 (.mp4 .mov .mkv .avi) or VP9 (.webm) in 4:2:0 YUV tagged
BT.709, or a GIF with a 256-colour palette per frame. The sound of another
clip can be copied in. The file appears at its path only when complete (see
`VideoWriter`).

Every problem with a path the user named raises `UserError` with one line,
`<path>: <problem>`. Reading clips is `nst_jax.io.video_read`.

Only numpy, PIL and PyAV are used, no JAX.
"""

from __future__ import annotations

import contextlib
import fractions
import math
import os
import secrets
from typing import Optional

import av
import numpy as np
from PIL import Image

from nst_jax.errors import UserError
from nst_jax.io import video_read

# The FFmpeg muxer for each suffix: the temporary file `VideoWriter` writes
# has no video suffix, so the format is named explicitly.
_CONTAINER_FORMATS = {
    '.mp4': 'mp4', '.mov': 'mov', '.mkv': 'matroska', '.webm': 'webm',
    '.avi': 'avi', '.gif': 'gif',
}

# x264's constant-quality setting: 18 is visually close to lossless, and
# stylised frames are full of fine texture that lower quality smears.
_H264_OPTIONS = {'crf': '18', 'preset': 'medium'}
# libvpx-vp9 in constant-quality mode (bit rate 0) at a comparable quality;
# cpu-used 4 keeps encoding fast enough to be no bottleneck.
_VP9_OPTIONS = {'crf': '24', 'b': '0', 'deadline': 'good', 'cpu-used': '4',
                'row-mt': '1'}
# FFmpeg's numbers for BT.709 (AVCOL_SPC_BT709, AVCOL_PRI_BT709,
# AVCOL_TRC_BT709) and limited range (AVCOL_RANGE_MPEG). Players assume
# BT.709 for untagged HD video but BT.601 for SD; tagging makes every size
# play with the colours it was converted with.
_BT709 = 1
_LIMITED_RANGE = 1


class VideoWriter:
  """Encodes frames into a video file, one at a time; a context manager.

  The codec follows the suffix: H.264 (libx264, constant quality crf 18)
  for .mp4 .mov .mkv .avi; VP9 (libvpx-vp9) for .webm; a GIF with a
  256-colour palette per frame (PIL's median cut, no dithering, which would
  flicker from frame to frame) for .gif. H.264 and VP9 frames are stored as
  4:2:0 YUV tagged BT.709; 4:2:0 needs an even width and height, so a frame
  with an odd side is padded by repeating its last row or column, and the
  file (and reading it back) has the padded, even size.

  Nothing is written at `path` until `close`: the data go to a temporary
  file in the same folder that then replaces `path` in one step. If an
  exception leaves the `with` block, or `abort` is called, the temporary
  file is deleted and `path` is untouched. (Without `with`, call `close` or
  `abort`, or a hidden temporary file stays behind.)

  Sound: with `audio_from` naming a video file with an audio stream, that
  stream is copied into the output as it is (no re-encoding) if the
  container takes its codec, and is otherwise re-encoded (to AAC, or Opus
  for .webm). It is interleaved with the frames and cut off at the first
  packet that starts after the last frame ends. GIFs have no sound:
  `audio_from` is ignored for them, as it is for a file without audio.

  Example::

    with VideoWriter('out/clip.mp4', fps=info.fps, size=(w, h),
                     audio_from='clip.mp4') as writer:
      for frame in frames:
        writer.write(frame)
  """

  def __init__(self, path, fps: float, size: tuple[int, int],
               audio_from=None):
    """Creates the temporary file and sets up the encoder.

    Args:
      path: the output file (str or os.PathLike) with one of
        `video_read.VIDEO_SUFFIXES`; its folder must exist.
      fps: frames per second, > 0; fractional rates such as 29.97 are
        stored as the nearest fraction with a denominator <= 1001
        (30000/1001 for 29.97002997...).
      size: (width, height) of the frames that `write` is given.
      audio_from: optional video file (str or os.PathLike) whose sound is
        copied into the output.

    Raises:
      UserError: unknown suffix, fps not > 0, a bad size, the folder is not
        writable, the codec is missing from this FFmpeg build, or
        `audio_from` cannot be read.
    """
    self.path = os.fspath(path)
    self._suffix = os.path.splitext(self.path)[1].lower()
    if self._suffix not in _CONTAINER_FORMATS:
      raise UserError(f'{self.path}: unknown video suffix '
                      f'{self._suffix!r} (use '
                      f'{" ".join(video_read.VIDEO_SUFFIXES)})')
    try:
      fps = float(fps)
    except (TypeError, ValueError):
      raise UserError(f'{self.path}: fps must be a number, got {fps!r}'
                      ) from None
    if not (math.isfinite(fps) and fps > 0):
      raise UserError(f'{self.path}: fps must be > 0, got {fps}')
    width, height = (int(side) for side in size)
    if width < 1 or height < 1:
      raise UserError(f'{self.path}: frame size must be positive, got '
                      f'{width}x{height}')
    self.fps = fps
    self.size = (width, height)
    self.frame_count = 0
    self._rate = fractions.Fraction(fps).limit_denominator(1001)
    self._is_gif = self._suffix == '.gif'
    # 4:2:0 chroma covers 2x2 pixels: pad odd sides to even.
    self._padded_size = self.size if self._is_gif else (
        width + width % 2, height + height % 2)

    folder, name = os.path.split(os.path.abspath(self.path))
    self._temp_path = os.path.join(
        folder, f'.{name}.{secrets.token_hex(4)}.tmp')
    self._container = None
    self._audio = None
    audio_from = None if audio_from is None else os.fspath(audio_from)
    try:
      try:
        self._start(audio_from, reencode_audio=False)
      except _MuxerRefused:
        # FFmpeg's list of codecs a container takes is not the whole
        # story (Opus in .mov is refused when the header is written), so
        # start again, re-encoding the sound.
        self.abort()
        self._start(audio_from, reencode_audio=True)
    except BaseException:
      self.abort()
      raise

  def _start(self, audio_from: Optional[str], reencode_audio: bool) -> None:
    """Opens the temporary file, adds the streams, writes the header."""
    self._container = self._open_container()
    self._stream = self._add_video_stream()
    if audio_from is not None and not self._is_gif:
      self._audio = _AudioCopy.open(audio_from, self._container,
                                    reencode_audio)
    try:
      # Opens the encoders and writes the header now, so that a codec or
      # muxer problem shows here rather than at the first frame.
      self._container.start_encoding()
    except OSError as error:  # Missing folder, permission, ...
      raise UserError(f'{self.path}: cannot write it '
                      f'({video_read.describe_error(error)})') from None
    except av.FFmpegError as error:
      if self._audio is not None and not self._audio.reencode:
        raise _MuxerRefused() from error
      raise UserError(f'{self.path}: cannot start writing it '
                      f'({video_read.describe_error(error)})') from None

  def _open_container(self):
    # Moving the index to the front (faststart) lets players start before
    # the whole file has arrived, at the cost of one rewrite at close.
    options = ({'movflags': '+faststart'}
               if self._suffix in ('.mp4', '.mov') else {})
    try:
      return av.open(self._temp_path, 'w',
                     format=_CONTAINER_FORMATS[self._suffix], options=options)
    except (OSError, av.FFmpegError) as error:
      raise UserError(f'{self.path}: cannot write it '
                      f'({video_read.describe_error(error)})') from None

  def _add_video_stream(self):
    if self._is_gif:
      codec, pix_fmt, options = 'gif', 'pal8', {}
    elif self._suffix == '.webm':
      codec, pix_fmt, options = 'libvpx-vp9', 'yuv420p', _VP9_OPTIONS
    else:
      codec, pix_fmt, options = 'libx264', 'yuv420p', _H264_OPTIONS
    if codec not in av.codecs_available:
      raise UserError(f'{self.path}: this FFmpeg build has no {codec} '
                      f'encoder; choose another video suffix')
    stream = self._container.add_stream(codec, rate=self._rate)
    stream.width, stream.height = self._padded_size
    stream.pix_fmt = pix_fmt
    stream.options = dict(options)
    if not self._is_gif:
      context = stream.codec_context
      context.colorspace = context.color_primaries = _BT709
      context.color_trc = _BT709
      context.color_range = _LIMITED_RANGE
    return stream

  def write(self, frame: np.ndarray) -> None:
    """Encodes one frame.

    Args:
      frame: (height, width, 3) RGB array of the writer's size: uint8, or
        any numeric type with values in [0, 255] (clipped and rounded).

    Raises:
      ValueError: the frame has the wrong shape, or the writer is closed.
      UserError: the encoder or the disk failed.
    """
    if self._container is None:
      raise ValueError(f'VideoWriter({self.path!r}) is closed')
    frame = _to_uint8(frame)
    width, height = self.size
    if frame.shape != (height, width, 3):
      raise ValueError(f'VideoWriter({self.path!r}): expected a frame of '
                       f'shape {(height, width, 3)}, got {frame.shape}')
    video_frame = self._video_frame(frame)
    video_frame.pts = self.frame_count
    video_frame.time_base = 1 / self._rate
    self._encode(video_frame)
    self.frame_count += 1
    if self._audio is not None:
      # Sound up to the end of this frame, so that the file interleaves.
      self._mux_audio(self.frame_count / self._rate)

  def _video_frame(self, frame: np.ndarray):
    if self._is_gif:
      return _palette_frame(frame)
    width, height = self._padded_size
    if frame.shape[:2] != (height, width):
      frame = np.pad(frame, ((0, height - frame.shape[0]),
                             (0, width - frame.shape[1]), (0, 0)),
                     mode='edge')
    rgb = av.VideoFrame.from_ndarray(frame, format='rgb24')
    # Converted here (the encoder would use BT.601) to match the BT.709 tag.
    return rgb.reformat(format='yuv420p', dst_colorspace='ITU709',
                        dst_color_range='MPEG')

  def _encode(self, video_frame) -> None:
    """Encodes a frame (None: flushes the encoder) and muxes the packets."""
    try:
      for packet in self._stream.encode(video_frame):
        self._container.mux(packet)
    except (OSError, av.FFmpegError) as error:
      raise UserError(f'{self.path}: cannot write it '
                      f'({video_read.describe_error(error)})') from None

  def _mux_audio(self, until_seconds) -> None:
    """Muxes the sound up to `until_seconds`, or ends it if None."""
    try:
      if until_seconds is None:
        self._audio.finish()
      else:
        self._audio.mux_until(until_seconds)
    except (OSError, av.FFmpegError) as error:
      raise UserError(f'{self.path}: copying the sound from '
                      f'{self._audio.path} failed '
                      f'({video_read.describe_error(error)})') from None

  def close(self) -> None:
    """Finishes the file and moves it to `path`; idempotent.

    Raises:
      ValueError: no frame was written (nothing is left behind).
      UserError: the encoder or the disk failed (nothing is left behind).
    """
    if self._container is None:
      return
    try:
      if self.frame_count == 0:
        raise ValueError(f'VideoWriter({self.path!r}): no frames written')
      self._encode(None)  # Flushes the frames the encoder held back.
      if self._audio is not None:
        self._mux_audio(self.frame_count / self._rate)
        self._mux_audio(None)  # Flushes a re-encoder.
        self._audio.close()
        self._audio = None
      try:
        self._container.close()
        self._container = None
        os.replace(self._temp_path, self.path)
      except (OSError, av.FFmpegError) as error:
        raise UserError(f'{self.path}: cannot write it '
                        f'({video_read.describe_error(error)})') from None
    except BaseException:
      self.abort()
      raise

  def abort(self) -> None:
    """Stops writing and deletes the temporary file; `path` is untouched."""
    for resource in (self._audio, self._container):
      if resource is not None:
        with contextlib.suppress(Exception):
          resource.close()
    self._audio = self._container = None
    with contextlib.suppress(OSError):
      os.remove(self._temp_path)

  def __enter__(self) -> 'VideoWriter':
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def _to_uint8(frame) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype == np.uint8:
    return frame
  frame = np.nan_to_num(frame.astype(np.float32), nan=0.0)
  return np.round(np.clip(frame, 0.0, 255.0)).astype(np.uint8)


def _palette_frame(frame: np.ndarray):
  """A pal8 av.VideoFrame with this frame's own 256-colour palette.

  Quantising each frame with PIL keeps GIF writing streaming (FFmpeg's GIF
  encoder takes palette frames and writes a local palette when it changes)
  and looks far better than a fixed palette such as rgb8's 3-3-2 bits.
  """
  quantized = Image.fromarray(frame).quantize(
      256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
  indices = np.asarray(quantized, dtype=np.uint8)
  rgb_palette = np.array(quantized.getpalette(), np.uint8).reshape(-1, 3)
  argb = np.zeros((256, 4), np.uint8)  # PyAV wants (256, 4) ARGB.
  argb[:, 0] = 255
  argb[:len(rgb_palette), 1:] = rgb_palette[:256]
  return av.VideoFrame.from_ndarray((indices, argb), format='pal8')


class _MuxerRefused(Exception):
  """The output container refused a stream copied from the sound file."""


class _AudioCopy:
  """Copies (or re-encodes) the sound of one file into an output container.

  Packets are read lazily, so `mux_until` can interleave them with the
  video as it is written.
  """

  def __init__(self, path: str, source, source_stream, output_stream,
               reencode: bool):
    self.path = path
    self._source = source
    self._output_stream = output_stream
    self.reencode = reencode
    self._packets = source.demux(source_stream)
    self._pending = None  # A packet read but not yet due.
    self._start = None  # Time of the first packet: the sound's zero.
    self._done = False

  @classmethod
  def open(cls, path: str, output,
           reencode: bool) -> Optional['_AudioCopy']:
    """Adds an audio stream to `output` for `path`'s sound.

    Args:
      path: the file with the sound.
      output: the output container.
      reencode: re-encode even if `output` lists the sound's codec.

    Returns:
      An _AudioCopy, or None if `path` has no sound.

    Raises:
      UserError: `path` is not a readable video file.
    """
    video_read.check_exists(path)
    if os.path.isdir(path):
      raise UserError(f'{path}: a folder has no sound to copy')
    try:
      source = av.open(path)
    except (OSError, av.FFmpegError) as error:
      raise UserError(f'{path}: cannot read its sound '
                      f'({video_read.describe_error(error)})') from None
    if not source.streams.audio:
      source.close()
      return None
    source_stream = source.streams.audio[0]
    codec_name = source_stream.codec_context.name
    if codec_name in output.supported_codecs and not reencode:
      output_stream = output.add_stream_from_template(source_stream)
    else:
      encoder = 'aac' if 'aac' in output.supported_codecs else (
          output.default_audio_codec)
      # Opus encodes 48 kHz only (the encoder resamples each frame).
      rate = 48000 if encoder in ('libopus', 'opus') else (
          source_stream.codec_context.sample_rate)
      output_stream = output.add_stream(
          encoder, rate=rate, layout=source_stream.codec_context.layout.name)
      reencode = True
    return cls(path, source, source_stream, output_stream, reencode)

  def mux_until(self, seconds) -> None:
    """Muxes the sound that starts before `seconds` (after its start)."""
    output = self._output_stream.container
    while not self._done:
      packet = (self._pending if self._pending is not None
                else self._next_packet())
      if packet is None:
        self._finish()
        return
      start = packet.pts * packet.time_base
      if self._start is None:
        self._start = start
      if start - self._start >= seconds:
        self._pending = packet
        return
      self._pending = None
      if self.reencode:
        for frame in packet.decode():
          frame.pts = None  # The encoder counts samples itself.
          for out_packet in self._output_stream.encode(frame):
            output.mux(out_packet)
      else:
        packet.stream = self._output_stream
        output.mux(packet)

  def _next_packet(self):
    for packet in self._packets:
      # The demuxer ends with an empty flush packet; skip any packet
      # without a timestamp.
      if packet.pts is not None and packet.size:
        return packet
    return None

  def _finish(self) -> None:
    self._done = True
    if self.reencode:
      output = self._output_stream.container
      for out_packet in self._output_stream.encode(None):
        output.mux(out_packet)

  def finish(self) -> None:
    """Ends the sound here (at the video's end): flushes a re-encoder."""
    if not self._done:
      self._finish()

  def close(self) -> None:
    """Closes the source file."""
    self._source.close()
