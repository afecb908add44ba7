"""The web page (`nst-jax serve`) in a real browser: Debian's Chromium driven
by Playwright, against the real command in a child process, at 48 px with
random weights. Screenshots of the page at the end of each test go to the
test's temporary folder (and, with NST_JAX_SCREENSHOTS=FOLDER, the first
test's to FOLDER/web_page.png, as the README and docs/web.md show)."""

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from playwright.sync_api import sync_playwright

import nst_jax
from nst_jax.configs import default as default_config

CHROMIUM = os.environ.get('NST_JAX_CHROMIUM', '/usr/bin/chromium')
# Chromium on a machine without a network: no background connections.
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-quic', '--no-first-run',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SERVER_FIELDS = dict(
    weights='random', image_size=48, iterations=6, log_every=2,
    optimizer='lbfgs_nols', init='content', content_layers='conv2_1',
    style_layers='conv1_1,conv2_1', style_weight=1e-2, compilation_cache='',
    conv_algorithm='direct')
TIMEOUT_S = 120
# The server's TMPDIR, where it keeps its temporary folder.
SERVER_TMP = {}

pytestmark = pytest.mark.xdist_group('web')


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def server_config():
  config = default_config.get_config()
  config.update(SERVER_FIELDS)
  return config


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  """`python -m nst_jax.main serve` on a free port; yields its URL."""
  port = _free_port()
  log_path = tmp_path_factory.mktemp('server') / 'server.log'
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='true',
             TMPDIR=str(log_path.parent))
  command = [sys.executable, '-m', 'nst_jax.main', 'serve',
             f'--port={port}'] + [f'--config.{k}={v}'
                                  for k, v in SERVER_FIELDS.items()]
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=env)
  url = f'http://127.0.0.1:{port}'
  SERVER_TMP['folder'] = log_path.parent
  deadline = time.time() + 60
  while time.time() < deadline:
    if process.poll() is not None:
      raise AssertionError(f'serve exited: {log_path.read_text()}')
    if 'serving nst_jax on' in log_path.read_text():
      break
    time.sleep(0.2)
  else:
    raise AssertionError(f'serve did not start: {log_path.read_text()}')
  yield url
  process.send_signal(signal.SIGINT)  # Ctrl-C
  assert process.wait(timeout=30) == 130
  leftovers = [p for p in os.listdir(log_path.parent)
               if p.startswith('nst-jax-serve-')]
  assert not leftovers, 'the server left its temporary folder behind'


@pytest.fixture(scope='module')
def browser():
  with sync_playwright() as playwright:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                          args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(name='open_page')
def open_page_fixture(browser, server, tmp_path, request):
  """open_page() -> a new tab (its own browser session) on the page; each
  is screenshotted at the test's end."""
  contexts = []

  def open_page():
    context = browser.new_context(viewport={'width': 1400, 'height': 1000})
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    page.goto(server)
    page.wait_for_selector('#nst-stylize')
    return page

  yield open_page
  for k, context in enumerate(contexts):
    for page in context.pages:
      shot = tmp_path / f'page_{k}.png'
      page.screenshot(path=str(shot), full_page=True)
      folder = os.environ.get('NST_JAX_SCREENSHOTS')
      if folder and k == 0 and request.node.name.startswith(
          'test_the_built_in_scene_and_painting'):
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(shot, os.path.join(folder, 'web_page.png'))
    context.close()


def _image_file(path, seed, size=(40, 48)):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
      path)
  return str(path)


def _upload(page, content, style):
  if content:
    page.locator('#nst-content input[type=file]').set_input_files(content)
  if style:
    page.locator('#nst-styles input[type=file]').set_input_files(style)
  # The uploads are finished when their previews are there.
  if content:
    page.wait_for_selector('#nst-content img')
  if style:
    page.wait_for_selector('#nst-styles img')


