"""The web page's parts that need no browser: its fields, settings, uploads,
jobs and the `serve` command's checks."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from nst_jax import cli
from nst_jax.configs import default
from nst_jax.errors import UserError
from nst_jax.web import jobs, serve


def test_every_documented_field_has_one_place_on_the_page():
  config = default.get_config()
  docs = cli.documented_fields()
  leaves = [p for p in docs if not hasattr(cli.field_value(config, p),
                                           'items')]
  advanced = [f.path for f in jobs.advanced_fields(config)]
  video = [f.path for f in jobs.advanced_fields(config, video=True)]
  placed = (list(jobs.MAIN_FIELDS) + advanced + video
            + [p for p in leaves if p.split('.')[0] in
               jobs.SERVER_FIELDS + jobs.UPLOAD_FIELDS + ('sweep',)])
  assert sorted(placed) == sorted(leaves)
  assert len(placed) == len(set(placed))
  assert all(p.startswith('video.') for p in video)
  # The controls carry the documentation's words.
  lbfgs_memory = next(f for f in jobs.advanced_fields(config)
                      if f.path == 'lbfgs_memory')
  assert lbfgs_memory.meaning == docs['lbfgs_memory'].meaning
  assert lbfgs_memory.kind == 'int' and lbfgs_memory.default == 100


def test_fields_take_their_types_and_choices():
  config = default.get_config()
  assert jobs.field(config, 'optimizer').choices == ('lbfgs', 'lbfgs_nols',
                                                     'adam', 'sgd')
  assert jobs.field(config, 'shard_rows').kind == 'bool'
  assert jobs.field(config, 'video.long_term').kind == 'tuple'
  made = jobs.config_for(config, {
      'iterations': 40.0, 'style_weight': '0.01', 'video.long_term': '(1, 2)',
      'optimizer': 'adam', 'shard_rows': True, 'stop_loss': '-inf'})
  assert made.iterations == 40 and isinstance(made.iterations, int)
  assert made.style_weight == 0.01
  assert made.video.long_term == (1, 2)
  assert made.optimizer == 'adam' and made.shard_rows is True
  assert made.stop_loss == float('-inf')
  assert config.iterations == 500  # the server's config is not changed


@pytest.mark.parametrize('values, message', [
    ({'iterations': 'ten'}, "iterations: expected an integer, got 'ten'"),
    ({'iterations': 2.5}, 'iterations: expected an integer, got 2.5'),
    ({'style_weight': 'x'}, "style_weight: expected a number, got 'x'"),
    ({'optimizer': 'bfgs'}, 'optimizer: expected one of lbfgs, lbfgs_nols, '
                            "adam, sgd, got 'bfgs'"),
    ({'weights': '/etc/passwd'}, "weights: set by the server's command "
                                 'line, not the page'),
    ({'output': 'x.png'}, "output: set by the server's command line"),
    ({'nonsense': 1}, 'nonsense: no such field'),
])
def test_bad_control_values_are_one_line(values, message):
  with pytest.raises(UserError, match='^' + message.replace('(', r'\(')
                     .replace(')', r'\)')):
    jobs.config_for(default.get_config(), values)


def test_sweep_values():
  assert jobs.sweep_values('style_weight', '1e-4, 1e-3 1e-2') == (
      1e-4, 1e-3, 1e-2)
  assert jobs.sweep_values('seed', '1,2') == (1, 2)
  for name, text, message in [
      ('style_weight', '1e-3', 'give two values or more'),
      ('style_weight', '1e-3, x', 'expected numbers'),
      ('image_size', '32, 64', 'cannot be swept from the page')]:
    with pytest.raises(UserError, match=message):
      jobs.sweep_values(name, text)


def test_changed_settings_are_described_against_the_server():
  base = default.get_config()
  made = jobs.config_for(base, {'iterations': 40, 'style_weight': 0.01})
  assert jobs.describe_settings(made, base) == ('iterations=40, '
                                                'style_weight=0.01')
  assert jobs.describe_settings(base, base) == "the server's settings"


def test_a_run_folder_takes_only_received_files(tmp_path):
  uploads = tmp_path / 'uploads'
  uploads.mkdir()
  (uploads / 'a.png').write_bytes(b'x')
  secret = tmp_path / 'secret.txt'
  secret.write_text('no')
  (uploads / 'link.png').symlink_to(secret)
  folder = jobs.RunFolder(str(tmp_path / 'runs'), [str(uploads)])
  taken = folder.take(jobs.Upload(str(uploads / 'a.png'), '../../my photo.png'),
                      'content image')
  assert os.path.dirname(taken) == folder.path
  assert os.path.basename(taken) == '0_my_photo.png'
  for path in (str(secret), str(uploads / 'link.png'),
               str(uploads / '..' / 'secret.txt'), '/etc/passwd'):
    with pytest.raises(UserError, match='not a file this page received'):
      folder.take(jobs.Upload(path, 'x.png'), 'content image')
  assert folder.message(UserError(f"content image {taken!r}: truncated")) == (
      "content image 'my_photo.png': truncated")
  folder.remove()
  assert not os.path.exists(folder.path)


def test_a_job_yields_updates_then_its_value_and_stops_when_cancelled():
  cancel = threading.Event()

  def work(on_update, should_stop):
    step = 0
    while not should_stop() and step < 1000:
      step += 1
      on_update(step, [{'total': 1.0 / step}], ['image'])
      time.sleep(0.002)
    return step

  seen = []
  for item in jobs.Job(work, 1000, cancel).updates():
    seen.append(item)
    if isinstance(item, jobs.Update) and item.step >= 5:
      cancel.set()
  done = seen[-1]
  assert isinstance(done, jobs.Done) and done.error is None
  assert 5 <= done.value < 1000
  updates = seen[:-1]
  assert all(isinstance(u, jobs.Update) for u in updates)
  steps = [u.step for u in updates]
  assert steps == sorted(steps) and steps[-1] <= done.value
  assert updates[0].rate is None
  later = [u for u in updates if u.rate]
  assert later and all(u.seconds_left == pytest.approx(
      (1000 - u.step) / u.rate) for u in later)


def test_a_job_reports_its_error():
  def work(on_update, should_stop):
    raise UserError('style: bad')
  items = list(jobs.Job(work, 1, threading.Event()).updates())
  assert len(items) == 1 and str(items[0].error) == 'style: bad'


def test_progress_lines():
  update = jobs.Update(40, 100, [], [], rate=4.0, seconds_left=15.0)
  assert jobs.format_progress(update) == ('step 40 of 100 · 4 steps/s · '
                                          '15 s left')
  assert jobs.format_terms({'total': 12345.0, 'content': 0.5,
                            'style': float('nan')}) == (
                                'total 1.23e+04 · content 0.5')


def test_loopback_hosts():
  assert serve.is_loopback('127.0.0.1') and serve.is_loopback('localhost')
  assert serve.is_loopback('::1')
  assert not serve.is_loopback('0.0.0.0') and not serve.is_loopback(
      '192.168.1.2')


def _serve(*args, timeout=60):
  return subprocess.run(
      [sys.executable, '-m', 'nst_jax.main', 'serve', *args],
      capture_output=True, text=True, timeout=timeout, check=False)


def test_serve_refuses_a_bad_config_in_one_line():
  done = _serve('--config.style_weight=-1', '--port=1')
  assert done.returncode == 2
  assert done.stderr.strip().startswith('error: ')
  assert 'style_weight' in done.stderr and len(
      done.stderr.strip().splitlines()) == 1
  for flag, message in [
      ('--config.content=photo.jpg', 'error: --config.content: the page '
       'takes its images as uploads; give none to nst-jax serve'),
      ('--config.sweep.seed=(1,2)', 'error: --config.sweep.seed: the page '
       'has its own sweep controls; give no sweep to nst-jax serve')]:
    done = _serve(flag)
    assert done.returncode == 2 and done.stderr.strip() == message
  done = _serve('--max_upload_mb=0')
  assert done.returncode == 2 and done.stderr.strip() == (
      'error: --max_upload_mb: must be > 0, got 0')


def _upload(url, data: bytes) -> int:
  """POSTs one file to the page's upload route; returns the HTTP status."""
  boundary = 'nstjaxboundary'
  body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
          f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
          ).encode() + data + f'\r\n--{boundary}--\r\n'.encode()
  request = urllib.request.Request(
      f'{url}/gradio_api/upload', data=body, method='POST',
      headers={'Content-Type': f'multipart/form-data; boundary={boundary}'})
  try:
    with urllib.request.urlopen(request) as response:
      return response.status
  except urllib.error.HTTPError as error:
    return error.code


