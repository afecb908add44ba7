"""scripts/bench_problems.py: the benchmark's problems are the library's
loss (and PyTorch's), and its optimisers are config fields."""

import dataclasses
import importlib.util

import jax
import numpy as np
import pytest

from nst_jax import weights
from nst_jax.core import losses, objective, optimizers, vgg
from nst_jax.io import scenes
from nst_jax.engine import programs as programs_lib, settings
from nst_jax.configs import default
from scripts import bench_problems, time_to_quality


def test_problem_is_the_library_loss():
  problem = bench_problems.build(32, conv_algorithm='direct')
  params, _ = weights.random_weights(bench_problems.WEIGHTS_SEED)
  content, style = scenes.demo_content(32), scenes.demo_style(32)
  # The whole image at once (row_strips=1), as the benchmark asks.
  spec = losses.LossSpec(normalization='paper', conv_algorithm='direct',
                         row_strips=1)
  variables = vgg.prepare_variables(params, (), spec.layers)
  targets = objective.make_targets(variables, content, [style], spec)
  expected = objective.total_loss(content, variables, targets,
                                  losses.loss_weights(spec, 1.0, 1e3), spec)
  arguments = problem.loss_arguments
  got = objective.total_loss(problem.start, arguments.variables,
                             arguments.targets, arguments.loss_weights,
                             problem.spec)
  assert problem.spec == spec
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(problem.loss_and_grad(problem.start)[0],
                             expected, rtol=1e-5)
  # Unless an optimiser says otherwise, L-BFGS is torch's algorithm.
  assert (problem.settings.optimizer, problem.settings.lbfgs_pyramid,
          problem.settings.lbfgs_first_step) == ('lbfgs', 1, 0.0)


def test_bfloat16_problem_is_a_bfloat16_run():
  problem = bench_problems.build(32, conv_algorithm='direct',
                                 dtype='bfloat16')
  # What a run with dtype='bfloat16' and the paper's loss computes, as
  # still.execute and loop.optimize compute it (the memory fit: the whole
  # image).
  config = default.get_config()
  config.update(dict(content='builtin:scene', style='builtin:painting',
                     weights='random', dtype='bfloat16',
                     loss_normalization='paper', content_weight=1.0,
                     style_weight=1e3, conv_algorithm='direct'))
  checked = settings.check(config, from_files=False)
  spec = dataclasses.replace(checked.spec, conv_algorithm='direct',
                             row_strips=1)
  assert problem.spec == spec
  params, _ = weights.random_weights(bench_problems.WEIGHTS_SEED)
  content, style = scenes.demo_content(32), scenes.demo_style(32)
  programs = programs_lib.Programs()
  variables = programs.prepare_variables(params, (), spec.layers)
  targets = programs.targets(variables, content, [style], (1.0,), spec)
  loss_weights = losses.loss_weights(
      spec, checked.content_weight, checked.style_weight, checked.tv_weight,
      checked.content_layer_weights, checked.style_layer_weights)
  dtypes = lambda tree: jax.tree_util.tree_map(lambda x: x.dtype, tree)
  arguments = problem.loss_arguments
  assert dtypes(arguments.variables) == dtypes(variables)
  assert dtypes(arguments.targets) == dtypes(targets)
  loss = jax.jit(objective.total_loss, static_argnums=4)
  np.testing.assert_allclose(
      loss(problem.start, arguments.variables, arguments.targets,
           arguments.loss_weights, problem.spec),
      loss(content, variables, targets, loss_weights, spec), rtol=2e-2)


def test_panel_problems_are_the_library_loss_and_torchs():
  """One panel problem of each layout (preprocessing) and normalisation at
  32 px: the benchmark's problem is the library's loss of its seeded
  images, and scripts/torch_reference.py computes the same (with torch)."""
  assert len(bench_problems.panel_problems('tuned')) >= 8
  held_out = bench_problems.panel_problems('held_out')
  assert {p['seed'] for p in held_out} == set(range(300, 308))
  assert {(p['size'], p['normalization'], p['preprocessing'])
          for p in held_out} == set(bench_problems.DESIGN)
  problems = [p for p in bench_problems.PANEL if p['seed'] in (0, 3)]
  assert {(p['normalization'], p['preprocessing']) for p in problems} == {
      ('paper', 'caffe'), ('invariant', 'torchvision')}
  have_torch = importlib.util.find_spec('torch') is not None
  for problem in problems:
    params = bench_problems.panel_weights(problem['preprocessing'])
    built = bench_problems.panel_build(problem, 32, conv_algorithm='direct')
    content = bench_problems.blob_image(problem['seed'], 32, 0)
    style = bench_problems.blob_image(problem['seed'], 32, 1)
    assert content.shape == (32, 32, 3) and not np.allclose(content, style)
    spec = losses.LossSpec(normalization=problem['normalization'],
                           preprocessing=problem['preprocessing'],
                           conv_algorithm='direct', row_strips=1)
    assert built.spec == spec
    variables = vgg.prepare_variables(params, (), spec.layers)
    targets = objective.make_targets(variables, content, [style], spec)
    weights_ = losses.loss_weights(spec, 1.0, problem['style_weight'])
    # Not the content image, where the content term is 0: both terms count.
    moved = content + np.random.default_rng(0).normal(
        0, 8, content.shape).astype(np.float32)
    np.testing.assert_array_equal(built.start, content)
    loss = jax.jit(objective.total_loss, static_argnums=4)
    expected = float(loss(moved, variables, targets, weights_, spec))
    arguments = built.loss_arguments
    got = float(loss(moved, arguments.variables, arguments.targets,
                     arguments.loss_weights, built.spec))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    if have_torch:
      from scripts import torch_reference  # pylint: disable=g-import-not-at-top
      reference = torch_reference.Gatys(
          params, content, style, beta=problem['style_weight'],
          normalization=problem['normalization'],
          preprocessing=problem['preprocessing'])
      np.testing.assert_allclose(
          float(reference(torch_reference.to_nchw(moved))), expected,
          rtol=1e-4)


