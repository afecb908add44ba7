"""scripts/bench_tables.py: merged panels, catching up, and the tables."""

import json

import pytest

from scripts import bench_problems, bench_tables


def _panel(problem, jax_s, torch_s, evaluations):
  row = {'problem': problem,
         'torch': {'seconds': 30.0, 'evaluations': 300, 'final_loss': 1.0},
         'jax': {'optimizer=lbfgs': {'evaluations': evaluations,
                                     'reached': True, 'optimize_s': 10.0}}}
  return {'time_to_quality': {
      'panel': True, 'evaluations': 300, 'optimizers': ['optimizer=lbfgs'],
      'labels': {'optimizer=lbfgs': "lbfgs (torch's)"},
      'per_evaluation': {str(problem['size']): {'jax_s': jax_s,
                                                'torch_s': torch_s}},
      'rows': [row]}}


def test_merged_panels_keep_each_runs_per_evaluation_times(tmp_path):
  """Two panel runs merged for one table (bench_tables.py a.json b.json):
  each row's count ratio uses the per-evaluation times measured in its own
  run, and the sets' medians cover the rows of both."""
  tuned, held_out = (p for p in bench_problems.PANEL
                     if p['seed'] in (0, 300))
  paths = []
  for name, report in (('a.json', _panel(tuned, 0.1, 0.2, 150)),
                       ('b.json', _panel(held_out, 0.3, 0.4, 240))):
    paths.append(str(tmp_path / name))
    with open(paths[-1], 'w') as f:
      json.dump(report, f)
  q = bench_tables.merged_reports(paths)['time_to_quality']
  ratios = {row['problem']['seed']:
            row['jax']['optimizer=lbfgs']['count_ratio']
            for row in q['rows']}
  assert ratios[0] == pytest.approx(150 * 0.1 / (300 * 0.2))
  assert ratios[300] == pytest.approx(240 * 0.3 / (300 * 0.4))
  assert q['summary']['tuned']['optimizer=lbfgs']['time_ratio_median'] == (
      pytest.approx(10 / 30))
  assert q['summary']['held_out']['optimizer=lbfgs']['count_ratio_worst'] == (
      pytest.approx(0.6))
  assert [part for part, _ in q['per_evaluation_parts']] == ['a.json',
                                                             'b.json']


def test_catch_up_counts_evaluations_to_torchs_losses():
  """The evaluations nst_jax needed to reach torch's loss after k of its
  evaluations, from both curves; None where it never did."""
  torch_curve = [[k, 0.1 * k, 100.0 / k] for k in range(1, 11)]
  curve = [[3, 60.0], [6, 30.0], [9, 12.0], [12, 11.0]]
  assert bench_tables.catch_up(torch_curve, curve, at=(1, 2, 3, 8, 10, 20)
                               ) == [3, 6, 6, 9, None]


def test_tables_name_optimisers_by_their_labels(tmp_path, capsys):
  """The command line prints a saved panel's tables, optimisers under
  their labels, steps under their short names."""
  problem = next(p for p in bench_problems.PANEL if p['seed'] == 0)
  path = tmp_path / 'panel.json'
  path.write_text(json.dumps(_panel(problem, 0.1, 0.2, 150)))
  bench_tables.main([str(path)])
  out = capsys.readouterr().out
  assert "| tuned | lbfgs (torch's) | 1 | 0 | 150 | 0.50 |" in out
  assert "| t0-128-pap-caffe | 1 | 30 s |" in out
  assert bench_tables.short_name('optimizer=lbfgs,lbfgs_pyramid=2') == (
      'lbfgs,lbfgs_pyramid=2')
