"""nst_jax.stylize: arrays in, arrays out, the command line's results."""

import json
import os
import signal

import numpy as np
from PIL import Image
import pytest

import nst_jax
from nst_jax import run as run_lib
from nst_jax.core import optimizers
from nst_jax.io import images, scenes

# The settings of conftest's small_run_config, as stylize fields.
FIELDS = dict(weights='random', image_size=32, iterations=6, log_every=3,
              optimizer='lbfgs_nols', init='content',
              content_layers='conv2_1', style_layers='conv1_1,conv2_1',
              style_weight=1e-2, compilation_cache='',
              # Direct convolutions compile faster than Winograd's.
              conv_algorithm='direct')


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
  """The built-in images as PNG files (32 px content, 32 px style)."""
  folder = tmp_path_factory.mktemp('inputs')
  content, style = folder / 'content.png', folder / 'style.png'
  images.save_image(content, scenes.demo_content(32))
  images.save_image(style, scenes.demo_style(32))
  return str(content), str(style)


def test_stylize_gives_the_command_lines_result_and_writes_nothing(
    tmp_path, image_files, small_config, capfd, monkeypatch):
  content, style = image_files
  monkeypatch.chdir(tmp_path)
  handler = signal.getsignal(signal.SIGINT)
  seen = []

  def progress(step, terms, image):
    seen.append((step, terms['total'], image.dtype, image.shape))
    assert signal.getsignal(signal.SIGINT) is handler  # none installed

  result = nst_jax.stylize(np.asarray(Image.open(content)),
                           Image.open(style), progress=progress, **FIELDS)
  assert os.listdir(tmp_path) == []
  assert capfd.readouterr() == ('', '')
  assert [step for step, *_ in seen] == [3, 6]
  assert all(d == np.uint8 and s == (32, 32, 3) for _, _, d, s in seen)
  assert result.image.dtype == np.uint8 and result.image.shape == (32, 32, 3)
  assert 'output' not in result.manifest
  assert seen[-1][1] == result.manifest['final']['total']

  manifest = run_lib.run(small_config(tmp_path / 'cli', content=content,
                                      style=style, conv_algorithm='direct'))
  assert manifest['final']['total'] == result.manifest['final']['total']
  assert manifest['evaluations'] == result.manifest['evaluations'] == 7
  np.testing.assert_array_equal(
      images.load_image(manifest['outputs']['image']), result.image)


def test_paths_pil_images_and_arrays_give_the_same_result(image_files):
  content, style = image_files
  as_path = nst_jax.stylize(content, style, **FIELDS)
  as_pil = nst_jax.stylize(Image.open(content), Image.open(style), **FIELDS)
  pixels = np.asarray(Image.open(content))
  as_floats = nst_jax.stylize(pixels / 255.0, [np.asarray(Image.open(style))],
                              **FIELDS)
  for other in (as_pil, as_floats):
    np.testing.assert_array_equal(other.image, as_path.image)
    assert other.manifest['final'] == as_path.manifest['final']
  assert as_path.manifest['inputs']['content'] == content
  assert as_pil.manifest['inputs']['styles'] == ['style_0']


def test_save_writes_image_and_manifest_like_the_command_line(tmp_path):
  result = nst_jax.stylize('builtin:scene', 'builtin:painting', **FIELDS)
  manifest = result.save(tmp_path / 'r.png')
  written = json.loads((tmp_path / 'r.json').read_text())
  assert (written['outputs']['image'] == manifest['outputs']['image']
          == str(tmp_path / 'r.png'))
  assert written['final'] == result.manifest['final']
  np.testing.assert_array_equal(images.load_image(tmp_path / 'r.png'),
                                result.image)
  assert (os.stat(tmp_path / 'r.json').st_mode & 0o777 ==
          os.stat(tmp_path / 'r.png').st_mode & 0o777)


def test_sweep_product_is_a_grid_of_rows_by_columns(tmp_path):
  fields = dict(FIELDS, iterations=2, log_every=2,
                sweep={'content_weight': (1.0, 2.0),
                       'style_weight': (1e-3, 1e-2, 0.1), 'product': True})
  result = nst_jax.stylize('builtin:scene', 'builtin:painting', **fields)
  runs = result.manifest['runs']
  assert [tuple(r['values'].values()) for r in runs] == [
      (a, b) for a in (1.0, 2.0) for b in (1e-3, 1e-2, 0.1)]
  assert len(result.images) == 6 and result.grid_columns == 3
  assert runs[1]['label'] == 'content_weight=1, style_weight=0.01'
  # Two rows of three panels: wider than tall.
  height, width = result.image.shape[:2]
  assert width > height
  manifest = result.save(tmp_path / 'g.png')
  assert manifest['outputs']['grid'] == str(tmp_path / 'g_grid.png')
  assert sorted(os.listdir(tmp_path)) == [
      'g.json', 'g_0.png', 'g_1.png', 'g_2.png', 'g_3.png', 'g_4.png',
      'g_5.png', 'g_grid.png']


