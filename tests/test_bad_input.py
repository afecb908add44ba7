"""Bad input: one clear line naming the file or field, exit 2, nothing written."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from nst_jax import run as run_lib
from nst_jax.configs import default
from nst_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_for(tmp_path, **overrides):
  config = default.get_config()
  config.content = 'builtin:scene'
  config.style = 'builtin:painting'
  config.output = str(tmp_path / 'out' / 'result.png')
  config.weights = 'random'
  config.image_size = 32
  config.iterations = 2
  config.compilation_cache = ''
  for key, value in overrides.items():
    config[key] = value
  return config


def assert_refused(tmp_path, match, **overrides):
  with pytest.raises(UserError, match=match) as error:
    run_lib.run(config_for(tmp_path, **overrides))
  assert '\n' not in str(error.value)
  out = tmp_path / 'out'
  assert not out.exists() or not os.listdir(out)
  return str(error.value)


@pytest.mark.parametrize('field, value, match', [
    ('content_layers', 'conv9_1', r'config.content_layers: .*conv4_2'),
    ('style_layers', 'conv1_1,fc7', r'config.style_layers: .*fc7'),
    ('optimizer', 'rmsprop', r'config.optimizer: .*lbfgs, lbfgs_nols, adam'),
    ('pooling', 'min', r'config.pooling: .*avg, max'),
    ('init', 'zeros', r'config.init: .*noise, content, style, image'),
    ('loss_normalization', 'mean', r'config.loss_normalization: .*paper'),
    ('dtype', 'int8', r'config.dtype: .*float32'),
    ('dtype', 'float16', r'config.dtype: unknown .*bfloat16$'),
    ('conv_algorithm', 'fft', r'config.conv_algorithm: .*winograd'),
    ('image_size', 0, r'config.image_size: must be > 0'),
    ('image_size', -5, r'config.image_size: must be > 0'),
    ('iterations', -1, r'config.iterations: must be >= 0'),
    ('learning_rate', -1.0, r'config.learning_rate: must be >= 0'),
    ('style_weight', -1.0, r'config.style_weight: must be >= 0'),
    ('content_weight', -1.0, r'config.content_weight: must be >= 0'),
    ('tv_weight', -1.0, r'config.tv_weight: must be >= 0'),
    ('style_scale', 0.0, r'config.style_scale: must be > 0'),
    ('log_every', 0, r'config.log_every: must be > 0'),
    ('lbfgs_pyramid', 0, r'config.lbfgs_pyramid: must be > 0'),
    ('lbfgs_first_step', -1.0, r'config.lbfgs_first_step: must be >= 0'),
    ('lbfgs_first_step', float('inf'),
     r'config.lbfgs_first_step: must be finite'),
    ('style_blend_weights', '1,2', r'config.style_blend_weights: 2 weights '
     'for 1 style'),
    ('style_layer_weights', '1,2', r'config.style_layer_weights: 2 weights '
     'for 5 layers'),
    ('content', '', r'config.content: required'),
])
def test_bad_config_field(tmp_path, field, value, match):
  assert_refused(tmp_path, match, **{field: value})


@pytest.mark.parametrize('field', ['shard_rows', 'match_luminance',
                                   'distributed'])
def test_flag_fields_must_be_booleans(tmp_path, field):
  # A dict config (Python API) is not type-checked by ml_collections.
  config = config_for(tmp_path).to_dict()
  config[field] = 'yes'
  with pytest.raises(UserError, match=rf"config.{field}: must be True or "
                     "False, got 'yes'"):
    run_lib.run(config)


def test_init_image_required(tmp_path):
  assert_refused(tmp_path, r'config.init_image: required', init='image')


def test_output_equal_to_input_refused(tmp_path):
  content = tmp_path / 'c.png'
  Image.new('RGB', (32, 32), 'red').save(content)
  before = content.read_bytes()
  with pytest.raises(UserError, match='would overwrite the input'):
    run_lib.run(config_for(tmp_path, content=str(content),
                           output=str(content)))
  assert content.read_bytes() == before


def test_output_folder_not_creatable_or_writable(tmp_path, monkeypatch):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(UserError, match='cannot create folder'):
    run_lib.run(config_for(tmp_path, output=str(blocker / 'r.png')))
  # Root can write anywhere, so simulate a read-only folder.
  monkeypatch.setattr(os, 'access', lambda path, mode: False)
  assert_refused(tmp_path, 'is not writable')


def _write(path, data):
  path.write_bytes(data)
  return str(path)


def _png_bytes(fmt='PNG', size=(40, 40)):
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(
      0, 255, size + (3,), dtype=np.uint8)).save(buffer, fmt)
  return buffer.getvalue()


@pytest.mark.parametrize('make, match', [
    (lambda p: str(p / 'missing.png'), 'file not found'),
    (lambda p: str(p), 'directory'),
    (lambda p: _write(p / 'empty.png', b''), 'empty'),
    (lambda p: _write(p / 'text.png', b'hello, not a picture\n' * 20),
     'not an image'),
    (lambda p: _write(p / 'cut.png', _png_bytes()[:300]), 'truncated'),
    (lambda p: _write(p / 'cut.jpg', _png_bytes('JPEG')[:400]), '(?i)truncated'),
])
def test_bad_style_image(tmp_path, make, match):
  path = make(tmp_path)
  message = assert_refused(tmp_path, match, style=path)
  assert message.startswith('style image')
  assert path in message


def test_image_too_small_names_minimum(tmp_path):
  tiny = tmp_path / 'tiny.png'
  Image.new('RGB', (1, 1), 'blue').save(tiny)
  message = assert_refused(tmp_path, 'needs at least 16x16', content=str(tiny),
                           image_size=1)
  assert 'conv5_1' in message


def test_too_large_for_memory_suggests_smaller_size(tmp_path):
  assert_refused(tmp_path, 'smaller image_size', image_size=64,
                 max_memory_gb=0.01)


def _cli(tmp_path, *flags, wait=True):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1',
             NST_JAX_OFFLINE='1')
  command = [sys.executable, '-m', 'nst_jax.main',
             '--config=configs/default.py', '--config.content=builtin:scene',
             '--config.style=builtin:painting', '--config.weights=random',
             '--config.compilation_cache=',
             f'--config.output={tmp_path}/out/r.png',
             '--config.image_size=32', '--config.content_layers=conv2_1',
             '--config.style_layers=conv1_1,conv2_1'] + list(flags)
  process = subprocess.Popen(command, cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  if wait:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr
  return process


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
  code, _, stderr = _cli(tmp_path, '--config.optimizer=rmsprop')
  assert code == 2
  assert stderr.strip().splitlines() == [
      "error: config.optimizer: unknown 'rmsprop'; valid are lbfgs, "
      'lbfgs_nols, adam, sgd']
  assert not (tmp_path / 'out' / 'r.png').exists()
  code, _, stderr = _cli(tmp_path, '--config.no_such_field=1')
  assert code == 2 and 'Traceback' not in stderr
  assert len(stderr.strip().splitlines()) == 1


def test_cli_distributed_without_cluster_is_one_line_exit_2(tmp_path,
                                                            monkeypatch):
  monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)
  code, _, stderr = _cli(tmp_path, '--config.distributed=True')
  assert code == 2
  (line,) = stderr.strip().splitlines()
  assert line.startswith('error: config.distributed: '
                         'jax.distributed.initialize() failed: ')
  assert not (tmp_path / 'out' / 'r.png').exists()


def test_cli_non_finite_exit_1(tmp_path):
  code, _, stderr = _cli(tmp_path, '--config.optimizer=adam',
                         '--config.learning_rate=1e30',
                         '--config.iterations=20', '--config.log_every=5')
  assert code == 1, stderr
  assert 'non-finite at iteration' in stderr
  assert (tmp_path / 'out' / 'r.png').exists()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_saves_partial(tmp_path, signum):
  process = _cli(tmp_path, '--config.iterations=100000',
                 '--config.log_every=1', '--config.optimizer=lbfgs_nols',
                 '--config.init=content', wait=False)
  # Wait until the loop is running (the first log line), then signal.
  deadline = time.time() + 240
  lines = []
  while time.time() < deadline:
    line = process.stderr.readline()
    lines.append(line)
    if 'iteration' in line or not line:
      break
  process.send_signal(signum)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signum, ''.join(lines) + stderr
  manifest = (tmp_path / 'out' / 'r.json').read_text()
  assert '"partial": true' in manifest
  assert '"stop_reason": "interrupted"' in manifest
  assert (tmp_path / 'out' / 'r.png').exists()


def test_cli_sweep_writes_every_member(tmp_path):
  code, stdout, stderr = _cli(tmp_path,
                              "--config.sweep.style_weight=(1e-3,1e-1)",
                              '--config.iterations=2', '--config.log_every=2',
                              '--config.optimizer=lbfgs_nols')
  assert code == 0, stderr
  assert stdout.count('wrote ') == 3
  for name in ('r_0.png', 'r_1.png', 'r_grid.png', 'r.json'):
    assert (tmp_path / 'out' / name).exists(), name
