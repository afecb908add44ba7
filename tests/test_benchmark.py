"""scripts/benchmark.py: its problem is the library's loss, and it starts
without torch."""

import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nst_jax.io import images
from nst_jax.core import losses, optim, vgg
from nst_jax.engine import settings
from nst_jax import weights
from nst_jax.engine import programs as programs_lib
from nst_jax.configs import default

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


class _FakeDevice:
  """A device whose `memory_stats()` returns the given values in turn."""

  def __init__(self, *stats):
    self.stats = list(stats)

  def memory_stats(self):
    return self.stats.pop(0)


def test_device_memory_is_the_peak_less_the_bytes_in_use_before():
  benchmark = _load_benchmark()
  mib, calls = 2**20, []
  evaluate = lambda: calls.append(1) or np.zeros(())
  before = {'bytes_in_use': 100 * mib, 'peak_bytes_in_use': 150 * mib,
            'bytes_limit': 1024 * mib}
  got = benchmark.evaluation_memory(evaluate, _FakeDevice(
      before, dict(before, peak_bytes_in_use=400 * mib)))
  assert got == {'method': 'memory_stats',
                 'evaluation_peak_over_in_use_before_mib': 300,
                 'peak_is_upper_bound': False, 'bytes_limit': 1024 * mib}
  assert benchmark._rise(got) == '300 MiB (device, of 1024 MiB)'
  # A peak the evaluation did not raise bounds its memory from above.
  got = benchmark.evaluation_memory(evaluate, _FakeDevice(before, before))
  assert got['evaluation_peak_over_in_use_before_mib'] == 50
  assert got['peak_is_upper_bound'] and benchmark._rise(got).startswith('≤ ')
  # No statistics (the CPU): this process's RSS, where Linux has /proc.
  got = benchmark.evaluation_memory(evaluate, _FakeDevice(None))
  if os.path.exists('/proc/self/clear_refs'):
    assert got['method'] == 'rss_in_process'
    assert got['evaluation_peak_over_rss_before_mib'] >= 0
  else:
    assert not got
  assert calls == [1, 1, 1]


def test_bfloat16_problem_is_a_bfloat16_run():
  benchmark = _load_benchmark()
  bench = benchmark.build(32, conv_algorithm='direct', dtype='bfloat16')
  # What a run with dtype='bfloat16' and the paper's loss computes, as
  # api.execute and loop.optimize compute it.
  config = default.get_config()
  config.update(dict(content='builtin:scene', style='builtin:painting',
                     weights='random', dtype='bfloat16',
                     loss_normalization='paper', content_weight=1.0,
                     style_weight=1e3, conv_algorithm='direct'))
  checked = settings.check(config, from_files=False)
  spec = dataclasses.replace(checked.spec, conv_algorithm='direct')
  assert bench.spec == spec
  params, _ = weights.random_weights(benchmark.WEIGHTS_SEED)
  content, style = images.demo_content(32), images.demo_style(32)
  programs = programs_lib.Programs()
  variables = programs.prepare_variables(params, (), spec.layers)
  targets = programs.targets(variables, content, [style], (1.0,), spec)
  loss_weights = losses.loss_weights(
      spec, checked.content_weight, checked.style_weight, checked.tv_weight,
      checked.content_layer_weights, checked.style_layer_weights)
  dtypes = lambda tree: jax.tree_util.tree_map(lambda x: x.dtype, tree)
  assert dtypes(bench.problem.variables) == dtypes(variables)
  assert dtypes(bench.problem.targets) == dtypes(targets)
  loss = jax.jit(losses.total_loss, static_argnums=4)
  np.testing.assert_allclose(
      loss(bench.pixels, bench.problem.variables, bench.problem.targets,
           bench.problem.loss_weights, bench.spec),
      loss(content, variables, targets, loss_weights, spec), rtol=2e-2)


def test_single_process_opens_the_device_in_no_child(tmp_path, monkeypatch):
  benchmark = _load_benchmark()
  calls = []

  def run(command, **kwargs):  # PyTorch's child, answered without torch.
    calls.append((command, kwargs.get('env')))
    return subprocess.CompletedProcess(command, 0, stderr='', stdout=(
        json.dumps({'evaluation_s': 1.0, 'loss': 1.0, 'grad_norm': 1.0})))
  monkeypatch.setattr(benchmark.subprocess, 'run', run)
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *args: (
      name == 'torch' or find_spec(name, *args)))
  version = importlib.metadata.version  # torch need not be installed
  monkeypatch.setattr(importlib.metadata, 'version', lambda name: (
      'faked' if name == 'torch' else version(name)))
  # Less to compile: direct convolutions (not the CPU's default, Winograd),
  # no second evaluation with XLA's default options, no optimiser (steps
  # always ran in this process).
  monkeypatch.setattr(benchmark, 'build', functools.partial(
      benchmark.build, conv_algorithm='direct'))
  monkeypatch.setattr(benchmark, 'xla_options', dict)
  out, cache = tmp_path / 'bench.json', jax.config.jax_compilation_cache_dir
  benchmark.main(['--sizes=32', '--single-process', '--repeats=1',
                  '--optimizers=', f'--out={out}'])
  assert [c[0][-1] for c in calls] == [json.dumps([
      'torch_child', {'study': 'evaluation', 'size': 32,
                      'threads': benchmark.default_threads(), 'repeats': 1}])]
  assert all(env and env.get('JAX_PLATFORMS') == 'cpu' for _, env in calls)
  row, = json.loads(out.read_text())['sizes']
  assert row['dtype'] == 'float32' and row['memory']['method']
  assert row['compile']['cold']['in_process'], row['compile']
  assert jax.config.jax_compilation_cache_dir == cache  # As it was.


