"""Tests of nst_jax.io.video_io on tiny synthetic clips (48 x 64 px, 6 frames)."""

import os

import av
import numpy as np
from PIL import Image
import pytest

from nst_jax.io import video_io
from nst_jax.errors import UserError
from video_clips import sliding_clip, write_folder, write_mp4

# H.264 at crf 18 with 4:2:0 colour is lossy; on the test texture the
# mean absolute difference is about 3 levels.
LOSSY_TOLERANCE = 8.0


@pytest.fixture(scope='module', name='clip')
def clip_fixture():
  return sliding_clip(frames=6, height=48, width=64)


def _write(path, frames, fps=12.0, **kwargs):
  height, width = frames[0].shape[:2]
  with video_io.VideoWriter(path, fps, (width, height), **kwargs) as writer:
    for frame in frames:
      writer.write(frame)
  return str(path)


def _mean_abs_diff(frames_a, frames_b):
  return float(np.mean([np.abs(a.astype(np.int16) - b).mean()
                        for a, b in zip(frames_a, frames_b)]))


def _leftovers(folder):
  return [name for name in os.listdir(folder) if name.endswith('.tmp')]


def test_is_video(tmp_path):
  for name in ('a.mp4', 'a.MOV', 'a.mkv', 'a.webm', 'a.avi', 'a.gif'):
    assert video_io.is_video(tmp_path / name)
  assert video_io.is_video(tmp_path)  # A folder of frames.
  assert not video_io.is_video(tmp_path / 'a.png')
  assert not video_io.is_video('a.mp4.txt')


@pytest.mark.parametrize('fps', [12.0, 29.97])
def test_mp4_round_trip(tmp_path, clip, fps):
  path = _write(tmp_path / 'out.mp4', clip, fps=fps)
  info = video_io.probe(path)
  assert info == video_io.ClipInfo(
      path=path, frame_count=6, fps=pytest.approx(fps, abs=0.01), width=64,
      height=48, has_audio=False, frame_names=())
  frames = list(video_io.read_frames(path))
  assert len(frames) == 6
  assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
  assert _mean_abs_diff(frames, clip) < LOSSY_TOLERANCE
  assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('suffix', ['.mov', '.mkv', '.avi', '.webm'])
def test_other_containers_round_trip(tmp_path, clip, suffix):
  path = _write(tmp_path / f'out{suffix}', clip)
  info = video_io.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  assert info.fps == pytest.approx(12.0, abs=0.01)
  assert _mean_abs_diff(video_io.read_frames(path), clip) < LOSSY_TOLERANCE


def test_reads_a_file_written_elsewhere(tmp_path, clip):
  path = write_mp4(clip, tmp_path / 'plain.mp4', fps=24)
  info = video_io.probe(path)
  assert (info.frame_count, info.fps, info.width) == (6, 24.0, 64)
  assert _mean_abs_diff(video_io.read_frames(path), clip) < LOSSY_TOLERANCE


def test_writer_accepts_float_frames(tmp_path, clip):
  path = _write(tmp_path / 'float.mp4', [f.astype(np.float32) for f in clip])
  assert _mean_abs_diff(video_io.read_frames(path), clip) < LOSSY_TOLERANCE


def test_gif_round_trip(tmp_path, clip):
  path = _write(tmp_path / 'out.gif', clip, fps=12)
  info = video_io.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  # GIF delays are whole hundredths of a second (8 or 9 at 12 fps).
  assert info.fps == pytest.approx(12.0, abs=0.5)
  frames = list(video_io.read_frames(path))
  assert len(frames) == 6
  # A 256-colour palette per frame.
  assert _mean_abs_diff(frames, clip) < LOSSY_TOLERANCE


def test_gif_keeps_repeated_frames(tmp_path, clip):
  path = _write(tmp_path / 'still.gif', [clip[0]] * 3 + [clip[1]])
  assert video_io.probe(path).frame_count == 4


def test_odd_size_is_padded(tmp_path, clip):
  odd = [frame[:47, :63] for frame in clip]
  path = _write(tmp_path / 'odd.mp4', odd)
  info = video_io.probe(path)
  assert (info.frame_count, info.width, info.height) == (6, 64, 48)
  frames = list(video_io.read_frames(path))
  assert _mean_abs_diff([f[:47, :63] for f in frames], odd) < LOSSY_TOLERANCE
  # The padding repeats the last column.
  assert np.abs(frames[0][:47, 63].astype(int)
                - odd[0][:, 62]).mean() < LOSSY_TOLERANCE


def test_odd_size_gif_is_not_padded(tmp_path, clip):
  path = _write(tmp_path / 'odd.gif', [frame[:47, :63] for frame in clip])
  info = video_io.probe(path)
  assert (info.width, info.height) == (63, 47)


def test_folder_round_trip_is_exact(tmp_path, clip):
  folder = write_folder(clip, tmp_path / 'frames')
  # Files that are not frames are ignored.
  (tmp_path / 'frames' / 'notes.txt').write_text('not a frame')
  (tmp_path / 'frames' / '.hidden.png').write_bytes(b'junk')
  info = video_io.probe(folder)
  assert info == video_io.ClipInfo(
      path=folder, frame_count=6, fps=None, width=64, height=48,
      has_audio=False,
      frame_names=tuple(f'frame_{i:04d}.png' for i in range(6)))
  frames = list(video_io.read_frames(folder))
  assert len(frames) == 6
  for frame, original in zip(frames, clip):
    np.testing.assert_array_equal(frame, original)


