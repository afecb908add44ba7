"""scripts/reproduce_figures.py: layouts, layer masks, one program a figure."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from nst_jax.io import grids, images
from nst_jax.configs import paper_default
from nst_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'scripts', 'reproduce_figures.py')


def _load_script():
  spec = importlib.util.spec_from_file_location('reproduce_figures', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


figures = _load_script()
LAYERS = ['conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1']


def tiny_config(**overrides):
  """The paper's settings at 32 px (conv5_1 needs 16), 2 steps, random
  weights, no compilation cache."""
  config = paper_default.get_config()
  config.image_size = 32
  config.iterations = 2
  config.log_every = 2
  config.weights = 'random'
  config.compilation_cache = ''
  config.optimizer = 'lbfgs_nols'  # one evaluation a step: quick to run
  config.conv_algorithm = 'direct'  # compiles faster than Winograd's
  for key, value in overrides.items():
    config[key] = value
  return config


# ---------------------------------------------------------------- members


def test_growing_and_one_hot_masks():
  assert figures.growing_masks(3) == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0),
                                      (1 / 3, 1 / 3, 1 / 3)]
  for n, mask in enumerate(figures.growing_masks(5), start=1):
    assert sum(w > 0 for w in mask) == n
    assert math.isclose(sum(mask), 1.0)
  assert figures.one_hot_masks(3) == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                      (0.0, 0.0, 1.0)]


def test_figure1_members():
  plan = figures.figure1_plan('c.png', 's.png')
  assert (plan.rows, plan.columns) == (2, 5)
  content_run, style_run = plan.runs  # two programs of 5 members each
  # Content half: content loss only, one layer each.
  assert content_run.fields['content_layers'] == ','.join(LAYERS)
  assert content_run.fields['style_layers'] == ''
  assert content_run.cells == [(0, c) for c in range(5)]
  for k, member in enumerate(content_run.members):
    assert member['content_layer_weights'] == tuple(
        1.0 if i == k else 0.0 for i in range(5))
    assert member['style_weight'] == 0.0 and member['content_weight'] == 1.0
  # Style half: style loss only, conv1_1 .. conv{k+1}_1 at 1/(k+1) each.
  assert style_run.fields['style_layers'] == ','.join(LAYERS)
  assert style_run.fields['content_layers'] == ''
  assert style_run.cells == [(1, c) for c in range(5)]
  for k, member in enumerate(style_run.members):
    assert member['style_layer_weights'] == tuple(
        1 / (k + 1) if i <= k else 0.0 for i in range(5))
    assert member['content_weight'] == 0.0 and member['style_weight'] > 0


def test_figure2_members_and_ratios():
  styles = [f's{k}.png' for k in range(5)]
  plan = figures.figure2_plan('c.png', styles)
  (run,) = plan.runs
  assert [m['styles'] for m in run.members] == [(s,) for s in styles]
  ratios = [m['content_weight'] / m['style_weight'] for m in run.members]
  np.testing.assert_allclose(ratios, [1e-3, 1e-3, 1e-3, 1e-4, 1e-4])
  # A B / C D / E F, A being the content.
  assert plan.input_panels == {(0, 0): ('c.png', 'content.png')}
  assert run.cells == [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
  assert [plan.labels[cell][0] for cell in plan.cells()] == list('ABCDEF')
  with pytest.raises(UserError, match='needs 5 style images'):
    figures.figure2_plan('c.png', styles[:2])


def test_textures_layers():
  plan = figures.textures_plan('t.png')
  (run,) = plan.runs
  assert run.fields['style_layers'] == 'conv1_1,pool1,pool2,pool3,pool4'
  assert run.fields['content_layers'] == ''
  assert run.fields['content'] == run.fields['style'] == 't.png'
  assert plan.column_labels == ['source', 'conv1_1', '+pool1', '+pool2',
                                '+pool3', '+pool4']
  assert [m['style_layer_weights'] for m in run.members] == (
      figures.growing_masks(5))
  assert all(m['content_weight'] == 0.0 and m['content_layer_weights'] == ()
             for m in run.members)


def test_inputs_count_checked(tmp_path):
  config = tiny_config()
  with pytest.raises(UserError, match='takes one style image'):
    figures.resolve_inputs('3', config, None, 'a.png,b.png', str(tmp_path))
  with pytest.raises(UserError, match='--content: not used'):
    figures.resolve_inputs('textures', config, 'c.png', None, str(tmp_path))
  # No style images for figure 2: five coloured variants of the built-in.
  content, styles, notes = figures.resolve_inputs('2', config, None, None,
                                                  str(tmp_path))
  assert content == 'builtin:scene' and len(set(styles)) == 5
  assert all(os.path.exists(p) for p in styles)
  assert any('not the paper' in note for note in notes)


# ------------------------------------------------------------- running


def test_figure3_is_one_program_with_labelled_grid(tmp_path):
  from nst_jax.engine import programs  # pylint: disable=g-import-not-at-top
  compiled_before = programs.shared().compilations
  out = tmp_path / 'figs'
  record = figures.reproduce('3', tiny_config(), out=str(out))
  # One run.run call: one manifest holding all 20 members, and at most one
  # program each of init, loss terms and loop chunk compiled for it.
  assert programs.shared().compilations - compiled_before <= 3
  written = json.loads((out / 'figure3.json').read_text())
  assert written['programs'] == 1 and len(written['manifests']) == 1
  manifest = written['manifests'][0]
  assert len(manifest['runs']) == 20
  assert manifest['weights']['random'] is True
  assert manifest['config']['loss_normalization'] == 'paper'
  assert written['smoke'] is True
  layout = written['layout']
  assert (layout['rows'], layout['columns']) == (5, 4)
  assert layout['row_labels'] == ['conv1_1', '+conv2_1', '+conv3_1',
                                  '+conv4_1', '+conv5_1']
  assert layout['column_labels'] == ['a/b=1e-5', 'a/b=1e-4', 'a/b=1e-3',
                                     'a/b=1e-2']
  assert len(layout['panels']) == 20
  for panel in layout['panels']:
    r, c = panel['row'], panel['column']
    run = manifest['runs'][panel['member']]
    assert panel['style_layers'] == LAYERS[:r + 1]
    assert run['style_layer_weights'] == pytest.approx(
        [1 / (r + 1) if i <= r else 0.0 for i in range(5)])
    assert panel['content_layers'] == ['conv4_2']
    assert panel['ratio'] == pytest.approx(10.0 ** (c - 5))
    assert run['content_weight'] / run['style_weight'] == pytest.approx(
        10.0 ** (c - 5))
    assert run['iterations_done'] == 2
    assert run['output'] == panel['image']
    assert images.load_image(panel['image']).shape == (32, 32, 3)
  panels = [name for name in os.listdir(out / 'figure3')
            if name.startswith('panel_') and name[6:-4].isdigit()]
  assert len(panels) == 20
  # The grid: 5 x 4 panels of 32 px with row and column labels drawn.
  grid = images.load_image(str(out / 'figure3.png'))
  expected = grids.make_grid([np.zeros((32, 32, 3), np.float32)] * 20,
                             row_labels=layout['row_labels'],
                             column_labels=layout['column_labels'])
  assert grid.shape == expected.shape
  assert grid.shape[0] > 5 * 32 and grid.shape[1] > 4 * 32
  label_strip = grid[:, :grid.shape[1] - 4 * 36 - 4]  # left of the panels
  assert (label_strip < 128).any()  # row labels are drawn in black


def test_bad_input_writes_nothing(tmp_path):
  out = tmp_path / 'figs'
  with pytest.raises(UserError, match='file not found'):
    figures.reproduce('1', tiny_config(), content=str(tmp_path / 'no.jpg'),
                      out=str(out))
  assert not (out / 'figure1.png').exists()
  assert not (out / 'figure1.json').exists()


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1',
             NST_JAX_OFFLINE='1')
  missing = tmp_path / 'missing.png'
  process = subprocess.run(
      [sys.executable, SCRIPT, '--figure=3', f'--style={missing}',
       f'--out={tmp_path}/figs', '--config.image_size=32',
       '--config.weights=random'],
      cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)
  assert process.returncode == 2, process.stderr
  assert process.stderr.strip().splitlines() == [
      f"error: style image '{missing}': file not found"]
  for flags, error in (
      (['--figure=4'],
       "error: --figure: unknown '4'; valid are 1, 2, 3, textures"),
      (['--figure=1', '--config=no_such_config.py'],
       'error: --config: cannot load the config file'),
      (['--figure=1', '--config.no_such_field=1'],
       'error: --config.no_such_field: no such field')):
    process = subprocess.run([sys.executable, SCRIPT] + flags, cwd=tmp_path,
                             env=env, text=True, capture_output=True,
                             timeout=120)
    assert process.returncode == 2, (flags, process.stderr)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(error), (flags, lines)
  assert not (tmp_path / 'out').exists()