def test_panel_problems_are_the_library_loss_and_torchs():
  """One panel problem of each layout (preprocessing) and normalisation at
  32 px: the benchmark's problem is the library's loss of its seeded
  images, and scripts/torch_reference.py computes the same (with torch)."""
  benchmark = _load_benchmark()
  assert len(benchmark.panel_problems('tuned')) >= 8
  held_out = benchmark.panel_problems('held_out')
  assert {p['seed'] for p in held_out} == set(range(300, 308))
  assert {(p['size'], p['normalization'], p['preprocessing'])
          for p in held_out} == set(benchmark.DESIGN)
  problems = [p for p in benchmark.PANEL if p['seed'] in (0, 3)]
  assert {(p['normalization'], p['preprocessing']) for p in problems} == {
      ('paper', 'caffe'), ('invariant', 'torchvision')}
  have_torch = importlib.util.find_spec('torch') is not None
  for problem in problems:
    params = benchmark.panel_weights(problem['preprocessing'])
    bench = benchmark.panel_bench(problem, 32, conv_algorithm='direct')
    content = benchmark.blob_image(problem['seed'], 32, 0)
    style = benchmark.blob_image(problem['seed'], 32, 1)
    assert content.shape == (32, 32, 3) and not np.allclose(content, style)
    spec = losses.LossSpec(normalization=problem['normalization'],
                           preprocessing=problem['preprocessing'],
                           conv_algorithm='direct')
    assert bench.spec == spec
    variables = vgg.prepare_variables(params, (), spec.layers)
    targets = losses.make_targets(variables, content, [style], spec)
    weights_ = losses.loss_weights(spec, 1.0, problem['style_weight'])
    # Not the content image, where the content term is 0: both terms count.
    moved = content + np.random.default_rng(0).normal(
        0, 8, content.shape).astype(np.float32)
    np.testing.assert_array_equal(bench.pixels, content)
    loss = jax.jit(losses.total_loss, static_argnums=4)
    expected = float(loss(moved, variables, targets, weights_, spec))
    got = float(loss(moved, bench.problem.variables, bench.problem.targets,
                     bench.problem.loss_weights, bench.spec))
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
  benchmark = _load_benchmark()
  pixels = benchmark.blob_image(0, 32, 0)
  features = {}
  for kind in ('caffe', 'torchvision'):
    variables = {'params': benchmark.panel_weights(kind)}
    features[kind] = np.asarray(vgg.extract_features(
        variables, vgg.preprocess(pixels, kind)[None], ('conv3_1',))[
            'conv3_1'])
  difference = np.linalg.norm(features['torchvision'] - features['caffe'])
  assert difference < 0.01 * np.linalg.norm(features['caffe'])



def test_time_to_quality_optimizer_names():
  """--ttq-optimizers names: torch's algorithm, or the pyramid
  preconditioner's levels and weight; the default is the config's."""
  benchmark = _load_benchmark()
  assert benchmark.optimizer_of('lbfgs') == optim.Optimizer('lbfgs')
  assert benchmark.optimizer_of('lbfgs_nols:p3w0.7') == optim.Optimizer(
      'lbfgs_nols', pyramid_levels=3, pyramid_weight=0.7)
  assert benchmark.ttq_label('lbfgs:p2') == 'lbfgs, pyramid 2'
  assert benchmark.ttq_label('lbfgs:p2f8') == 'lbfgs, pyramid 2, first step 8'
  assert benchmark.optimizer_of('lbfgs:p2f8').first_step == 8.0
  assert benchmark.optimizer_of('lbfgs:p2f8c-0.5m20') == optim.Optimizer(
      'lbfgs', pyramid_levels=2, first_step=8.0, luminance_weight=-0.5,
      lbfgs_memory=20)
  assert benchmark.ttq_label('lbfgs:p2f8c-0.5m20') == (
      'lbfgs, pyramid 2, first step 8, luminance -0.5, memory 20')
  assert benchmark.ttq_label('lbfgs') == "lbfgs (torch's)"
  assert benchmark.ttq_label('lbfgs_nols:p3w0.7') == (
      'lbfgs_nols, pyramid 3 w 0.7')
  assert benchmark.ttq_label('lbfgs:m20') == 'lbfgs, memory 20'
  assert benchmark.optimizer_of(benchmark.TTQ_OPTIMIZERS[0]) == optim.Optimizer(
      'lbfgs', pyramid_levels=optim.LBFGS_PYRAMID,
      first_step=optim.LBFGS_FIRST_STEP)
  with pytest.raises(ValueError):
    benchmark.optimizer_of('lbfgs:q2')