def test_folder_converts_to_rgb(tmp_path, clip):
  folder = tmp_path / 'grey'
  folder.mkdir()
  Image.fromarray(clip[0][..., 0]).save(folder / 'a.png')
  [frame] = video_io.read_frames(folder)
  assert frame.shape == (48, 64, 3)
  np.testing.assert_array_equal(frame[..., 2], clip[0][..., 0])


def test_audio_is_copied(tmp_path, clip):
  source = write_mp4(clip, tmp_path / 'source.mp4', fps=12, audio_seconds=2)
  assert video_io.probe(source).has_audio
  for suffix in ('.mp4', '.mkv', '.webm'):  # Remuxed, remuxed, re-encoded.
    path = _write(tmp_path / f'out{suffix}', clip, audio_from=source)
    info = video_io.probe(path)
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
  path = _write(tmp_path / 'out.mp4', clip, audio_from=silent)
  assert not video_io.probe(path).has_audio
  source = write_mp4(clip, tmp_path / 'source.mp4', audio_seconds=1)
  gif = _write(tmp_path / 'out.gif', clip, audio_from=source)
  assert not video_io.probe(gif).has_audio


def test_missing_path(tmp_path):
  missing = str(tmp_path / 'missing.mp4')
  for function in (video_io.probe, video_io.read_frames):
    with pytest.raises(UserError, match='no such file') as error:
      function(missing)
    assert missing in str(error.value)


def test_random_bytes(tmp_path):
  path = tmp_path / 'noise.mp4'
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  for function in (video_io.probe, video_io.read_frames):
    with pytest.raises(UserError, match='not a video file') as error:
      function(path)
    assert str(path) in str(error.value)


def test_empty_file(tmp_path):
  path = tmp_path / 'empty.mp4'
  path.write_bytes(b'')
  with pytest.raises(UserError, match='empty file'):
    video_io.probe(path)


def test_image_is_not_a_video(tmp_path, clip):
  path = tmp_path / 'still.mp4'
  Image.fromarray(clip[0]).save(path, format='PNG')
  # FFmpeg reads a PNG as a one-frame video whatever its name: that is fine.
  assert video_io.probe(path).frame_count == 1
  text = tmp_path / 'text.mp4'
  text.write_text('hello\n' * 100)
  with pytest.raises(UserError, match=str(text)):
    video_io.probe(text)


@pytest.mark.parametrize('writer', ['video_io', 'plain'])
def test_truncated_mp4(tmp_path, clip, writer):
  # nst_jax writes the index first ('faststart'): a truncated file opens
  # but fails to decode. A plain mp4 has its index last and cut off.
  if writer == 'video_io':
    path = _write(tmp_path / 'cut.mp4', clip * 3)
  else:
    path = write_mp4(clip * 3, tmp_path / 'cut.mp4')
  data = open(path, 'rb').read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  with pytest.raises(UserError) as error:
    video_io.probe(path)
  assert path in str(error.value)
  with pytest.raises(UserError):
    for _ in video_io.read_frames(path):
      pass


def test_empty_folder(tmp_path):
  folder = tmp_path / 'empty'
  folder.mkdir()
  (folder / 'readme.txt').write_text('no frames here')
  for function in (video_io.probe, video_io.read_frames):
    with pytest.raises(UserError, match='no image files') as error:
      function(folder)
    assert str(folder) in str(error.value)


def test_folder_with_different_sizes(tmp_path, clip):
  folder = write_folder(clip[:2], tmp_path / 'frames')
  Image.fromarray(clip[2][:40]).save(os.path.join(folder, 'frame_0002.png'))
  with pytest.raises(UserError) as error:
    video_io.probe(folder)
  message = str(error.value)
  assert 'frame_0002.png' in message and folder in message
  assert '64x40' in message and '64x48' in message
  with pytest.raises(UserError, match='frame_0002.png'):
    video_io.read_frames(folder)


def test_folder_with_a_corrupt_image(tmp_path, clip):
  folder = write_folder(clip[:2], tmp_path / 'frames')
  with open(os.path.join(folder, 'frame_0002.png'), 'wb') as file:
    file.write(b'not a png')
  with pytest.raises(UserError, match='frame_0002.png'):
    video_io.probe(folder)


def test_nothing_left_when_the_block_raises(tmp_path, clip):
  path = tmp_path / 'out.mp4'
  with pytest.raises(RuntimeError):
    with video_io.VideoWriter(path, 12, (64, 48)) as writer:
      writer.write(clip[0])
      raise RuntimeError('stylisation failed')
  assert os.listdir(tmp_path) == []


def test_existing_file_untouched_on_error(tmp_path, clip):
  path = tmp_path / 'out.mp4'
  path.write_bytes(b'old')
  with pytest.raises(ValueError, match='shape'):
    with video_io.VideoWriter(path, 12, (64, 48)) as writer:
      writer.write(clip[0][:40])  # Wrong size.
  assert path.read_bytes() == b'old'
  assert _leftovers(tmp_path) == []


def test_closing_without_frames(tmp_path):
  writer = video_io.VideoWriter(tmp_path / 'out.mp4', 12, (64, 48))
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
    video_io.VideoWriter(path, fps, size)
  assert path in str(error.value)
  assert _leftovers(tmp_path) == []


def test_audio_source_missing(tmp_path):
  missing = str(tmp_path / 'missing.mp4')
  with pytest.raises(UserError, match='no such file'):
    video_io.VideoWriter(tmp_path / 'out.mp4', 12, (64, 48),
                         audio_from=missing)
  assert os.listdir(tmp_path) == []