def test_sweep_of_unequal_lengths_needs_product():
  with pytest.raises(nst_jax.UserError, match='sweep.product=True'):
    nst_jax.stylize('builtin:scene', 'builtin:painting', **dict(
        FIELDS, sweep={'content_weight': (1.0, 2.0),
                       'style_weight': (1e-3, 1e-2, 0.1)}))


@pytest.mark.parametrize('fields, match', [
    ({'stlye_weight': 1.0}, r'^config.stlye_weight: no such field'),
    ({'sweep': {'style_wieght': (1,)}}, r'^config.sweep.style_wieght: no such'),
    ({'image_size': 'big'}, r'^config.image_size: '),
    ({'optimizer': 'rmsprop'}, r'^config.optimizer: unknown'),
    ({'style_weight': -1.0}, r'^config.style_weight: must be >= 0'),
])
def test_bad_fields_raise_the_command_lines_one_line_error(fields, match):
  with pytest.raises(nst_jax.UserError, match=match) as error:
    nst_jax.stylize('builtin:scene', 'builtin:painting',
                    **dict(FIELDS, **fields))
  assert '\n' not in str(error.value)


def test_bad_arrays_are_refused_in_one_line():
  with pytest.raises(nst_jax.UserError, match='content image: expected an H'):
    nst_jax.stylize(np.zeros((32, 32)), 'builtin:painting', **FIELDS)
  with pytest.raises(nst_jax.UserError, match=r'values in \[0, 1\]'):
    nst_jax.stylize(np.full((32, 32, 3), 7.0), 'builtin:painting', **FIELDS)


def test_init_image_without_init_image_is_reported(tmp_path, image_files):
  result = nst_jax.stylize('builtin:scene', 'builtin:painting',
                           **dict(FIELDS, init_image=image_files[0],
                                  iterations=0))
  assert any('init_image is ignored' in w
             for w in result.manifest['warnings'])


def test_learning_rate_zero_is_the_optimizers_default():
  result = nst_jax.stylize('builtin:scene', 'builtin:painting',
                           **dict(FIELDS, optimizer='sgd', iterations=0))
  assert result.manifest['learning_rate'] == (
      optimizers.DEFAULT_LEARNING_RATES['sgd'])


def test_lbfgs_first_step_reaches_the_optimiser():
  """The default first trial saves the evaluations torch's tiny one spends
  growing; the manifest records it."""
  runs = {first: nst_jax.stylize(
      'builtin:scene', 'builtin:painting',
      **dict(FIELDS, optimizer='lbfgs', iterations=1, lbfgs_first_step=first))
          for first in (0.0, optimizers.LBFGS_FIRST_STEP)}
  assert runs[optimizers.LBFGS_FIRST_STEP].manifest['evaluations'] < (
      runs[0.0].manifest['evaluations'])
  assert runs[0.0].manifest['config']['lbfgs_first_step'] == 0.0
  assert nst_jax.stylize('builtin:scene', 'builtin:painting', **dict(
      FIELDS, iterations=0)).manifest['config']['lbfgs_first_step'] == (
          optimizers.LBFGS_FIRST_STEP)


def test_lbfgs_pyramid_reaches_the_optimiser():
  """lbfgs_pyramid=1 is torch's L-BFGS and the default preconditions it:
  the results differ, and the manifest records the levels."""
  results = {levels: nst_jax.stylize(
      'builtin:scene', 'builtin:painting',
      **dict(FIELDS, iterations=4, lbfgs_pyramid=levels))
             for levels in (1, optimizers.LBFGS_PYRAMID)}
  plain, smoothed = (results[1], results[optimizers.LBFGS_PYRAMID])
  assert not np.allclose(plain.image, smoothed.image, atol=0.5)
  assert (smoothed.manifest['config']['lbfgs_pyramid']
          == optimizers.LBFGS_PYRAMID)
  assert nst_jax.stylize('builtin:scene', 'builtin:painting', **dict(
      FIELDS, iterations=0)).manifest['config']['lbfgs_pyramid'] == (
          optimizers.LBFGS_PYRAMID)