def test_merged_panels_keep_each_runs_per_evaluation_times(tmp_path):
  """Two panel runs merged for one table (--table-from=a.json,b.json): each
  row's count ratio uses the per-evaluation times measured in its own run,
  and the sets' medians cover the rows of both."""
  benchmark = _load_benchmark()

  def panel(problem, jax_s, torch_s, evaluations):
    row = {'problem': problem,
           'torch': {'seconds': 30.0, 'evaluations': 300,
                     'final_loss': 1.0},
           'jax': {'lbfgs': {'evaluations': evaluations, 'reached': True,
                             'optimize_s': 10.0}}}
    return {'time_to_quality': {
        'panel': True, 'evaluations': 300, 'optimizers': ['lbfgs'],
        'per_evaluation': {str(problem['size']): {'jax_s': jax_s,
                                                  'torch_s': torch_s}},
        'rows': [row]}}

  tuned, held_out = (p for p in benchmark.PANEL if p['seed'] in (0, 300))
  paths = []
  for name, report in (('a.json', panel(tuned, 0.1, 0.2, 150)),
                       ('b.json', panel(held_out, 0.3, 0.4, 240))):
    paths.append(str(tmp_path / name))
    with open(paths[-1], 'w') as f:
      json.dump(report, f)
  q = benchmark.merged_reports(paths)['time_to_quality']
  ratios = {row['problem']['seed']: row['jax']['lbfgs']['count_ratio']
            for row in q['rows']}
  assert ratios[0] == pytest.approx(150 * 0.1 / (300 * 0.2))
  assert ratios[300] == pytest.approx(240 * 0.3 / (300 * 0.4))
  assert q['summary']['tuned']['lbfgs']['time_ratio_median'] == (
      pytest.approx(10 / 30))
  assert q['summary']['held_out']['lbfgs']['count_ratio_worst'] == (
      pytest.approx(0.6))
  assert [part for part, _ in q['per_evaluation_parts']] == ['a.json',
                                                             'b.json']


def test_child_process_failure_is_one_error_line(tmp_path):
  """scripts/child_processes.run: a child that raises gives its exception
  line as 'error', not an exception in the parent."""
  child_processes = _load_benchmark().child_processes
  script = tmp_path / 'child.py'
  script.write_text(
      'import json, sys\n'
      'name, kwargs = json.loads(sys.argv[2])\n'
      "if name == 'fail':\n"
      "  raise ValueError('no such size')\n"
      "print(json.dumps({'doubled': 2 * kwargs['x']}))\n")
  ok = child_processes.run(str(script), 'double', {'x': 21}, str(tmp_path))
  assert ok['doubled'] == 42 and ok['process_wall_s'] > 0
  failed = child_processes.run(str(script), 'fail', {}, str(tmp_path))
  assert failed['error'] == 'ValueError: no such size'


def test_catch_up_counts_evaluations_to_torchs_losses():
  """The evaluations nst_jax needed to reach torch's loss after k of its
  evaluations, from both curves; None where it never did."""
  benchmark = _load_benchmark()
  torch_curve = [[k, 0.1 * k, 100.0 / k] for k in range(1, 11)]
  curve = [[3, 60.0], [6, 30.0], [9, 12.0], [12, 11.0]]
  assert benchmark.catch_up(torch_curve, curve, at=(1, 2, 3, 8, 10, 20)) == [
      3, 6, 6, 9, None]


def test_torch_runs_are_reused_across_sets(tmp_path):
  """A problem's torch run is found by seed, size, loss and layout, so it is
  reused when the problem has moved from the held-out to the tuned set."""
  benchmark = _load_benchmark()
  tuned = next(p for p in benchmark.PANEL if p['seed'] == 200)
  assert not tuned['held_out']
  as_held_out = dict(tuned, name='h' + tuned['name'][1:], held_out=True)
  path = tmp_path / 'old.json'
  path.write_text(json.dumps({'time_to_quality': {'evaluations': 300, 'rows': [
      {'problem': as_held_out, 'torch': {'final_loss': 1.5}}]}}))
  rows = benchmark.torch_rows_from(str(path), 300)
  assert rows[benchmark.problem_key(tuned)] == {'final_loss': 1.5}
  assert benchmark.torch_rows_from(str(path), 100) == {}
