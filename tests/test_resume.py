"""Interrupt and resume: checkpoints beside the output, bit-for-bit
continuation, and the checkpoints that must not be used."""

import errno
import glob
import json
import os

import numpy as np
import pytest

from nst_jax import cli, run as run_lib
from nst_jax.engine import resume
from nst_jax.errors import UserError
from nst_jax.io import checkpoints as checkpoint_files

@pytest.fixture(autouse=True)
def every_checkpoint_is_written(monkeypatch):
  """Tiny runs' steps are fast next to a write: the 2% rule would skip
  their periodic checkpoints (it has its own test)."""
  monkeypatch.setattr(resume, 'MAX_SHARE', float('inf'))


def test_periodic_writes_keep_to_their_share_of_the_time(monkeypatch):
  import time  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(resume, 'MAX_SHARE', 0.02)
  checkpoints = resume.Checkpoints(None, every=10)
  state = {'pairs': np.zeros((1000, 1000), np.float32)}  # 4 MB: 20 ms
  checkpoints._since = time.perf_counter() - 0.5  # pylint: disable=protected-access
  assert not checkpoints.due(10, 20, state)  # 20 ms > 2% of 0.5 s
  checkpoints._since -= 1.0  # pylint: disable=protected-access
  assert checkpoints.due(10, 20, state)
  assert not checkpoints.due(11, 19, state)  # no multiple of 10 passed
  assert checkpoints.due(19, 21, state)
  checkpoints._write_estimate = 0.1  # pylint: disable=protected-access
  assert not checkpoints.due(19, 21, state)  # measured: needs 5 s
  checkpoints._since -= 4.0  # pylint: disable=protected-access
  assert checkpoints.due(19, 21, state)


# 9 steps in chunks of 3, a checkpoint at every chunk.
STEPS = dict(iterations=9, log_every=3, checkpoint_every=3)
CASES = {
    'lbfgs': dict(optimizer='lbfgs'),
    'lbfgs_nols': dict(optimizer='lbfgs_nols'),
    'adam': dict(optimizer='adam'),
    'sweep_vmap': dict(optimizer='lbfgs', sweep_mode='vmap',
                       sweep_style_weight=(1e-2, 1e-1)),
    # 6 steps at 16 px, then 9 at 32 px.
    'coarse_to_fine': dict(optimizer='lbfgs', coarse_to_fine=1,
                           coarse_iterations=6),
}


def _stop_at_poll(polls):
  """should_stop: True at its `polls`-th call (the loop asks before each
  chunk, so polls - 1 chunks run)."""
  count = []

  def should_stop():
    count.append(1)
    return len(count) >= polls
  return should_stop


def _interrupt(config, polls):
  with pytest.raises(run_lib.Interrupted) as caught:
    run_lib.run(config, should_stop=_stop_at_poll(polls))
  return caught.value.manifest


def _files(manifest):
  outputs = manifest['outputs']
  paths = list(outputs.get('images') or [outputs['image']])
  paths += [outputs['grid']] if outputs.get('grid') else []
  return [open(path, 'rb').read() for path in paths]


def _results(manifest):
  runs = manifest.get('runs', [manifest])
  return [{key: run[key] for key in ('final', 'evaluations', 'history',
                                      'iterations_done', 'stop_reason',
                                      'initial')} for run in runs]


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_resumed_run_ends_as_the_uninterrupted_run(tmp_path, small_config,
                                                     case, caplog):
  fields = dict(STEPS, **CASES[case])
  whole = run_lib.run(small_config(tmp_path / 'whole', **fields))
  config = small_config(tmp_path / 'split', **fields)
  # After one chunk (in the coarse level, for coarse to fine).
  partial = _interrupt(config, 2)
  checkpoint = str(tmp_path / 'split' / 'out' / 'result.ckpt')
  assert partial['partial'] and partial['checkpoint'] == checkpoint
  assert os.path.isdir(checkpoint)
  resumed = run_lib.run(config)
  assert resumed['resumed'] == {'checkpoint': checkpoint, 'level': 0,
                                'step': 3}
  total = 15 if case == 'coarse_to_fine' else 9
  assert f'resuming at step 3 of {total}' in caplog.text
  assert _results(resumed) == _results(whole)
  assert _files(resumed) == _files(whole)
  assert not os.path.exists(checkpoint)  # removed once complete
  assert whole['resumed'] is None and whole['checkpoint'] is None


