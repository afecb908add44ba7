"""Tests of nst_jax.io.video_write on synthetic 6-frame, 48 x 64 clips."""

import os

import av
import numpy as np
import pytest

from nst_jax.io import video_read, video_write
from nst_jax.errors import UserError
from video_clips import (LOSSY_TOLERANCE, mean_abs_diff, sliding_clip,
                         write_clip, write_mp4)


@pytest.fixture(scope='module', name='clip')
def clip_fixture():
  return sliding_clip(frames=6, height=48, width=64)


def _leftovers(folder):
  return [name for name in os.listdir(folder) if name.endswith('.tmp')]


@pytest.mark.parametrize('fps', [12.0, 29.97])
def test_mp4_round_trip(tmp_path, clip, fps):
  path = write_clip(tmp_path / 'out.mp4', clip, fps=fps)
  info = video_read.probe(path)
  assert info == video_read.ClipInfo(
      path=path, frame_count=6, fps=pytest.approx(fps, abs=0.01), width=64,
      height=48, has_audio=False, frame_names=())
  frames = list(video_read.read_frames(path))
  assert len(frames) == 6
  assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
  assert mean_abs_diff(frames, clip) < LOSSY_TOLERANCE
  assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('suffix', ['.mov', '.mkv', '.avi', '.webm'])
def test_other_containers_round_trip(tmp_path, clip, suffix):
  path = write_clip(tmp_path / f'out{suffix}', clip)
  info = video_read.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  assert info.fps == pytest.approx(12.0, abs=0.01)
  assert mean_abs_diff(video_read.read_frames(path), clip) < LOSSY_TOLERANCE


def test_writer_accepts_float_frames(tmp_path, clip):
  path = write_clip(tmp_path / 'float.mp4', [f.astype(np.float32) for f in clip])
  assert mean_abs_diff(video_read.read_frames(path), clip) < LOSSY_TOLERANCE


def test_gif_round_trip(tmp_path, clip):
  path = write_clip(tmp_path / 'out.gif', clip, fps=12)
  info = video_read.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  # GIF delays are whole hundredths of a second (8 or 9 at 12 fps).
  assert info.fps == pytest.approx(12.0, abs=0.5)
  frames = list(video_read.read_frames(path))
  assert len(frames) == 6
  # A 256-colour palette per frame.
  assert mean_abs_diff(frames, clip) < LOSSY_TOLERANCE


def test_gif_keeps_repeated_frames(tmp_path, clip):
  path = write_clip(tmp_path / 'still.gif', [clip[0]] * 3 + [clip[1]])
  assert video_read.probe(path).frame_count == 4


def test_odd_size_is_padded(tmp_path, clip):
  odd = [frame[:47, :63] for frame in clip]
  path = write_clip(tmp_path / 'odd.mp4', odd)
  info = video_read.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  frames = list(video_read.read_frames(path))
  assert mean_abs_diff([f[:47, :63] for f in frames], odd) < LOSSY_TOLERANCE
  # The padding repeats the last column.
  assert np.abs(frames[0][:47, 63].astype(int)
                - odd[0][:, 62]).mean() < LOSSY_TOLERANCE


def test_odd_size_gif_is_not_padded(tmp_path, clip):
  path = write_clip(tmp_path / 'odd.gif', [frame[:47, :63] for frame in clip])
  info = video_read.probe(path)
  assert (info.width, info.height) == (63, 47)


def test_audio_is_copied(tmp_path, clip):
  source = write_mp4(clip, tmp_path / 'source.mp4', fps=12, audio_seconds=2)
  assert video_read.probe(source).has_audio
  for suffix in ('.mp4', '.mkv', '.webm'):  # Remuxed, remuxed, re-encoded.
    path = write_clip(tmp_path / f'out{suffix}', clip, audio_from=source)
    info = video_read.probe(path)
    assert info.has_audio and info.frame_count == 6
    with av.open(path) as container:
      audio = container.streams.audio[0]
      seconds = sum(frame.samples for frame in container.decode(audio)
                    ) / audio.sample_rate
    # Cut off at the end of the video (0.5 s), to within an audio frame.
    assert 0.4 < seconds < 0.6
  assert _leftovers(tmp_path) == []


def test_no_audio_without_a_sound_source(tmp_path, clip):
  silent = write_mp4(clip, tmp_path / 'silent.mp4')
  path = write_clip(tmp_path / 'out.mp4', clip, audio_from=silent)
  assert not video_read.probe(path).has_audio
  source = write_mp4(clip, tmp_path / 'source.mp4', audio_seconds=1)
  gif = write_clip(tmp_path / 'out.gif', clip, audio_from=source)
  assert not video_read.probe(gif).has_audio


def test_nothing_left_when_the_block_raises(tmp_path, clip):
  path = tmp_path / 'out.mp4'
  with pytest.raises(RuntimeError):
    with video_write.VideoWriter(path, 12, (64, 48)) as writer:
      writer.write(clip[0])
      raise RuntimeError('stylisation failed')
  assert os.listdir(tmp_path) == []


def test_existing_file_untouched_on_error(tmp_path, clip):
  path = tmp_path / 'out.mp4'
  path.write_bytes(b'old')
  with pytest.raises(ValueError, match='shape'):
    with video_write.VideoWriter(path, 12, (64, 48)) as writer:
      writer.write(clip[0][:40])  # Wrong size.
  assert path.read_bytes() == b'old'
  assert _leftovers(tmp_path) == []


def test_closing_without_frames(tmp_path):
  writer = video_write.VideoWriter(tmp_path / 'out.mp4', 12, (64, 48))
  with pytest.raises(ValueError, match='no frames'):
    writer.close()
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('name, fps, size, match', [
    ('out.png', 12, (64, 48), 'unknown video suffix'),
    ('out.mp4', 0, (64, 48), 'fps'),
    ('out.mp4', float('nan'), (64, 48), 'fps'),
    ('out.mp4', 12, (0, 48), 'size'),
    ('missing/out.mp4', 12, (64, 48), 'cannot write'),
])
def test_writer_refuses_bad_arguments(tmp_path, name, fps, size, match):
  path = str(tmp_path / name)
  with pytest.raises(UserError, match=match) as error:
    video_write.VideoWriter(path, fps, size)
  assert path in str(error.value)
  assert _leftovers(tmp_path) == []


def test_audio_source_missing(tmp_path):
  missing = str(tmp_path / 'missing.mp4')
  with pytest.raises(UserError, match='no such file'):
    video_write.VideoWriter(tmp_path / 'out.mp4', 12, (64, 48),
                         audio_from=missing)
  assert os.listdir(tmp_path) == []
