"""The loop's pieces: level sizes, chunk sizes, progress over levels."""

import io

from nst_jax.engine import loop


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_level_sizes_and_chunk_size():
  assert loop.level_sizes(512, 2) == [128, 256, 512]
  assert loop.level_sizes(512, 0) == [512]
  assert loop.chunk_size(10, 0, 500) == 10
  assert loop.chunk_size(10, 25, 500) == 5  # both every 10th and 25th step
  assert loop.chunk_size(10, 0, 4) == 4


def test_progress_counts_each_levels_steps_and_names_the_level():
  stream = _Terminal()
  progress = loop.TerminalProgress(stream)
  terms = [{'total': 1.5}]
  progress.level(0, 2, 16, 12, 10, first_step=0)
  progress.compiling(16, 12)
  progress.running(0)
  progress.update(10, 11, terms, None)
  progress.close()
  progress.level(1, 2, 32, 24, 20, first_step=10)
  progress.running(10)
  progress.update(20, 22, terms, None)
  progress.update(30, 32, terms, None)
  progress.close()
  text = stream.getvalue()
  assert 'compiling for 16x12' in text
  assert 'level 1/2 16x12 [' in text and ' 10/10 loss 1.5' in text
  assert 'level 2/2 32x24 [' in text
  assert ' 10/20 loss' in text and ' 20/20 loss' in text
  assert '30/20' not in text


def test_single_level_progress_has_no_level_tag():
  stream = _Terminal()
  progress = loop.TerminalProgress(stream)
  progress.level(0, 1, 32, 32, 6, first_step=0)
  progress.running(0)
  progress.update(3, 4, [{'total': None}, {'total': 2.0}], None)
  assert stream.getvalue().startswith('\r[###') and '3/6 loss 2' in (
      stream.getvalue())


def test_a_resumed_run_counts_from_the_step_reached():
  """The bar starts at the checkpoint's step, and the rate and time left
  count only the steps done since."""
  stream = _Terminal()
  progress = loop.TerminalProgress(stream)
  progress.level(1, 2, 32, 32, 100, first_step=50)  # steps 50..150
  progress.running(110)  # resumed 60 steps into this level
  progress.start -= 10.0  # 10 s ago
  progress.update(130, 140, [{'total': 1.0}], None)
  text = stream.getvalue()
  assert ' 80/100 loss 1 ' in text
  rate = float(text.split(' it/s')[0].rsplit(' ', 1)[1])
  assert 1.9 < rate < 2.01  # 20 steps in 10 s, not 80
  assert 'ETA 10s' in text
