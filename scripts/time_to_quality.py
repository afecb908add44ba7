"""Time to quality: nst_jax's optimisers to torch.optim.LBFGS's loss.

  python scripts/time_to_quality.py --panel=held_out --out=out/ttq_held_out.json
  python scripts/time_to_quality.py --panel=tuned --problems=0,2 \\
      --optimizer='optimizer=lbfgs_nols,lbfgs_pyramid=3;optimizer=lbfgs'
  python scripts/bench_tables.py out/ttq_held_out.json out/ttq_tuned.json

Per problem of the panel (`bench_problems.PANEL`: seeded colour blobs at
128 and 256 px, two normalisations, two weight layouts; --panel picks the
tuned or held-out set, --problems some by name or seed; --panel=demo: the
demo images at --size, the paper's loss), torch.optim.LBFGS runs
--evaluations evaluations (scripts/torch_reference.py), then each nst_jax
optimiser (--optimizer: config fields, e.g.
'optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8', repeated or separated
by ';'; 'coarse_to_fine=1,coarse_iterations=100' first runs that many
steps at half size) runs the library's compiled loop from the same image
until its loss is at most torch's, at most 3 x --evaluations steps, all
in one fresh process per problem. Per-evaluation times per size are
measured back to back first. docs/performance.md defines each figure.
Writes JSON (--out, after each problem) and prints Markdown tables
(scripts/bench_tables.py). Needs torch.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

# This checkout's package and scripts, whatever else is installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from nst_jax.core import optimizers as optimizers_lib
from nst_jax.io import images
from nst_jax.engine import problem as problem_lib, programs as programs_lib
from scripts import bench_problems, bench_tables, child_processes
from scripts.bench_problems import PANEL, panel_fields
# pylint: enable=g-import-not-at-top,wrong-import-position

# The default (lbfgs with the config's pyramid levels and first step), the
# same without line search, and torch's algorithm.
TTQ_OPTIMIZERS = (
    {'optimizer': 'lbfgs', 'lbfgs_pyramid': optimizers_lib.LBFGS_PYRAMID,
     'lbfgs_first_step': optimizers_lib.LBFGS_FIRST_STEP},
    {'optimizer': 'lbfgs_nols',
     'lbfgs_pyramid': optimizers_lib.LBFGS_PYRAMID},
    {'optimizer': 'lbfgs'})
build = bench_problems.build


run_child = functools.partial(bench_problems.run_child, __file__)
run_here = child_processes.run_here


# ---------------------------------------------------------------------------
# nst_jax's runs.

def ttq_child(optimizers, stop_loss, max_steps, chunk_size, size=None,
              problem=None, cache_dir=None):
  """Each optimiser of `optimizers` (config fields) in turn, from the
  content image until the loss is at most `stop_loss`, of a panel
  `problem`, or of the demo's at `size`: {'start_loss', optimiser key:
  its run (or {'error'})}."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  place = panel_fields(problem) if problem else {}
  make = lambda side, fields=None: build(side, optimizer=fields, **place)
  size = problem['size'] if problem else size
  base = make(size)
  results = {'start_loss': float(base.loss_and_grad(base.start)[0])}
  del base
  for fields in optimizers:
    try:
      results[bench_problems.optimizer_key(fields)] = _ttq_run(
          fields, make, size, stop_loss, max_steps, chunk_size)
    except Exception as e:  # pylint: disable=broad-except
      results[bench_problems.optimizer_key(fields)] = {
          'error': f'{type(e).__name__}: {e}'[:1500]}
  return results