def test_coarse_to_fine_resumed_in_its_second_level(tmp_path, small_config):
  fields = dict(STEPS, **CASES['coarse_to_fine'])
  whole = run_lib.run(small_config(tmp_path / 'whole', **fields))
  config = small_config(tmp_path / 'split', **fields)
  _interrupt(config, 4)  # 2 chunks at 16 px, 1 at 32 px
  resumed = run_lib.run(config)
  assert resumed['resumed']['level'] == 1
  assert resumed['resumed']['step'] == 9
  assert _results(resumed) == _results(whole)
  assert _files(resumed) == _files(whole)


def test_periodic_checkpoints_replace_each_other(tmp_path, small_config):
  """Every `checkpoint_every` steps one checkpoint, the previous removed;
  `checkpoint_every=0` writes one only when interrupted."""
  config = small_config(tmp_path, **STEPS)
  _interrupt(config, 3)  # 2 chunks: checkpoints after steps 3 and 6
  folder = checkpoint_files.CheckpointFolder(
      str(tmp_path / 'out' / 'result.ckpt'))
  # The second replaced the first; the interruption came at step 6 too,
  # whose state was already written.
  assert folder.latest() == 2
  assert os.listdir(folder.path) == ['2']
  meta = folder.latest_meta()
  assert meta['progress']['current']['histories'][0][-1]['iteration'] == 6
  folder.close()
  again = small_config(tmp_path / 'b', **dict(STEPS, checkpoint_every=0))
  _interrupt(again, 3)
  folder = checkpoint_files.CheckpointFolder(
      str(tmp_path / 'b' / 'out' / 'result.ckpt'))
  assert folder.latest() == 1
  folder.close()


def test_another_config_or_other_inputs_start_over_and_say_why(
    tmp_path, small_config, caplog):
  from nst_jax.io import images, scenes  # pylint: disable=g-import-not-at-top
  content = tmp_path / 'content.png'
  images.save_image(content, scenes.demo_content(32))
  config = small_config(tmp_path, content=str(content), **STEPS)
  _interrupt(config, 2)
  other = small_config(tmp_path, content=str(content),
                       **dict(STEPS, style_weight=0.5))
  _interrupt(other, 2)
  assert ('made with another config (style_weight differ); starting over'
          in caplog.text)
  images.save_image(content, 255 - scenes.demo_content(32))
  caplog.clear()
  manifest = run_lib.run(other)
  assert 'made with other inputs; starting over' in caplog.text
  assert manifest['resumed'] is None
  assert manifest['history'][0]['iteration'] == 0
  assert manifest['iterations_done'] == 9


def test_resume_never_starts_over(tmp_path, small_config):
  config = small_config(tmp_path, **STEPS)
  _interrupt(config, 2)
  config.resume = 'never'
  manifest = run_lib.run(config)
  assert manifest['resumed'] is None and manifest['iterations_done'] == 9
  assert not os.path.exists(tmp_path / 'out' / 'result.ckpt')


@pytest.fixture(name='interrupted')
def interrupted_fixture(tmp_path, small_config):
  """(config, checkpoint folder, the partial image's bytes)."""
  config = small_config(tmp_path, **STEPS)
  manifest = _interrupt(config, 2)
  return config, manifest['checkpoint'], _files(manifest)[0]


def _refused(config, capsys):
  """The run's one-line error and its exit status, as the command line
  prints them."""
  with pytest.raises(UserError) as caught:
    run_lib.run(config)
  status = cli.report(caught.value)
  line = capsys.readouterr().err.strip()
  assert '\n' not in line
  return status, line


