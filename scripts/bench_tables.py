"""The benchmark's Markdown tables, from its reports, and the panel's sums.

  python scripts/bench_tables.py out/benchmark.json
  python scripts/bench_tables.py out/ttq_held_out.json out/ttq_tuned.json

Prints the tables of reports that scripts/benchmark.py and
scripts/time_to_quality.py wrote; several time-to-quality reports (parts of
one panel run side by side) are merged into one panel (`merged_reports`).
Pure Python on the JSON: neither JAX nor the library is imported.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


# ---------------------------------------------------------------------------
# Cells.

def _s(seconds):
  if seconds is None:
    return '-'
  return f'{1000 * seconds:.0f} ms' if seconds < 10 else f'{seconds:.1f} s'


def _num(value, digits=0, unit=''):
  return '-' if value is None else f'{value:.{digits}f}{unit}'


def _mib(count):
  return _num(None if count is None else count / 2**20)


def memory_rise(mem):
  """The memory one evaluation added, and how it was measured."""
  mib = mem.get('evaluation_peak_over_rss_before_mib',
                mem.get('evaluation_peak_over_in_use_before_mib'))
  how = {'rss_in_process': ' (RSS, in process)',
         'memory_stats': f' (device, of {_mib(mem.get("bytes_limit"))} MiB)'}
  return '-' if mib is None else ('≤ ' * bool(mem.get('peak_is_upper_bound'))
                                  + f'{mib:.0f} MiB'
                                  + how.get(mem.get('method'), ''))


def _table(caption, header, rows):
  print(f'\n{caption}\n\n| ' + ' | '.join(header) + ' |\n|'
        + '---|' * len(header))
  for row in rows:
    print('| ' + ' | '.join(str(cell) for cell in row) + ' |')


def short_name(key):
  """An optimiser's key without its 'optimizer=': 'lbfgs',
  'lbfgs,lbfgs_pyramid=2'."""
  return key[len('optimizer='):] if key.startswith('optimizer=') else key


def ttq_label(q, key):
  """An optimiser's label in a time-to-quality report ('lbfgs, pyramid
  2'; its short name when the report has none)."""
  return q.get('labels', {}).get(key, short_name(key))


# ---------------------------------------------------------------------------
# scripts/benchmark.py's tables.

def print_evaluations(report):
  """The machine, and one evaluation per size against PyTorch's."""
  m = report['machine']
  print(f'Machine: {m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]:.0f} GiB;'
        f' device {m.get("device", "cpu")}; jax {m["jax"]}'
        + (f', torch {m["torch"]}' if 'torch' in m else '')
        + f'; load average {report["load_average_start"][0]:.2f} at start, '
        f'{report["load_average_end"][0]:.2f} at end.')
  rows = []
  for row in report['sizes']:
    torch_row, mem = row.get('torch', {}), row.get('memory', {})
    xla = row['xla_memory']
    torch_s = torch_row.get('evaluation_s')
    rows.append([
        row['size'], row.get('dtype', 'float32'),
        f'{_s(row["evaluation_s"])} ({row["conv_algorithm"]})',
        _s(row.get('evaluation_direct_s', row['evaluation_s'])),
        _s(row.get('evaluation_xla_defaults_s')),
        f'{row["gflops_per_s"]:.0f}', f'{row["xla_over_analytic_flops"]:.3f}',
        _s(torch_s),
        _num(torch_s and row['flops_per_evaluation'] / torch_s / 1e9),
        _num(row.get('jax_over_torch'), 2),
        _num(mem.get('peak_rss_minus_baseline_mib'), 0, ' MiB'),
        memory_rise(mem),
        f'{_mib(xla["temp_plus_argument_plus_output_bytes"])} MiB '
        f'({_mib(xla["temp_size_in_bytes"])})',
        f'{_num(row["evaluation_other_processes_cores"], 2)} / '
        f'{_num(torch_row.get("other_processes_cores"), 2)}'])
  _table(f'One evaluation (loss + gradient w.r.t. the pixels; FLOPs = '
         f'{report["flops_formula"]}):',
         ['size', 'dtype', 'JAX', 'JAX, direct convolutions',
          "JAX, XLA's default options", 'GFLOP/s', 'XLA FLOPs / analytic',
          'PyTorch', 'PyTorch GFLOP/s', 'JAX / PyTorch',
          'peak RSS − baseline', 'rise in evaluation',
          'XLA temp+arg+out (temp)', 'other load JAX / PyTorch'],
         rows)


