"""scripts/benchmark.py: it starts without torch, measures memory as each
device allows, opens the device in no child with --single-process, and
times chunks of the library's loop."""

import functools
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np

from scripts import bench_problems, bench_tables

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
  assert args.optimizers == [{'optimizer': name} for name in (
      'lbfgs', 'lbfgs_nols', 'adam', 'sgd')]
  args = benchmark.parse_args([
      '--optimizer=lbfgs_nols;optimizer=lbfgs,lbfgs_pyramid=2',
      '--optimizer=optimizer=adam,learning_rate=4'])
  assert args.optimizers == [
      {'optimizer': 'lbfgs_nols'}, {'optimizer': 'lbfgs', 'lbfgs_pyramid': 2},
      {'optimizer': 'adam', 'learning_rate': 4.0}]
  assert benchmark.parse_args(['--optimizer=']).optimizers == []


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
  assert bench_tables.memory_rise(got) == '300 MiB (device, of 1024 MiB)'
  # A peak the evaluation did not raise bounds its memory from above.
  got = benchmark.evaluation_memory(evaluate, _FakeDevice(before, before))
  assert got['evaluation_peak_over_in_use_before_mib'] == 50
  assert got['peak_is_upper_bound'] and bench_tables.memory_rise(
      got).startswith('≤ ')
  # No statistics (the CPU): this process's RSS, where Linux has /proc.
  got = benchmark.evaluation_memory(evaluate, _FakeDevice(None))
  if os.path.exists('/proc/self/clear_refs'):
    assert got['method'] == 'rss_in_process'
    assert got['evaluation_peak_over_rss_before_mib'] >= 0
  else:
    assert not got
  assert calls == [1, 1, 1]


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
                  '--optimizer=', f'--out={out}'])
  assert [c[0][-1] for c in calls] == [json.dumps([
      'torch_child', {'study': 'evaluation', 'size': 32,
                      'threads': benchmark.default_threads(), 'repeats': 1}])]
  assert all(env and env.get('JAX_PLATFORMS') == 'cpu' for _, env in calls)
  row, = json.loads(out.read_text())['sizes']
  assert row['dtype'] == 'float32' and row['memory']['method']
  assert row['compile']['cold']['in_process'], row['compile']
  assert jax.config.jax_compilation_cache_dir == cache  # As it was.


def test_steps_are_chunks_of_the_librarys_loop(monkeypatch):
  """Compiling an optimiser's programs runs no step; the steps study times
  chunks of the library's loop after a warm-up chunk, each between two
  evaluations."""
  benchmark = _load_benchmark()
  monkeypatch.setattr(benchmark, 'build', functools.partial(
      benchmark.build, conv_algorithm='direct'))
  # Two shallow layers compile in a fraction of the paper's five.
  monkeypatch.setitem(bench_problems.BASE_FIELDS, 'content_layers', 'conv2_1')
  monkeypatch.setitem(bench_problems.BASE_FIELDS, 'style_layers',
                      'conv1_1,conv2_1')
  fields = {'optimizer': 'lbfgs_nols'}
  compiled = benchmark.compile_child(32, [fields], 2, None)
  assert compiled['optimizers']['optimizer=lbfgs_nols']['total_s'] > 0
  assert compiled['total_s'] >= compiled['evaluation_s'] > 0
  problem = benchmark.build(32)
  evaluation = benchmark.compile_evaluation(problem)
  calls = []
  evaluate = lambda: calls.append(1) or evaluation(problem.start,
                                                   problem.loss_arguments)
  steps = benchmark.bench_steps(32, 'float32', fields, 2, evaluate, 2)
  assert len(calls) == 3  # after the warm-up chunk and each timed one
  assert steps['evaluations_per_step'] == 1.0  # lbfgs_nols: one per step
  assert len(steps['step_over_evaluation_rounds']) == 2
  assert steps['step_s'] > 0 and steps['step_over_evaluation'] > 0
  assert steps['optimizer'] == fields and steps['in_process_compile_s'] >= 0
