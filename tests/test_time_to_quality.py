"""scripts/time_to_quality.py: its optimisers are config fields, its runs
are the library's loop to torch's loss, and torch's runs are reused."""

import functools
import json

import pytest

from nst_jax.core import optimizers
from scripts import bench_problems, time_to_quality

SHALLOW_LAYERS = {'content_layers': 'conv2_1',
                  'style_layers': 'conv1_1,conv2_1'}


def test_flags_name_optimisers_by_config_fields():
  args = time_to_quality.parse_args([])
  assert args.optimizers == list(time_to_quality.TTQ_OPTIMIZERS)
  assert args.optimizers[0] == {
      'optimizer': 'lbfgs', 'lbfgs_pyramid': optimizers.LBFGS_PYRAMID,
      'lbfgs_first_step': optimizers.LBFGS_FIRST_STEP}
  args = time_to_quality.parse_args([
      '--panel=tuned', '--problems=0,2',
      '--optimizer=optimizer=lbfgs_nols,lbfgs_pyramid=3;lbfgs',
      '--optimizer=optimizer=lbfgs_nols,coarse_to_fine=1'])
  assert (args.panel, args.problems) == ('tuned', '0,2')
  assert args.optimizers == [
      {'optimizer': 'lbfgs_nols', 'lbfgs_pyramid': 3}, {'optimizer': 'lbfgs'},
      {'optimizer': 'lbfgs_nols', 'coarse_to_fine': 1}]
  for bad in ('lbfgs_nols:p2', 'optimizer=lbfgs,coarse_to_fine=2'):
    with pytest.raises(SystemExit):
      time_to_quality.parse_args([f'--optimizer={bad}'])


def test_runs_go_to_torchs_loss_in_the_librarys_loop(monkeypatch):
  """A panel problem at 32 px: each optimiser runs until the loss or the
  budget, its curve read after each chunk; a coarse level runs its steps
  at half size first."""
  monkeypatch.setattr(time_to_quality, 'build', functools.partial(
      time_to_quality.build, conv_algorithm='direct'))
  # Two shallow layers compile in a fraction of the paper's five.
  for name, layers in SHALLOW_LAYERS.items():
    monkeypatch.setitem(bench_problems.BASE_FIELDS, name, layers)
  problem = dict(bench_problems.PANEL[0], size=32)
  plain = {'optimizer': 'lbfgs_nols'}
  coarse = dict(plain, coarse_to_fine=1, coarse_iterations=2)
  results = time_to_quality.ttq_child([plain, coarse], float('-inf'), 4, 2,
                                      problem=problem)
  run = results['optimizer=lbfgs_nols']
  assert not run['reached'] and run['stop_reason'] == 'iterations'
  assert (run['steps'], run['evaluations']) == (4, 5)
  assert [e for e, _ in run['curve']] == [3, 5]
  assert run['final_loss'] == run['curve'][-1][1] < results['start_loss']
  assert run['optimize_incl_compile_s'] >= run['optimize_s'] > 0
  two_level = results['optimizer=lbfgs_nols,coarse_to_fine=1,'
                      'coarse_iterations=2']
  assert (two_level['coarse_size'], two_level['coarse_evaluations']) == (16,
                                                                         3)
  assert two_level['evaluations'] == 5
  # With torch's loss in reach, the run stops there.
  target = run['curve'][0][1]
  reached = time_to_quality.ttq_child([plain], target, 4, 2,
                                      problem=problem)['optimizer=lbfgs_nols']
  assert reached['reached'] and reached['stop_reason'] == 'stop_loss'
  assert reached['final_loss'] <= target and reached['evaluations'] == 3


def test_torch_runs_are_reused_across_sets(tmp_path):
  """A problem's torch run is found by seed, size, loss and layout, so it is
  reused when the problem has moved from the held-out to the tuned set."""
  tuned = next(p for p in bench_problems.PANEL if p['seed'] == 200)
  assert not tuned['held_out']
  as_held_out = dict(tuned, name='h' + tuned['name'][1:], held_out=True)
  path = tmp_path / 'old.json'
  path.write_text(json.dumps({'time_to_quality': {'evaluations': 300, 'rows': [
      {'problem': as_held_out, 'torch': {'final_loss': 1.5}}]}}))
  rows = time_to_quality.torch_rows_from(str(path), 300)
  assert rows[bench_problems.problem_key(tuned)] == {'final_loss': 1.5}
  assert time_to_quality.torch_rows_from(str(path), 100) == {}