def print_steps(sizes):
  """Each optimiser's step in evaluations, and its compiling."""
  rows, chunks = [], {}
  for row in sizes:
    cold, warm = (row.get('compile', {}).get(phase, {}).get('optimizers', {})
                  for phase in ('cold', 'warm'))
    for name, r in row['steps'].items():
      chunks[row['size']] = r['chunk_steps']
      ratio, rounds = (f'{r["step_over_evaluation"]:.3f}',
                       r['step_over_evaluation_rounds'])
      if len(rounds) > 1:
        ratio += f' ({min(rounds):.2f}-{max(rounds):.2f})'
      rows.append([
          row['size'], row.get('dtype', 'float32'), short_name(name),
          _s(r['step_s']),
          f'{r["evaluations_per_step"]:.2f}', ratio,
          f'{r["per_evaluation_over_evaluation"]:.3f}',
          f'{cold[name]["total_s"]:.1f} s / {warm[name]["total_s"]:.1f} s'
          if name in cold and name in warm else '-',
          _num(r['other_processes_cores'], 2)])
  _table('One optimisation step (chunks of ' + ', '.join(
      f'{n} steps at {size} px' for size, n in chunks.items()) + '; ratios '
         'to the evaluations timed around each chunk; compile = init + '
         'chunk in a fresh process, or in this one after jax.clear_caches() '
         'with --single-process, cold / cached):',
         ['size', 'dtype', 'optimiser', 'step', 'evaluations / step',
          'step / evaluation (range over rounds)',
          'per evaluation / evaluation', 'compile cold / cached',
          'other load'], rows)


def print_compile(sizes):
  """Compiling the evaluation and everything, cold and cached."""
  compiled = [(row['size'], row.get('dtype', 'float32'), row['compile'])
              for row in sizes if 'compile' in row]
  if compiled:
    cell = lambda c, key: ' / '.join(
        f'{c[phase][key]:.1f} s' if key in c[phase] else
        c[phase].get('error', '-')[:100] for phase in ('cold', 'warm'))
    _table('Compiling in a fresh process (--single-process: in this one, '
           'cached = after jax.clear_caches()), cold / cached; the launch '
           'includes building the problem and evaluating each start:',
           ['size', 'dtype', 'the evaluation', 'launch to everything compiled'],
           [[size, dtype, cell(c, 'evaluation_s'), cell(c, 'process_wall_s')]
            for size, dtype, c in compiled])


def print_sweep(sweep):
  """A sweep as one program against its members' runs."""
  _table('Sweep of 4 members at 64 px as one program, against 4 runs:',
         ['optimiser', '4-member sweep / 4 runs (map)', '(vmap)'],
         [[name, f'{r["map_over_k_runs"]:.2f}', f'{r["vmap_over_k_runs"]:.2f}']
          for name, r in sweep.items()])


# ---------------------------------------------------------------------------
# scripts/time_to_quality.py's sums and tables.