def _ttq_run(fields, make, size, stop_loss, max_steps, chunk_size):
  """One optimiser's run; with `coarse_to_fine`, `coarse_iterations` steps
  (no stop_loss) on the problem at half size first, then on from its
  result upsampled."""
  problem = make(size, fields)
  small = make(size // 2, fields) if fields.get('coarse_to_fine') else None
  jax.block_until_ready((problem.loss_arguments,
                         small and small.loss_arguments))
  start = time.perf_counter()
  result, pixels, compile_s, optimize_s = {}, None, 0.0, 0.0
  if small:
    coarse = problem_lib.minimize(
        small, iterations=fields.get('coarse_iterations', 100),
        chunk_size=chunk_size)
    result.update(coarse_size=size // 2,
                  coarse_evaluations=coarse.evaluations)
    pixels = images.resize(coarse.pixels, (size, size))
    compile_s, optimize_s = coarse.compile_s, coarse.optimize_s
  done = problem_lib.minimize(problem, iterations=max_steps,
                              chunk_size=chunk_size, stop_loss=stop_loss,
                              start=pixels)
  end = time.perf_counter()
  return dict(result, reached=done.stop_reason == 'stop_loss',
              stop_reason=done.stop_reason, evaluations=done.evaluations,
              steps=done.steps, final_loss=done.loss, curve=done.curve,
              compile_s=compile_s + done.compile_s,
              optimize_s=optimize_s + done.optimize_s,
              optimize_incl_compile_s=end - start)


def loop_evaluation_child(size, chunk_size=10, chunks=3, cache_dir=None):
  """Seconds per evaluation of lbfgs_nols's compiled loop (one evaluation
  per step, the 100-pair history's products included) at `size` px: the
  median of `chunks` chunks after a warm-up one, over their steps."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  problem = build(size, optimizer={'optimizer': 'lbfgs_nols'},
                  **panel_fields(PANEL[0]))
  clock = bench_problems.ChunkClock()
  problem_lib.minimize(problem, iterations=(chunks + 1) * chunk_size,
                       chunk_size=chunk_size, on_chunk=clock)
  times = [seconds / chunk_size for seconds, _, _ in clock.chunks[1:]]
  return {'evaluation_s': float(np.median(times)), 'times_s': times}


# ---------------------------------------------------------------------------
# The studies.

def time_to_quality(size, evaluations, threads, chunk_size, optimizers,
                    single=False):
  """The demo's problem: torch.optim.LBFGS for `evaluations` evaluations,
  then each nst_jax run until it reaches torch's final loss; each in a
  fresh process (`single`: the nst_jax runs in this one)."""
  torch_run = run_child(bench_problems.torch_child, study='lbfgs', size=size,
                        threads=threads, evaluations=evaluations)
  if 'error' in torch_run:
    return torch_run
  runs = {}
  for fields in optimizers:
    key = bench_problems.optimizer_key(fields)
    child = (run_here if single else run_child)(
        ttq_child, optimizers=[fields], size=size,
        stop_loss=torch_run['final_loss'], max_steps=3 * evaluations,
        chunk_size=chunk_size)
    runs[key] = child if 'error' in child else dict(
        child[key], other_processes_cores=child.get('other_processes_cores'))
  return {'size': size, 'torch': torch_run, 'jax': runs,
          'labels': labels(optimizers)}


def per_evaluation(sizes, threads, cache_dir, single=False):
  """Per size, back to back: PyTorch's evaluation, the nst_jax loop's, and
  PyTorch's again; the ratio of nst_jax's to the mean of PyTorch's. Sizes
  without PyTorch (a coarse level's) time nst_jax only."""
  out = {}
  for size, with_torch in sizes:
    torch_s, row = [], {}
    for turn in (['torch', 'jax', 'torch'] if with_torch else ['jax']):
      if turn == 'torch':
        r = run_child(bench_problems.torch_child, study='evaluation',
                      size=size, threads=threads, repeats=7)
        torch_s.append(r.get('evaluation_s'))
        row.setdefault('torch', []).append(r)
      else:
        r = row['jax'] = (run_here if single else run_child)(
            loop_evaluation_child, size=size, cache_dir=cache_dir)
    row['jax_s'] = row['jax'].get('evaluation_s')
    if torch_s and None not in torch_s:
      row['torch_s'] = float(np.mean(torch_s))
      if row['jax_s']:
        row['jax_over_torch'] = row['jax_s'] / row['torch_s']
    out[str(size)] = row
  return out


def labels(optimizers) -> dict:
  """{optimiser key: its label} for the tables."""
  return {bench_problems.optimizer_key(fields):
          bench_problems.optimizer_label(fields) for fields in optimizers}


def time_to_quality_panel(problems, evaluations, threads, chunk_size,
                          optimizers, single=False, checkpoint=lambda q: None,
                          per_evaluation_from=None, torch_rows=None):
  """Per problem: torch.optim.LBFGS for `evaluations` evaluations (and 7
  single evaluations timed after it), then each of `optimizers` in one
  fresh process until its loss is at most torch's final one, at most 3 x
  `evaluations` steps. Per-evaluation times per size are measured back to
  back first (or taken from `per_evaluation_from`, an earlier panel's).
  `torch_rows`: {`problem_key`: torch's run} from an earlier panel, reused
  (torch's 300 evaluations do not depend on nst_jax). `checkpoint(q)`
  after each problem (partial results)."""
  cache = tempfile.mkdtemp(prefix='nst_jax_ttq_cache_')
  names = [bench_problems.optimizer_key(fields) for fields in optimizers]
  q = {'panel': True, 'evaluations': evaluations, 'optimizers': names,
       'labels': labels(optimizers), 'rows': []}
  try:
    sizes = sorted({p['size'] for p in problems})
    coarse = sorted({s // 2 for s in sizes} - set(sizes)) if any(
        fields.get('coarse_to_fine') for fields in optimizers) else []
    q['per_evaluation'] = per_evaluation_from or per_evaluation(
        [(s, True) for s in sizes] + [(s, False) for s in coarse], threads,
        cache, single)
    checkpoint(q)
    for problem in problems:
      row = {'problem': problem}
      q['rows'].append(row)
      t = (torch_rows or {}).get(bench_problems.problem_key(problem))
      if t:  # timed in another run: no time ratio (count ratios only)
        row['torch_reused'] = True
      row['torch'] = t = t or run_child(
          bench_problems.torch_child, study='lbfgs', size=problem['size'],
          threads=threads, evaluations=evaluations, repeats=7,
          problem=problem)
      if 'error' not in t:
        row['jax'] = r = (run_here if single else run_child)(
            ttq_child, optimizers=list(optimizers),
            stop_loss=t['final_loss'], max_steps=3 * evaluations,
            chunk_size=chunk_size, problem=problem, cache_dir=cache)
        if 'start_loss' in r:
          row['start_loss_rel_diff_vs_torch'] = abs(
              r['start_loss'] / t['start_loss'] - 1)
      q['summary'] = bench_tables.panel_summary(q['rows'],
                                                q['per_evaluation'], names)
      checkpoint(q)
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return q


def per_evaluation_from(path):
  """The per-evaluation times of an earlier panel's report (None: none)."""
  if not path:
    return None
  with open(path) as f:
    return json.load(f)['time_to_quality']['per_evaluation']


def torch_rows_from(paths, evaluations):
  """{`problem_key`: torch's run} from earlier panels' JSON files."""
  rows = {}
  for path in (p for p in paths.split(',') if p.strip()):
    with open(path) as f:
      q = json.load(f).get('time_to_quality', {})
    for row in q.get('rows', []):
      if (q.get('evaluations') == evaluations and 'torch' in row
          and 'error' not in row['torch']):
        rows.setdefault(bench_problems.problem_key(row['problem']),
                        row['torch'])
  return rows


# ---------------------------------------------------------------------------
# Command line.

CHILDREN = (ttq_child, loop_evaluation_child, bench_problems.torch_child)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[1:]))
  add = parser.add_argument
  add('--panel', default='all', choices=('all', 'tuned', 'held_out', 'demo'),
      help="the problems: the tuned set's 20 (seeds 0-7, 100-103, 200-207), "
           "the held-out set's 8 (seeds 300-307), both, or the demo images "
           'at --size (one problem, paper loss)')
  add('--problems', default='',
      help='comma-separated panel problem names (e.g. t0-128-pap-caffe) or '
           'seeds to run only those')
  add('--optimizer', action='append',
      help="an nst_jax optimiser's config fields, e.g. 'optimizer=lbfgs,"
           "lbfgs_pyramid=2,lbfgs_first_step=8' (fields: "
           + ', '.join(bench_problems.TTQ_FIELDS) + '; unset: torch\'s '
           "algorithm; coarse_to_fine=1: coarse_iterations steps at half "
           "size first); repeated or separated by ';' (default: lbfgs with "
           "the config's pyramid and first step, lbfgs_nols with the "
           "pyramid, lbfgs)")
  add('--size', type=int, default=128, help='--panel=demo: its size')
  add('--evaluations', type=int, default=300,
      help="torch.optim.LBFGS's evaluations; nst_jax takes at most 3 x")
  add('--chunk', type=int, default=10,
      help='steps per compiled chunk, between which the loss is read')
  add('--per-evaluation-from', default='',
      help="a panel's JSON whose per-evaluation times to reuse (running "
           'part of the panel beside another)')
  add('--torch-from', default='',
      help='panel JSON files (comma-separated) whose torch runs to reuse '
           'for the same problems and --evaluations')
  add('--torch-threads', type=int, default=bench_problems.default_threads(),
      help='torch.set_num_threads (default: the cores XLA uses)')
  add('--single-process', action='store_true',
      help='the nst_jax runs in this process (automatic on an accelerator)')
  add('--out', default=os.path.join('out', 'time_to_quality.json'))
  add('--child', default='', help=argparse.SUPPRESS)  # [name, kwargs]
  args = parser.parse_args(argv)
  try:
    args.optimizers = (
        list(TTQ_OPTIMIZERS) if args.optimizer is None else
        bench_problems.parse_optimizers(args.optimizer,
                                        bench_problems.TTQ_FIELDS))
  except ValueError as error:
    parser.error(f'--optimizer: {error}')
  if any(fields.get('coarse_to_fine', 0) > 1 for fields in args.optimizers):
    parser.error('--optimizer: coarse_to_fine is 0 or 1 (one level at half '
                 'size)')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    child_processes.serve(args.child, CHILDREN)
    return
  if importlib.util.find_spec('torch') is None:
    sys.exit("time to quality needs torch (pip install '.[bench]')")
  args.single_process |= jax.devices()[0].platform != 'cpu'
  started = time.perf_counter()
  report = {'machine': bench_problems.machine(True),
            'learning_rates': bench_problems.LEARNING_RATES,
            'single_process': args.single_process,
            'torch_threads': args.torch_threads,
            'load_average_start': os.getloadavg()}
  if args.panel == 'demo':
    report['time_to_quality'] = time_to_quality(
        args.size, args.evaluations, args.torch_threads, args.chunk,
        args.optimizers, args.single_process)
  else:
    def checkpoint(q):
      report['time_to_quality'] = q
      bench_problems.write_report(report, args.out)
    report['time_to_quality'] = time_to_quality_panel(
        bench_problems.panel_problems(args.panel, args.problems),
        args.evaluations, args.torch_threads, args.chunk, args.optimizers,
        args.single_process, checkpoint,
        per_evaluation_from(args.per_evaluation_from),
        torch_rows_from(args.torch_from, args.evaluations))
  bench_problems.finish_report(report, started, args.out)


if __name__ == '__main__':
  main()