def _open(page, accordion, inside):
  """Opens the accordion titled `accordion` until `inside` (a selector in
  it) shows."""
  target = page.locator(inside).first
  for _ in range(10):
    if target.is_visible():
      return
    page.locator('button.label-wrap', has_text=accordion).first.click()
    try:
      target.wait_for(state='visible', timeout=5000)
    except Exception:  # pylint: disable=broad-except  # clicked too early
      pass
  raise AssertionError(f'{accordion} did not open')


def _set_number(page, elem_id, value):
  box = page.locator(f'#{elem_id} input')
  box.fill(str(value))
  box.press('Tab')


def _status(page) -> str:
  """The page's status line (without Gradio's queue tracker over it)."""
  return page.locator('#nst-status [data-testid=markdown]').inner_text().strip()


def _wait_status(page, pattern, timeout_s=TIMEOUT_S, other_than=None) -> str:
  """Waits for a status line that matches `pattern` (and is not
  `other_than`, the line before the click)."""
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    text = _status(page)
    if re.match(pattern, text) and text != other_than:
      return text
    time.sleep(0.1)
  raise AssertionError(f'status never matched {pattern!r}: {_status(page)!r}')


def _downloads(page) -> dict:
  """{file name: bytes} of the Downloads box."""
  out = {}
  for link in page.locator('#nst-downloads a[download]').all():
    with urllib.request.urlopen(link.get_attribute('href')) as response:
      out[link.get_attribute('download')] = response.read()
  return out


def _png(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))


def test_stylize_in_the_page_equals_stylize(open_page, server, tmp_path):
  content = _image_file(tmp_path / 'photo.png', 0)
  style = _image_file(tmp_path / 'painting.png', 1, (50, 50))
  page = open_page()
  requested = []
  page.on('request', lambda request: requested.append(request.url))
  # The controls start from the server's --config flags.
  assert page.locator('#nst-image_size input').input_value() == '48'
  assert page.locator('#nst-iterations input').input_value() == '6'
  assert 'RANDOM, UNTRAINED' in page.inner_text('body')
  _upload(page, content, style)
  page.click('#nst-stylize')
  status = _wait_status(page, r'(Done|error)')
  assert status.startswith('Done'), status
  assert 'RANDOM, UNTRAINED VGG19 weights' in status
  files = _downloads(page)
  assert set(files) == {'result.png', 'result.json'}
  expected = nst_jax.stylize(content, style, config=server_config())
  np.testing.assert_array_equal(_png(files['result.png']), expected.image)
  manifest = json.loads(files['result.json'])
  assert manifest['weights']['random'] is True
  assert manifest['final'] == expected.manifest['final']
  # The run's folder (its copies of the uploads) went with it.
  (server_folder,) = SERVER_TMP['folder'].glob('nst-jax-serve-*')
  assert not list((server_folder / 'runs').iterdir())
  # The session's gallery holds it, captioned as made with random weights.
  page.wait_for_selector('#nst-gallery img')
  assert 'RANDOM' in page.locator('#nst-gallery').inner_text()
  # The page calls no one but its server (no analytics, fonts or updates).
  page.reload()
  page.wait_for_selector('#nst-stylize')
  assert requested and all(url.startswith(server) or url.startswith('data:')
                           or url.startswith('blob:') for url in requested), [
                               u for u in requested if not u.startswith(server)]


def test_the_built_in_scene_and_painting(open_page):
  page = open_page()
  page.click('text=Built-in scene')
  page.click('text=Built-in painting')
  page.wait_for_selector('#nst-content img')
  page.wait_for_selector('#nst-styles img')
  _set_number(page, 'nst-image_size', 96)
  _set_number(page, 'nst-iterations', 20)
  page.click('#nst-stylize')
  assert _wait_status(page, r'(Done|error)').startswith('Done')
  expected = nst_jax.stylize('builtin:scene', 'builtin:painting',
                             config=server_config(), image_size=96,
                             iterations=20)
  np.testing.assert_array_equal(_png(_downloads(page)['result.png']),
                                expected.image)
  # An upload replaces the built-in image.
  assert 'image_size=96, iterations=20' in page.locator(
      '#nst-gallery').inner_text()


