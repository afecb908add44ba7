"""run(config) end to end: outputs, manifest, sweeps, stopping, recompiles."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nst_jax import run as run_lib
from nst_jax.core import vgg
from nst_jax.io import images
from nst_jax.engine import memory, programs as programs_lib


def test_single_run_writes_image_and_manifest(tmp_path, small_config):
  manifest = run_lib.run(small_config(
      tmp_path, content_layers='conv4_2',
      style_layers='conv1_1,conv2_1,conv3_1,conv4_1,conv5_1',
      conv_algorithm='auto'))
  out = tmp_path / 'out'
  assert (out / 'result.png').exists()
  written = json.loads((out / 'result.json').read_text())
  assert written['evaluations'] == manifest['evaluations'] == 7
  for key in ('config', 'weights', 'device', 'versions', 'initial', 'final',
              'history', 'evaluations', 'timing'):
    assert key in written, key
  assert set(written['timing']) >= {'compile_s', 'per_evaluation_ms',
                                    'optimize_s', 'total_s'}
  assert written['weights']['source'] == 'random'
  assert written['weights']['random'] is True
  assert any('RANDOM' in w for w in written['warnings'])
  final = written['final']
  # content and style before alpha/beta, total after.
  config = written['config']
  np.testing.assert_allclose(
      final['total'], config['content_weight'] * final['content']
      + config['style_weight'] * final['style'], rtol=1e-5)
  np.testing.assert_allclose(
      final['style'], sum(final['style_layers'].values()) / 5, rtol=1e-5)
  assert final['total'] < written['initial']['total']
  assert [row['iteration'] for row in written['history']] == [0, 3, 6]
  assert written['history'][-1]['evaluations'] == 7
  assert written['stop_reason'] == 'iterations'
  assert not written['partial']
  assert written['device']['conv_algorithm'] == 'winograd'  # auto on CPU
  saved = images.load_image(str(out / 'result.png'))
  assert saved.shape[:2] == (32, 32)


def test_direct_and_winograd_convolutions_agree(tmp_path, small_config):
  """config.conv_algorithm reaches the network: both give the same run
  up to rounding, and the manifest says which ran. (With SGD: L-BFGS's
  first curvature pair, after torch's tiny first step, is the difference of
  two nearly equal gradients and amplifies rounding differences.)"""
  finals = {}
  for algorithm in ('direct', 'winograd'):
    manifest = run_lib.run(small_config(
        tmp_path / algorithm, iterations=3, optimizer='sgd',
        learning_rate=0.3, conv_algorithm=algorithm))
    assert manifest['device']['conv_algorithm'] == algorithm
    assert manifest['final']['total'] < 0.99 * manifest['initial']['total']
    finals[algorithm] = manifest['final']['total']
  np.testing.assert_allclose(finals['winograd'], finals['direct'], rtol=1e-4)


def test_zero_iterations_evaluates_initial(tmp_path, small_config):
  manifest = run_lib.run(small_config(tmp_path, iterations=0))
  assert manifest['evaluations'] == 1
  assert manifest['final'] == manifest['initial']
  assert os.path.exists(tmp_path / 'out' / 'result.json')


def test_save_every_writes_numbered_images(tmp_path, small_config):
  run_lib.run(small_config(tmp_path, save_every=3))
  names = sorted(os.listdir(tmp_path / 'out'))
  assert 'result_iter0003.png' in names and 'result_iter0006.png' in names


def test_sweep_members_equal_standalone_runs(tmp_path, small_config):
  weights = (1e-3, 1e-1)
  # One after another ('map'); the vmap test below covers the default.
  sweep = run_lib.run(small_config(tmp_path, sweep_style_weight=weights,
                                   sweep_mode='map'))
  assert sweep['device']['sweep_mode'] == 'map'
  out = tmp_path / 'out'
  assert (out / 'result_grid.png').exists()
  assert len(sweep['runs']) == 2
  for k, style_weight in enumerate(weights):
    member = sweep['runs'][k]
    assert member['values'] == {'style_weight': style_weight}
    assert os.path.exists(member['output'])
    alone = run_lib.run(small_config(tmp_path / str(k),
                                     style_weight=style_weight))
    assert member['evaluations'] == alone['evaluations']
    np.testing.assert_allclose(member['final']['total'],
                               alone['final']['total'], rtol=1e-3)


def test_vmap_sweep_of_line_search_lbfgs_equals_standalone_runs(
    tmp_path, small_config):
  """Under vmap the members' line searches run in one loop until the last
  is done; each member still takes its own trials and result."""
  weights = (1e-3, 1e-1)
  sweep = run_lib.run(small_config(tmp_path, optimizer='lbfgs',
                                   sweep_style_weight=weights,
                                   sweep_mode='vmap'))
  assert sweep['device']['sweep_mode'] == 'vmap'
  for k, style_weight in enumerate(weights):
    alone = run_lib.run(small_config(tmp_path / str(k), optimizer='lbfgs',
                                     style_weight=style_weight))
    member = sweep['runs'][k]
    assert member['evaluations'] == alone['evaluations']
    assert member['evaluations'] > 6  # the line searches did work
    np.testing.assert_allclose(member['final']['total'],
                               alone['final']['total'], rtol=1e-3)


def test_non_finite_loss_keeps_last_finite_image(tmp_path, small_config):
  manifest = run_lib.run(small_config(tmp_path, optimizer='adam',
                                      learning_rate=1e30, iterations=20))
  assert manifest['stop_reason'] == 'non_finite'
  assert manifest['non_finite_at_iteration'] < 20
  assert manifest['final']['total'] is not None
  pixels = images.load_image(manifest['outputs']['image'])
  assert np.isfinite(pixels).all()


def test_same_size_inputs_do_not_recompile(tmp_path, small_config, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  programs = programs_lib.Programs()
  run_lib.run(small_config(tmp_path / 'a'), programs=programs)
  before = programs.compilations
  assert before > 0
  assert 'compiling for 32x32' in caplog.text
  caplog.clear()
  run_lib.run(small_config(tmp_path / 'b', style_weight=7.0,
                           content_weight=0.5, tv_weight=1e-3,
                           style='builtin:scene', content='builtin:painting',
                           learning_rate=0.5, seed=3), programs=programs)
  assert programs.compilations == before
  assert 'compiling' not in caplog.text  # nor says it does


def test_coarse_to_fine_starts_from_the_upsampled_coarse_result(
    tmp_path, small_config):
  manifest = run_lib.run(small_config(tmp_path, coarse_to_fine=1,
                                      coarse_iterations=3, iterations=3))
  assert manifest['image_size']['levels'] == [16, 32]
  widths = [row['width'] for row in manifest['history']]
  assert widths[0] == 16 and widths[-1] == 32
  assert manifest['iterations_done'] == 6
  # Evaluations add up over levels: 1 + 3 at 16 px, then 1 + 3 at 32 px.
  assert manifest['evaluations'] == 8
  assert manifest['history'][-1]['evaluations'] == 8
  assert images.load_image(manifest['outputs']['image']).shape == (32, 32, 3)


def test_variables_bytes_match_prepared_variables():
  # The memory check counts exactly what prepare_variables holds: flipped
  # kernels and Winograd transforms only for the layers that run.
  params = {name: {'kernel': jax.ShapeDtypeStruct((3, 3, cin, cout),
                                                  jnp.float32),
                   'bias': jax.ShapeDtypeStruct((cout,), jnp.float32)}
            for name, (cin, cout) in vgg.CONV_SHAPES.items()}
  for layers, winograd in ((('conv2_1',), False), (('conv2_1',), True),
                           (('conv5_1', 'conv4_2'), True)):
    sizes = [(64, 48)] if winograd else ()
    prepared = jax.eval_shape(
        lambda p: vgg.prepare_variables(p, sizes, layers), params)
    held = sum(x.size * x.dtype.itemsize
               for x in jax.tree_util.tree_leaves(prepared))
    assert memory.variables_bytes(64, 48, layers, winograd) == held


def test_run_compiles_with_the_platforms_compiler_options(
    tmp_path, monkeypatch, small_config):
  # A bad option value fails the compile: run's loop programs get them.
  monkeypatch.setattr(programs_lib, 'compiler_options', lambda platform: {
      'xla_cpu_scheduler_type': 'NOT_A_SCHEDULER'})
  with pytest.raises(Exception, match='xla_cpu_scheduler_type'):
    # Its own Programs: none compiled by earlier runs in the process.
    run_lib.run(small_config(tmp_path, iterations=1),
                programs=programs_lib.Programs())
  assert not os.path.exists(tmp_path / 'out' / 'result.png')
