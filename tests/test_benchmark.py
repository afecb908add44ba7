"""scripts/benchmark.py: its problem is the library's loss, and it starts
without torch."""

import importlib.util
import os
import sys

import jax
import numpy as np

from nst_jax import images, losses, vgg, weights

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'scripts',
                      'benchmark.py')


def _load_benchmark():
  if 'benchmark_script' not in sys.modules:
    spec = importlib.util.spec_from_file_location('benchmark_script', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
  return sys.modules['benchmark_script']


def test_flags_parse_without_importing_torch():
  had_torch = 'torch' in sys.modules
  benchmark = _load_benchmark()
  args = benchmark.parse_args(['--sizes=128,256', '--no-torch', '--sweep',
                               '--memory-sizes=64', '--layer-sizes=32'])
  assert (args.sizes, args.no_torch, args.sweep) == ('128,256', True, True)
  assert had_torch or 'torch' not in sys.modules


def test_problem_is_the_library_loss():
  benchmark = _load_benchmark()
  bench = benchmark.build(32, conv_algorithm='direct')
  params, _ = weights.random_weights(benchmark.WEIGHTS_SEED)
  content, style = images.demo_content(32), images.demo_style(32)
  spec = losses.LossSpec(normalization='paper', conv_algorithm='direct')
  variables = vgg.prepare_variables(params, (), spec.layers)
  targets = losses.make_targets(variables, content, [style], spec)
  expected = losses.total_loss(content, variables, targets,
                               losses.loss_weights(spec, 1.0, 1e3), spec)
  got = losses.total_loss(bench.pixels, bench.problem.variables,
                          bench.problem.targets, bench.problem.loss_weights,
                          bench.spec)
  assert bench.spec == spec
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Without computing: zeros of the same shapes.
  zeros = benchmark.build(32, conv_algorithm='direct', compute=False)
  shapes = lambda tree: jax.tree_util.tree_map(np.shape, tree)
  assert shapes(zeros.problem) == shapes(bench.problem)