def test_live_updates_arrive_before_the_end(open_page, tmp_path):
  page = open_page()
  _upload(page, _image_file(tmp_path / 'c.png', 2),
          _image_file(tmp_path / 's.png', 3))
  _set_number(page, 'nst-iterations', 60)
  page.click('#nst-stylize')
  running = _wait_status(page, r'(Running|Done|error)')
  assert running.startswith('Running: step '), running
  step, total = map(int, re.match(r'Running: step (\d+) of (\d+)',
                                  running).groups())
  assert total == 60 and step < total
  live = page.locator('#nst-live img').get_attribute('src')
  assert live  # the image as it forms
  later = _wait_status(page, r'Running: step (\d+).* s left')
  assert 'steps/s' in later and 'total' in later
  _wait_status(page, r'Done')
  assert page.locator('#nst-live img').get_attribute('src') != live


def test_cancel_keeps_the_partial_result_and_the_next_run_works(
    open_page, tmp_path):
  page = open_page()
  _upload(page, _image_file(tmp_path / 'c.png', 4),
          _image_file(tmp_path / 's.png', 5))
  _set_number(page, 'nst-iterations', 2000)
  page.click('#nst-stylize')
  _wait_status(page, r'Running: step')
  page.click('#nst-cancel')
  status = _wait_status(page, r'(Cancelled|Done|error)')
  assert status.startswith('Cancelled'), status
  files = _downloads(page)
  manifest = json.loads(files['result.json'])
  assert manifest['partial'] is True
  assert 0 < manifest['iterations_done'] < 2000
  assert _png(files['result.png']).shape == (40, 48, 3)
  assert 'partial' in page.locator('#nst-gallery').inner_text()
  _set_number(page, 'nst-iterations', 4)
  before = _status(page)
  page.click('#nst-stylize')
  assert _wait_status(page, r'(Done|error|Cancelled)',
                      other_than=before).startswith('Done')
  assert json.loads(_downloads(page)['result.json'])['partial'] is False


def test_two_pages_at_once_finish_in_order_with_their_own_results(
    open_page, tmp_path):
  first, second = open_page(), open_page()
  style = _image_file(tmp_path / 's.png', 6)
  _upload(first, _image_file(tmp_path / 'a.png', 7), style)
  _upload(second, _image_file(tmp_path / 'b.png', 8), style)
  _set_number(first, 'nst-iterations', 100)
  first.click('#nst-stylize')
  _wait_status(first, r'(Running|Preparing)')
  second.click('#nst-stylize')
  # The second waits its turn, and the page shows its place in the queue.
  second.wait_for_selector('#nst-status:has-text("queue: 1/1")',
                           timeout=30_000)
  assert _status(second).startswith('Waiting')
  _wait_status(first, r'Done')
  assert not _status(second).startswith('Done')
  _wait_status(second, r'Done')
  a, b = _downloads(first), _downloads(second)
  assert json.loads(a['result.json'])['inputs']['content'].endswith('a.png')
  assert json.loads(b['result.json'])['inputs']['content'].endswith('b.png')
  assert not np.array_equal(_png(a['result.png']), _png(b['result.png']))
  # Each tab's gallery holds its own result only.
  for page in (first, second):
    assert page.locator('#nst-gallery img').count() == 1


def _bomb_png(width, height):
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
          + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