def test_a_truncated_checkpoint_is_refused_and_kept(interrupted, capsys):
  config, folder, image = interrupted
  for path in glob.glob(os.path.join(folder, '*', 'state', '**', 'd', '*'),
                        recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  status, line = _refused(config, capsys)
  assert status == 2
  assert line.startswith(f'error: {folder}/1/state: truncated or corrupted')
  assert 'resume=never' in line
  # Nothing overwritten: the checkpoint and the partial image stay.
  assert os.listdir(folder) == ['1']
  with open(config.output, 'rb') as f:
    assert f.read() == image


def test_an_older_format_is_refused(interrupted, capsys):
  config, folder, _ = interrupted
  meta_file = os.path.join(folder, '1', 'meta', 'metadata')
  with open(meta_file) as f:
    meta = json.load(f)
  meta['format_version'] = 0
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  status, line = _refused(config, capsys)
  assert status == 2
  assert f'{folder}/1/meta: checkpoint format version 0' in line


def test_a_checkpoint_of_other_devices_is_refused(interrupted, capsys):
  config, folder, _ = interrupted
  meta_file = os.path.join(folder, '1', 'meta', 'metadata')
  with open(meta_file) as f:
    meta = json.load(f)
  meta['fingerprint']['devices'].update(devices=4, processes=2)
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  status, line = _refused(config, capsys)
  assert status == 2
  assert (f'error: {folder}: made on other devices (devices 4 there, 1 here, '
          'processes 2 there, 1 here)') in line


@pytest.mark.parametrize('what', ['file', 'junk'])
def test_what_is_not_a_checkpoint_is_refused(tmp_path, small_config, capsys,
                                             what):
  folder = tmp_path / 'out' / 'result.ckpt'
  os.makedirs(folder.parent)
  if what == 'file':
    folder.write_text('not a checkpoint')
  else:
    os.makedirs(folder / 'photos')
  status, line = _refused(small_config(tmp_path, **STEPS), capsys)
  assert status == 2 and line.startswith(f'error: {folder}: ')
  assert 'not a checkpoint folder' in line or 'is not a checkpoint' in line
  assert not (tmp_path / 'out' / 'result.png').exists()


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, small_config,
                                                      monkeypatch, capsys):
  """A full disk at the second checkpoint: one line, and the first one is
  still whole: the rerun resumes from it and ends as the run would have."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  whole = run_lib.run(small_config(tmp_path / 'whole', **STEPS))
  config = small_config(tmp_path / 'split', **STEPS)
  save = ocp.CheckpointManager.save
  calls = []

  def fails_second_time(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save(self, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', fails_second_time)
  status, line = _refused(config, capsys)
  folder = str(tmp_path / 'split' / 'out' / 'result.ckpt')
  assert status == 2
  assert line == (f'error: {folder}: writing a checkpoint failed (No space '
                  'left on device); the previous checkpoint, if any, is kept')
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  resumed = run_lib.run(config)
  assert resumed['resumed']['step'] == 3
  assert _results(resumed) == _results(whole)


def test_an_output_folder_gone_mid_run_is_one_line(tmp_path, small_config,
                                                   capsys):
  """The output folder replaced by a file while the run goes on: the
  checkpoint cannot be written, and the run ends with one line."""
  config = small_config(tmp_path, **STEPS)
  out = tmp_path / 'out'
  polls = []

  def folder_goes():
    polls.append(1)
    if len(polls) == 2:
      for name in os.listdir(out):
        path = out / name
        if path.is_dir():
          import shutil  # pylint: disable=g-import-not-at-top
          shutil.rmtree(path)
        else:
          path.unlink()
      out.rmdir()
      out.write_text('a file where the folder was')
    return len(polls) >= 2

  with pytest.raises(UserError) as caught:
    run_lib.run(config, should_stop=folder_goes)
  assert cli.report(caught.value) == 2
  line = capsys.readouterr().err.strip()
  assert '\n' not in line and str(out) in line


def test_a_checkpoint_of_other_weights_starts_over(interrupted, caplog):
  config, folder, _ = interrupted
  meta_file = os.path.join(folder, '1', 'meta', 'metadata')
  with open(meta_file) as f:
    meta = json.load(f)
  meta['fingerprint']['weights'].update(random=False, sha256='0' * 64)
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  manifest = run_lib.run(config)
  assert f'{folder}: made with other weights; starting over' in caplog.text
  assert manifest['resumed'] is None and manifest['iterations_done'] == 9


@pytest.mark.parametrize('field,value', [('checkpoint_every', 5),
                                         ('resume', 'never')])
def test_stylize_refuses_the_checkpoint_fields(field, value):
  import nst_jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match=f'^{field}: stylize writes no files, '
                     'so no checkpoints'):
    nst_jax.stylize('builtin:scene', 'builtin:painting', **{field: value})