def test_serve_elsewhere_says_who_can_use_it_and_caps_uploads(tmp_path):
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  process = subprocess.Popen(
      [sys.executable, '-m', 'nst_jax.main', 'serve', '--host=0.0.0.0',
       f'--port={port}', '--max_upload_mb=0.01', '--config.weights=random'],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TMPDIR=str(tmp_path)))
  lines = []
  try:
    for line in process.stdout:
      lines.append(line)
      if 'serving nst_jax' in line:
        break
    url = f'http://127.0.0.1:{port}'
    assert _upload(url, b'x' * 5_000) == 200
    assert _upload(url, b'x' * 20_000) == 413  # over 0.01 MB
  finally:
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=30)
  text = ''.join(lines) + process.stdout.read()
  # SIGTERM ends it cleanly: status 143, its temporary folder removed.
  assert returncode == 143, text
  assert not list(tmp_path.glob('nst-jax-serve-*'))
  assert (f'warning: listening on 0.0.0.0: anyone who can reach port {port} '
          'can use this machine') in text, text


def test_the_loss_plot_draws_each_member_falling():
  history = [(step, 1000.0 / step, 'a') for step in range(1, 11)] + [
      (step, 10.0 / step, 'b') for step in range(1, 11)]
  plot = jobs.loss_plot(history, width=200, height=100)
  assert plot.shape == (100, 200, 3) and plot.dtype.name == 'uint8'
  blue = np.all(plot == jobs.PLOT_COLORS[0], axis=-1)
  orange = np.all(plot == jobs.PLOT_COLORS[1], axis=-1)
  assert blue.any() and orange.any()
  # Log scale: member a (larger losses) lies above member b; both fall
  # from left to right.
  assert np.nonzero(blue)[0].mean() < np.nonzero(orange)[0].mean()
  for mask in (blue, orange):
    rows, cols = np.nonzero(mask)
    assert rows[cols < 60].mean() < rows[cols > 140].mean()
  empty = jobs.loss_plot([], width=200, height=100)
  assert not np.all(empty == jobs.PLOT_COLORS[0], axis=-1).any()


def test_a_job_closed_early_stops_its_run_before_returning():
  ended = threading.Event()

  def work(on_update, should_stop):
    step = 0
    while not should_stop():
      step += 1
      on_update(step, [{}], [None])
      time.sleep(0.005)
    ended.set()
    return step

  updates = jobs.Job(work, 10**6, threading.Event()).updates()
  next(updates)
  updates.close()  # as Gradio does when the page is closed
  assert ended.is_set()


def test_a_still_image_refuses_changed_video_fields():
  base = default.get_config()
  jobs.refuse_video_fields(jobs.config_for(base, {
      'video.temporal_weight': base.video.temporal_weight,
      'video.long_term': repr(base.video.long_term)}), base)
  changed = jobs.config_for(base, {'video.temporal_weight': 1.0})
  with pytest.raises(UserError, match=r'^video\.temporal_weight: only for a '
                     r'clip \(upload one under Video\), or set it back to '
                     r'0\.3 for an image$'):
    jobs.refuse_video_fields(changed, base)
  assert jobs.SWEEP_FIELDS == ('content_weight', 'style_weight', 'tv_weight',
                               'seed')