def test_bad_uploads_get_the_command_lines_line_and_the_next_run_works(
    open_page, tmp_path):
  good = _image_file(tmp_path / 'good.png', 9)
  truncated = tmp_path / 'truncated.png'
  truncated.write_bytes(open(good, 'rb').read()[:60])
  text = tmp_path / 'notes.png'
  text.write_text('not an image')
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(_bomb_png(100000, 100000))
  tiny = tmp_path / 'tiny.png'
  _image_file(tiny, 10, (1, 48))
  style = _image_file(tmp_path / 's.png', 11)
  page = open_page()
  _upload(page, None, style)
  for bad in (truncated, text, bomb, tiny):
    page.locator('#nst-content input[type=file]').set_input_files(str(bad))
    time.sleep(0.5)
    before = _status(page)
    page.click('#nst-stylize')
    status = _wait_status(page, r'(error|Done)', other_than=before)
    with pytest.raises(nst_jax.UserError) as expected:
      nst_jax.stylize(str(bad), style, config=server_config())
    assert status == 'error: ' + str(expected.value).replace(
        str(tmp_path) + os.sep, ''), status
    assert '\n' not in status and bad.name in status
  # A mask of another size than the content, as the command line says.
  page.locator('#nst-content input[type=file]').set_input_files(good)
  page.wait_for_selector('#nst-content img')
  mask = _image_file(tmp_path / 'mask.png', 14, (20, 20))
  _open(page, 'Advanced', '#nst-content_masks')
  page.locator('#nst-content_masks input[type=file]').set_input_files(mask)
  page.wait_for_selector('#nst-content_masks img')
  before = _status(page)
  page.click('#nst-stylize')
  status = _wait_status(page, r'(error|Done)', other_than=before)
  with pytest.raises(nst_jax.UserError) as expected:
    nst_jax.stylize(good, style, config=server_config(), content_masks=[mask])
  assert status == 'error: ' + str(expected.value).replace(
      str(tmp_path) + os.sep, ''), status
  page.locator('#nst-content_masks button[aria-label="Clear"]').first.click()
  before = _status(page)
  page.click('#nst-stylize')
  assert _wait_status(page, r'(Done|error)', other_than=before).startswith(
      'Done')


def test_a_sweep_fills_a_labelled_grid_and_a_panel_gives_its_setting(
    open_page, tmp_path):
  page = open_page()
  _upload(page, _image_file(tmp_path / 'c.png', 12),
          _image_file(tmp_path / 's.png', 13))
  _open(page, 'Sweep', '#nst-sweep_values')
  page.locator('#nst-sweep_values textarea, #nst-sweep_values input'
               ).first.fill('1e-3, 1e-1')
  page.click('#nst-stylize')
  assert _wait_status(page, r'(Done|error)').startswith('Done')
  grid = page.locator('#nst-grid')
  assert grid.locator('img').count() == 2
  assert 'style_weight=0.001' in grid.inner_text()
  assert 'style_weight=0.1' in grid.inner_text()
  names = set(_downloads(page))
  assert {'result_grid.png', 'result_0.png', 'result_1.png',
          'result.json'} <= names
  grid.locator('img').nth(1).click()
  _wait_status(page, r'Panel 2: style_weight=0.1')
  slider = page.locator('#nst-style_weight input[type=number]')
  assert float(slider.input_value()) == pytest.approx(-1.0)


def test_a_clip_shows_its_frames_and_plays_as_h264(open_page, tmp_path):
  import av  # pylint: disable=g-import-not-at-top
  from video_clips import sliding_clip, write_mp4  # pylint: disable=g-import-not-at-top
  clip = str(tmp_path / 'pan.mp4')
  write_mp4(sliding_clip(frames=3, height=32, width=40), clip)
  page = open_page()
  _upload(page, None, _image_file(tmp_path / 's.png', 15))
  _open(page, 'Video', '#nst-video')
  page.locator('#nst-video input[type=file]').set_input_files(clip)
  page.wait_for_selector('#nst-video video')
  _set_number(page, 'nst-iterations', 3)
  page.click('#nst-stylize')
  running = _wait_status(page, r'(Running|Done|error)')
  assert running.startswith('Running: frame 1 of 3'), running
  assert _wait_status(page, r'(Done|error)').startswith('Done: 3 frames')
  assert page.locator('#nst-frames img').count() == 3
  src = page.locator('#nst-clip video').get_attribute('src')
  assert src
  files = _downloads(page)
  assert set(files) == {'clip.mp4', 'clip.json'}
  (tmp_path / 'out.mp4').write_bytes(files['clip.mp4'])
  with av.open(str(tmp_path / 'out.mp4')) as container:
    stream = container.streams.video[0]
    assert stream.codec_context.name == 'h264'
    assert sum(1 for _ in container.decode(stream)) == 3
  assert json.loads(files['clip.json'])['weights']['random'] is True
