"""Tests of nst_jax.io.video_read on synthetic 6-frame, 48 x 64 clips."""

import os

import numpy as np
from PIL import Image
import pytest

from nst_jax.io import video_read
from nst_jax.errors import UserError
from video_clips import (LOSSY_TOLERANCE, mean_abs_diff, sliding_clip,
                         write_clip, write_folder, write_mp4)


@pytest.fixture(scope='module', name='clip')
def clip_fixture():
  return sliding_clip(frames=6, height=48, width=64)


def test_is_video(tmp_path):
  for name in ('a.mp4', 'a.MOV', 'a.mkv', 'a.webm', 'a.avi', 'a.gif'):
    assert video_read.is_video(tmp_path / name)
  assert video_read.is_video(tmp_path)  # A folder of frames.
  assert not video_read.is_video(tmp_path / 'a.png')
  assert not video_read.is_video('a.mp4.txt')


def test_reads_a_file_written_elsewhere(tmp_path, clip):
  path = write_mp4(clip, tmp_path / 'plain.mp4', fps=24)
  info = video_read.probe(path)
  assert (info.frame_count, info.fps, info.width) == (6, 24.0, 64)
  assert mean_abs_diff(video_read.read_frames(path), clip) < LOSSY_TOLERANCE


def test_folder_round_trip_is_exact(tmp_path, clip):
  folder = write_folder(clip, tmp_path / 'frames')
  # Files that are not frames are ignored.
  (tmp_path / 'frames' / 'notes.txt').write_text('not a frame')
  (tmp_path / 'frames' / '.hidden.png').write_bytes(b'junk')
  info = video_read.probe(folder)
  assert info == video_read.ClipInfo(
      path=folder, frame_count=6, fps=None, width=64, height=48,
      has_audio=False,
      frame_names=tuple(f'frame_{i:04d}.png' for i in range(6)))
  frames = list(video_read.read_frames(folder))
  assert len(frames) == 6
  for frame, original in zip(frames, clip):
    np.testing.assert_array_equal(frame, original)


def test_folder_converts_to_rgb(tmp_path, clip):
  folder = tmp_path / 'grey'
  folder.mkdir()
  Image.fromarray(clip[0][..., 0]).save(folder / 'a.png')
  [frame] = video_read.read_frames(folder)
  assert frame.shape == (48, 64, 3)
  np.testing.assert_array_equal(frame[..., 2], clip[0][..., 0])


def test_missing_path(tmp_path):
  missing = str(tmp_path / 'missing.mp4')
  for function in (video_read.probe, video_read.read_frames):
    with pytest.raises(UserError, match='no such file') as error:
      function(missing)
    assert missing in str(error.value)


def test_random_bytes(tmp_path):
  path = tmp_path / 'noise.mp4'
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  for function in (video_read.probe, video_read.read_frames):
    with pytest.raises(UserError, match='not a video file') as error:
      function(path)
    assert str(path) in str(error.value)


def test_empty_file(tmp_path):
  path = tmp_path / 'empty.mp4'
  path.write_bytes(b'')
  with pytest.raises(UserError, match='empty file'):
    video_read.probe(path)


def test_image_is_not_a_video(tmp_path, clip):
  path = tmp_path / 'still.mp4'
  Image.fromarray(clip[0]).save(path, format='PNG')
  # FFmpeg reads a PNG as a one-frame video whatever its name: that is fine.
  assert video_read.probe(path).frame_count == 1
  text = tmp_path / 'text.mp4'
  text.write_text('hello\n' * 100)
  with pytest.raises(UserError, match=str(text)):
    video_read.probe(text)


@pytest.mark.parametrize('writer', ['video_write', 'plain'])
def test_truncated_mp4(tmp_path, clip, writer):
  # nst_jax writes the index first ('faststart'): a truncated file opens
  # but fails to decode. A plain mp4 has its index last and cut off.
  if writer == 'video_write':
    path = write_clip(tmp_path / 'cut.mp4', clip * 3)
  else:
    path = write_mp4(clip * 3, tmp_path / 'cut.mp4')
  data = open(path, 'rb').read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  with pytest.raises(UserError) as error:
    video_read.probe(path)
  assert path in str(error.value)
  with pytest.raises(UserError):
    for _ in video_read.read_frames(path):
      pass


def test_empty_folder(tmp_path):
  folder = tmp_path / 'empty'
  folder.mkdir()
  (folder / 'readme.txt').write_text('no frames here')
  for function in (video_read.probe, video_read.read_frames):
    with pytest.raises(UserError, match='no image files') as error:
      function(folder)
    assert str(folder) in str(error.value)


def test_folder_with_different_sizes(tmp_path, clip):
  folder = write_folder(clip[:2], tmp_path / 'frames')
  Image.fromarray(clip[2][:40]).save(os.path.join(folder, 'frame_0002.png'))
  with pytest.raises(UserError) as error:
    video_read.probe(folder)
  message = str(error.value)
  assert 'frame_0002.png' in message and folder in message
  assert '64x40' in message and '64x48' in message
  with pytest.raises(UserError, match='frame_0002.png'):
    video_read.read_frames(folder)


def test_folder_with_a_corrupt_image(tmp_path, clip):
  folder = write_folder(clip[:2], tmp_path / 'frames')
  with open(os.path.join(folder, 'frame_0002.png'), 'wb') as file:
    file.write(b'not a png')
  with pytest.raises(UserError, match='frame_0002.png'):
    video_read.probe(folder)