def panel_summary(rows, per_eval, names):
  """Per optimiser and set (tuned, held out): the median and worst of the
  time ratio and of the count-based ratio; a problem not reached counts
  with its ratio at the budget (a lower bound) and is counted."""
  def count_ratio(row, r):
    size, t = row['problem']['size'], row['torch']
    # A merged panel's rows keep the per-evaluation times of their own run.
    own = row.get('per_evaluation') or per_eval.get(str(size), {})
    jax_s, torch_s = own.get('jax_s'), own.get('torch_s')
    coarse_s = per_eval.get(str(size // 2), {}).get('jax_s')
    if not (jax_s and torch_s) or ('coarse_size' in r and not coarse_s):
      return None
    spent = r['evaluations'] * jax_s + r.get('coarse_evaluations', 0) * (
        coarse_s or 0)
    return spent / (t['evaluations'] * torch_s)

  summary = {}
  for row in rows:
    for name in names:
      r = row.get('jax', {}).get(name)
      if not r or 'error' in r or 'error' in row['torch']:
        continue
      r['time_ratio'] = (None if row.get('torch_reused') else
                         r['optimize_s'] / row['torch']['seconds'])
      r['count_ratio'] = count_ratio(row, r)
      # Machine-independent: evaluations (a coarse one as 1/4) per torch's.
      r['evaluation_ratio'] = (r['evaluations'] + r.get(
          'coarse_evaluations', 0) / 4) / row['torch']['evaluations']
  for held_out, label in ((False, 'tuned'), (True, 'held_out')):
    chosen = [row for row in rows if row['problem']['held_out'] == held_out]
    for name in names:
      results = [row['jax'][name] for row in chosen if 'evaluation_ratio'
                 in row.get('jax', {}).get(name, {})]
      if not results:
        continue
      entry = {'problems': len(results),
               'not_reached': sum(not r['reached'] for r in results),
               'evaluations_median': float(np.median(
                   [r['evaluations'] + r.get('coarse_evaluations', 0) / 4
                    for r in results]))}
      for key in ('evaluation_ratio', 'time_ratio', 'count_ratio'):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
          entry[f'{key}_median'] = float(np.median(values))
          entry[f'{key}_worst'] = float(np.max(values))
      summary.setdefault(label, {})[name] = entry
  return summary


def merged_reports(paths):
  """The first report, with the time-to-quality panel rows of all (parts
  of one panel run side by side; a problem's first finished row) and their
  summary recomputed."""
  reports = []
  for path in paths:
    with open(path) as f:
      reports.append(json.load(f))
  report = reports[0]
  q = report.get('time_to_quality', {})
  if q.get('panel'):
    rows = {}
    q['per_evaluation_parts'] = [
        [os.path.basename(path), r['time_to_quality']['per_evaluation']]
        for path, r in zip(paths, reports)
        if 'per_evaluation' in r.get('time_to_quality', {})]
    for r in reports:
      part = r.get('time_to_quality', {})
      for row in part.get('rows', []):
        if 'jax' in row or 'error' in row.get('torch', {}):
          row.setdefault('per_evaluation', part.get('per_evaluation', {}).get(
              str(row['problem']['size'])))
          rows.setdefault(row['problem']['name'], row)
    q['rows'] = sorted(rows.values(), key=lambda row: (
        row['problem']['size'], row['problem']['held_out'],
        row['problem']['seed']))
    q['labels'] = {key: text for r in reports for key, text in r.get(
        'time_to_quality', {}).get('labels', {}).items()}
    q['summary'] = panel_summary(q['rows'], q['per_evaluation'],
                                 q['optimizers'])
  return report


def print_time_to_quality_panel(q):
  """The panel: per-evaluation times, each problem, the summary and the
  catching up."""
  names = q['optimizers']
  # A merged panel: each part's own measurement, named by its file.
  parts = q.get('per_evaluation_parts') or [['', q.get('per_evaluation', {})]]
  _table('Per-evaluation seconds, measured back to back (PyTorch, nst_jax '
         "lbfgs_nols's compiled loop, PyTorch again):",
         ['run', 'size', 'PyTorch', 'nst_jax loop', 'nst_jax / PyTorch'],
         [[part, size, _s(row.get('torch_s')), _s(row.get('jax_s')),
           _num(row.get('jax_over_torch'), 2)]
          for part, per_eval in parts for size, row in per_eval.items()])

  def cell(r):
    if not r:
      return '-'
    if 'error' in r:
      return f'error: {r["error"][:60]}'
    coarse = (f'+{r["coarse_evaluations"]}/4'
              if 'coarse_evaluations' in r else '')
    bound = '' if r['reached'] else '≥ '
    return (f'{r["evaluations"]}{coarse}'
            f'{"" if r["reached"] else " (not reached)"}, '
            f'{bound}{_num(r.get("time_ratio"), 2)} / '
            f'{bound}{_num(r.get("count_ratio"), 2)}')

  rows = []
  for row in q['rows']:
    p, t = row['problem'], row['torch']
    if 'error' in t:
      rows.append([p['name'], f'torch error: {t["error"][:80]}']
                  + [''] * (len(names) + 1))
      continue
    jax_row = row.get('jax', {})
    rows.append([
        p['name'] + (' (held out)' if p['held_out'] else ''),
        f'{t["final_loss"]:.4g}',
        f'{t["seconds"]:.0f} s',
        _num(row.get('start_loss_rel_diff_vs_torch'), 1) if
        row.get('start_loss_rel_diff_vs_torch') is None else
        f'{row["start_loss_rel_diff_vs_torch"]:.0e}'] + [
            f'error: {jax_row["error"][:60]}' if 'error' in jax_row
            else cell(jax_row.get(name)) for name in names])
  _table(f'Time to quality, per problem: name = set (t tuned, h held out), '
         f'seed, px, normalisation, layout (preprocessing). nst_jax runs '
         f'with stop_loss = the loss torch.optim.LBFGS (history 100, lr 1, '
         f'no line search) reaches in {q["evaluations"]} evaluations, at most '
         f'{3 * q["evaluations"]} steps. Cells: evaluations (c2f: +coarse '
         f'ones at half size, each about 1/4), time ratio (optimise time / '
         f"PyTorch's) / count ratio (evaluations x nst_jax's loop "
         f"per-evaluation time / ({q['evaluations']} x PyTorch's), measured "
         'back to back); ≥: not reached, a lower bound:',
         ['problem', "PyTorch's loss", 'PyTorch time',
          'start loss rel. diff.'] + [ttq_label(q, n) for n in names],
         rows)
  summary_rows = []
  for label, by_name in q.get('summary', {}).items():
    for name, e in by_name.items():
      summary_rows.append([
          label.replace('_', ' '), ttq_label(q, name), e['problems'],
          e['not_reached'], _num(e['evaluations_median']),
          _num(e.get('evaluation_ratio_median'), 2),
          _num(e.get('evaluation_ratio_worst'), 2),
          _num(e.get('time_ratio_median'), 2),
          _num(e.get('time_ratio_worst'), 2),
          _num(e.get('count_ratio_median'), 2),
          _num(e.get('count_ratio_worst'), 2)])
  _table('Time to quality, summary (ratios to PyTorch; a problem not '
         'reached counts with its lower bound):',
         ['set', 'optimiser', 'problems', 'not reached', 'median evaluations',
          'evaluations / PyTorch\'s median', 'worst',
          'time ratio median', 'worst', 'count ratio median', 'worst'],
         summary_rows)
  print_catch_up(q)


# torch's evaluation counts at which `print_catch_up` compares the losses.
CATCH_UP_AT = (10, 25, 50, 100, 200, 300)


def catch_up(torch_curve, curve, at=CATCH_UP_AT):
  """Per k in `at`: the evaluations nst_jax's run (`curve`: [evaluations,
  loss] after each chunk) spent until its loss was at most torch's after k
  evaluations (`torch_curve`: [evaluation, seconds, loss]), or None if it
  never was (to chunk resolution: time_to_quality.py --chunk=1 for single
  steps)."""
  out = []
  for k in at:
    if k > len(torch_curve):
      break
    target = torch_curve[k - 1][2]
    out.append(next((e for e, loss in curve if loss <= target), None))
  return out


def print_catch_up(q):
  """`catch_up` of each run that kept its curve."""
  rows = []
  for row in q['rows']:
    for name in q['optimizers']:
      r = row.get('jax', {}).get(name) or {}
      if r.get('curve') and row['torch'].get('curve'):
        rows.append([row['problem']['name'], ttq_label(q, name)] + [
            '-' if e is None else e
            for e in catch_up(row['torch']['curve'], r['curve'])])
  if rows:
    _table("Catching up: nst_jax's evaluations until its loss is at most "
           "torch.optim.LBFGS's after k evaluations (to the chunk: "
           '--chunk):', ['problem', 'optimiser'] + [
               f'k = {k}' for k in CATCH_UP_AT], rows)


def print_time_to_quality(q):
  """The panel (`print_time_to_quality_panel`) or the demo's problem."""
  if q.get('panel'):
    print_time_to_quality_panel(q)
    return
  if 'error' in q:
    print(f'\nTime to quality: {q["error"]}')
    return
  t = q['torch']
  rows = [['torch.optim.LBFGS', '-', t['evaluations'], '-',
           f'{t["seconds"]:.1f} s',
           f'{1000 * t["seconds"] / t["evaluations"]:.0f} ms', '-', '1',
           _num(t['other_processes_cores'], 2)]]
  for name, r in q['jax'].items():
    label = 'nst_jax ' + ttq_label(q, name)
    if 'error' in r:
      rows.append([label, f'error: {r["error"][:100]}'] + [''] * 7)
      continue
    coarse = (f' (+{r["coarse_evaluations"]} at {r["coarse_size"]} px)'
              if 'coarse_size' in r else '')
    evaluations = r['evaluations'] + r.get('coarse_evaluations', 0)
    rows.append([
        label, 'yes' if r['reached'] else 'no', f'{r["evaluations"]}{coarse}',
        r['steps'], f'{r["optimize_s"]:.1f} s',
        f'{1000 * r["optimize_s"] / evaluations:.0f} ms',
        f'{r["compile_s"]:.1f} s', f'{r["optimize_s"] / t["seconds"]:.2f} / '
        f'{r["optimize_incl_compile_s"] / t["seconds"]:.2f}',
        _num(r.get('other_processes_cores'), 2)])
  _table(f'Time to quality at {q["size"]} px from the content image: nst_jax '
         f'with stop_loss = the loss torch.optim.LBFGS (history '
         f'{t["history_size"]}, lr 1, no line search) reaches in '
         f'{t["evaluations"]} evaluations, {t["final_loss"]:.6g}:',
         ['run', 'reached', 'evaluations', 'steps', 'optimise',
          'per evaluation', '+ compile', 'vs PyTorch (excl. / incl. compile)',
          'other load'], rows)


def print_startup(rows):
  """Launch to the first step of `python -m nst_jax.main`."""
  _table('Start-up: `python -m nst_jax.main` at 128 px, launch to first '
         'step; run 1 fills a new cache folder, the others read it:',
         ['run', 'convolutions', 'launch → first step', 'of which in run()',
          'waiting for init and chunk programs', 'programs loaded / traced'],
         [[row['run'], f'error: {row["error"][:100]}', '', '', '', '']
          if 'error' in row else
          [row['run'], row['conv_algorithm'],
           f'{row["launch_to_loop_s"]:.2f} s', f'{row["run_to_loop_s"]:.2f} s',
           f'{row["compile_s"]:.2f} s',
           f'{row["programs"]["loaded"]} / {row["programs"]["traced"]}']
          for row in rows])


def print_layers(results):
  """Each convolution layer alone, per algorithm."""
  ms = lambda seconds: _num(seconds and 1000 * seconds, 2, ' ms')
  for result in results:
    _table(f'Per layer at {result["size"]} px (forward + input gradient):',
           ['layer', 'map', 'channels', 'direct', 'F(2x2)', 'F(4x4)',
            'picked'],
           [[row['layer'], row['side'],
             f'{row["channels"][0]} → {row["channels"][1]}',
             ms(row.get('direct_s')), ms(row.get('F2_s')),
             ms(row.get('F4_s')), row['picked']]
            for row in result['layers']])


def print_memory(memory):
  """Peak memory of one evaluation per size and device count."""
  rows = []
  for row in memory['rows']:
    xla, split = row['child'].get('xla', {}), row['row_shards'] > 1
    rows.append([
        row['size'], row['row_shards'],
        '-' if split else _num(row.get('peak_rss_minus_baseline_mib')),
        '-' if split else memory_rise(row),
        _mib(xla.get('temp_size_in_bytes')),
        _mib(xla.get('temp_plus_argument_plus_output_bytes'))])
  _table('Peak memory of one evaluation (a fresh process per row, or this '
         'one with --single-process; XLA counts per device; split rows by '
         'XLA only):',
         ['size', 'devices (rows split)', 'peak RSS − baseline MiB',
          'rise during the evaluation', 'XLA temp MiB per device',
          'XLA temp+args MiB per device'], rows)


def print_report(report):
  """Every table of a report (scripts/benchmark.py's or
  scripts/time_to_quality.py's)."""
  if report.get('sizes'):
    print_evaluations(report)
    print_steps(report['sizes'])
    print_compile(report['sizes'])
  for key, printer in (('layers', print_layers), ('startup', print_startup),
                       ('memory_by_size', print_memory),
                       ('sweep_64px_4_members', print_sweep),
                       ('time_to_quality', print_time_to_quality)):
    if key in report:
      printer(report[key])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('reports', nargs='+', help='JSON reports')
  print_report(merged_reports(parser.parse_args(argv).reports))


if __name__ == '__main__':
  main()