def test_torchvision_panel_weights_see_pixels_as_the_keras_ones():
  """The torchvision layout's random network is the Keras one converted
  to torchvision's input: the same pixels give nearly the same features
  (the layouts' means differ by < 0.5 of 255), not 57 times smaller."""
  pixels = bench_problems.blob_image(0, 32, 0)
  features = {}
  for kind in ('caffe', 'torchvision'):
    variables = {'params': bench_problems.panel_weights(kind)}
    features[kind] = np.asarray(vgg.extract_features(
        variables, vgg.preprocess(pixels, kind)[None], ('conv3_1',))[
            'conv3_1'])
  difference = np.linalg.norm(features['torchvision'] - features['caffe'])
  assert difference < 0.01 * np.linalg.norm(features['caffe'])
  # The torchvision network reaches a run as a weights file of its own.
  loaded, meta = weights.load_weights(
      bench_problems.weights_source('torchvision'))
  assert meta['preprocessing'] == 'torchvision'
  np.testing.assert_array_equal(
      loaded['conv1_1']['kernel'],
      bench_problems.panel_weights('torchvision')['conv1_1']['kernel'])


def test_time_to_quality_optimizer_names():
  """Optimisers are config fields: a bare name, or fields with the pyramid
  preconditioner's levels, the first trial and the pairs; what they leave
  unset is torch's algorithm; the time-to-quality default is the
  config's."""
  parse, label = bench_problems.parse_optimizer, bench_problems.optimizer_label
  assert parse('lbfgs') == {'optimizer': 'lbfgs'}
  assert parse('optimizer=lbfgs_nols,lbfgs_pyramid=3') == {
      'optimizer': 'lbfgs_nols', 'lbfgs_pyramid': 3}
  assert label(parse('optimizer=lbfgs,lbfgs_pyramid=2')) == 'lbfgs, pyramid 2'
  assert label(parse('optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8')) == (
      'lbfgs, pyramid 2, first step 8')
  assert parse('optimizer=lbfgs,lbfgs_first_step=8')['lbfgs_first_step'] == 8.0
  fields = parse('optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8,'
                 'lbfgs_memory=20')
  assert label(fields) == 'lbfgs, pyramid 2, first step 8, memory 20'
  assert bench_problems.optimizer_key(fields) == (
      'optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8,lbfgs_memory=20')
  assert label(parse('lbfgs')) == "lbfgs (torch's)"
  assert label(parse('optimizer=lbfgs,lbfgs_memory=20')) == 'lbfgs, memory 20'
  assert bench_problems.parse_optimizers(['lbfgs;adam', '']) == [
      {'optimizer': 'lbfgs'}, {'optimizer': 'adam'}]
  assert time_to_quality.TTQ_OPTIMIZERS[0] == {
      'optimizer': 'lbfgs', 'lbfgs_pyramid': optimizers.LBFGS_PYRAMID,
      'lbfgs_first_step': optimizers.LBFGS_FIRST_STEP}
  for bad in ('lbfgs:q2', 'lbfgs:p2', 'optimizer=lbfgs,lbfgs_pyramid=x',
              'optimizer=lbfgs,coarse_to_fine=1', 'lbfgs_pyramid=2'):
    with pytest.raises(ValueError):
      parse(bad)
  # The fields reach the settings the loop runs.
  problem = bench_problems.build(32, conv_algorithm='direct', optimizer=fields)
  assert (problem.settings.optimizer, problem.settings.lbfgs_pyramid,
          problem.settings.lbfgs_first_step, problem.settings.lbfgs_memory,
          problem.settings.learning_rate) == ('lbfgs', 2, 8.0, 20, 1.0)
