#!/usr/bin/env python3
"""Row strips: peak memory and time per evaluation, whole and in strips.

  python scripts/strips_study.py                    # 1024, 2048, 4096 px
  python scripts/strips_study.py --sizes=1024 --iterations=3
  python scripts/strips_study.py --skip-runs --ratio-sizes=2048 --rounds=5
  python scripts/strips_study.py --table-from=out/strips_study.json

Each configuration is one `nst_jax.stylize` run in a fresh process: a 4:3
content (the built-in scene stretched to 4:3) with `image_size` its longest
side, the built-in painting as the style at full size (style_scale 1, so a
square of image_size), seeded random weights, `adam` for `--iterations`
steps from the content, the default convolutions (`conv_algorithm='auto'`),
no compilation cache. Per configuration: the process's peak RSS (VmHWM, all
of it: compiling, the targets, the loop), the same less a process that only
imported nst_jax and started jax, XLA's temporary buffers of the compiled
chunk, the memory estimate, the strips `memory.fit` chose, and the time per
evaluation in the loop (`manifest['timing']['per_evaluation_ms']`).

Configurations per size: the whole image (`row_strips=1`; refused where
the estimate says it does not fit); the strips chosen automatically for a
device of `LIMITS_GB[size]` GiB (`row_strips=0`, `max_memory_gb`), less
than the whole image needs; and where the whole image does not fit this
machine, the default (`row_strips=0`): the strips chosen for its memory.

Times per evaluation taken from runs a few steps long, one after another,
move with the machine's load. So, first, at `--ratio-sizes` (1024 and
2048): one process compiles the evaluation (loss and gradient, as a run
compiles it) of the whole image and of strips (`RATIO_CHOICES`), and times
them in turns for `--rounds` rounds after a warm-up; the ratio is the
median over rounds of strips / whole within a round. And, without running,
what `memory.fit` chooses for the default `lbfgs` (and `adam`) at 4096 px
against 16 GB and 24 GB devices.

Writes JSON (--out) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import time

# This checkout's package, whatever else is installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from scripts import child_processes  # pylint: disable=g-import-not-at-top,wrong-import-position

# Strips are automatic for a device of this many GiB: less than the whole
# image needs by the estimate (4:3 content, adam).
LIMITS_GB = {1024: 1.0, 2048: 3.0, 4096: 10.0}


def status_kib(field='VmHWM') -> int:
  """A field of /proc/self/status (VmHWM: this process's peak RSS)."""
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f
                if line.startswith(field + ':'))


def content_image(size: int):
  """The built-in scene stretched to 4:3, `size` wide."""
  from nst_jax.io import images, scenes  # pylint: disable=g-import-not-at-top
  return images.to_uint8(images.resize(scenes.demo_content(size),
                                       (size * 3 // 4, size)))


def child_run(size: int, iterations: int, fields: dict) -> dict:
  """One adam run (in a fresh process): peak RSS, timing, what fit chose."""
  import nst_jax  # pylint: disable=g-import-not-at-top
  from nst_jax.engine import programs as programs_lib  # pylint: disable=g-import-not-at-top
  content = content_image(size)
  programs = programs_lib.Programs()
  start = time.perf_counter()
  result = nst_jax.stylize(
      content, 'builtin:painting', image_size=size, weights='random',
      optimizer='adam', iterations=iterations, log_every=iterations,
      init='content', compilation_cache='', programs=programs, **fields)
  manifest = result.manifest
  chunk = programs.executables('chunk')[0].memory_analysis()
  device = manifest['device']
  return {'peak_rss_kib': status_kib(), 'wall_s': time.perf_counter() - start,
          'per_evaluation_ms': manifest['timing']['per_evaluation_ms'],
          'compile_s': manifest['timing']['compile_s'],
          'evaluations': manifest['evaluations'],
          'final_loss': manifest['final']['total'],
          'content': manifest['image_size']['content'],
          'styles': manifest['image_size']['styles'],
          'row_strips': device['row_strips'],
          'strip_split': device['strip_split'],
          'conv_algorithm': device['conv_algorithm'],
          'estimate_gib': device['memory_estimate_gib'],
          'xla_temp_gib': chunk.temp_size_in_bytes / 2**30,
          'xla_arguments_gib': chunk.argument_size_in_bytes / 2**30}


def child_baseline() -> dict:
  """Peak RSS of a process that imported nst_jax and started jax."""
  import jax  # pylint: disable=g-import-not-at-top
  import nst_jax  # pylint: disable=g-import-not-at-top,unused-import
  jax.block_until_ready(jax.numpy.zeros(()))
  return {'peak_rss_kib': status_kib()}


def child_ratio(size: int, choices: list, rounds: int) -> dict:
  """Evaluations (loss and gradient) of the whole image and of each
  (strips, split) of `choices`, compiled as a run compiles them and timed
  in turns, round after round, so that a load that drifts affects all
  alike: each one's median time and its median ratio to the whole
  image's within a round."""
  import jax  # pylint: disable=g-import-not-at-top
  from nst_jax import weights
  from nst_jax.engine import prepare
  from nst_jax.io import scenes
  from nst_jax.core import descent, losses, strips, vgg  # pylint: disable=g-import-not-at-top
  from nst_jax.engine import programs as programs_lib  # pylint: disable=g-import-not-at-top
  content = content_image(size).astype('float32')
  style = scenes.demo_style(size)
  height, width = content.shape[:2]
  conv_algorithm = prepare.conv_algorithm_for(
      'auto', jax.devices()[0].platform, 'float32')
  whole = losses.LossSpec(conv_algorithm=conv_algorithm)
  params, _ = weights.random_weights(0)
  variables = vgg.prepare_variables(
      params, [(height, width)] if conv_algorithm == 'winograd' else [],
      whole.layers)
  targets = programs_lib.Programs().targets(variables, content, [style],
                                            [1.0], whole)
  problem = descent.Problem(variables, targets, losses.loss_weights(whole))
  specs = {'whole': whole}
  for count, split in choices:
    specs[f'{count}:{split}'] = dataclasses.replace(
        whole, row_strips=count, strip_split=split)
  options = programs_lib.compiler_options(jax.devices()[0].platform)
  compiled = {name: descent.loss_and_grad_jit.lower(
      content, problem, spec).compile(options)
              for name, spec in specs.items()}
  times = {name: [] for name in specs}
  for round_ in range(rounds + 1):  # the first round warms up
    for name, evaluate in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(evaluate(content, problem))
      if round_:
        times[name].append(time.perf_counter() - start)
  median = lambda xs: sorted(xs)[len(xs) // 2]
  result = {'content': [width, height], 'conv_algorithm': conv_algorithm,
            'rows': []}
  for name, spec in specs.items():
    row = {'name': name, 'median_s': median(times[name]),
           'times_s': times[name],
           'ratio': median([t / w for t, w in zip(times[name],
                                                  times['whole'])])}
    if spec.row_strips > 1:
      plan = strips.make_plan(height, spec.row_strips, spec.strip_split,
                              spec.layers)
      row['modelled_ratio'] = strips.relative_cost(plan, width, spec.layers)
    result['rows'].append(row)
  return result


CHILDREN = {'run': child_run, 'baseline': child_baseline,
            'ratio': child_ratio}

# (strips, split) timed against the whole image by `child_ratio`.
RATIO_CHOICES = [[4, 'pool1'], [4, 'pool2'], [4, 'pool3'], [2, 'pool2']]


def in_child(name: str, **kwargs) -> dict:
  """CHILDREN[name](**kwargs) in a fresh process: its result, or {'error'}
  (e.g. killed for lack of memory), with 'other_processes_cores': the
  cores other processes kept busy meanwhile (0: the machine was ours)."""
  return child_processes.run(__file__, name, kwargs, REPO)


def device_gb(size: int) -> float:
  """The device of the automatic strips: `LIMITS_GB`, or for other sizes
  half of what the whole image needs by the estimate."""
  if size in LIMITS_GB:
    return LIMITS_GB[size]
  from nst_jax.core import losses
  from nst_jax.engine import memory  # pylint: disable=g-import-not-at-top
  return round(memory.estimate_bytes(size * 3 // 4, size, losses.LossSpec(),
                                     'adam') / 2 / 2**30, 3)


def whole_fits_here(size: int) -> bool:
  """Whether the whole image fits this machine by the estimate (as a run
  with the default convolutions here counts it)."""
  import jax  # pylint: disable=g-import-not-at-top
  from nst_jax.core import losses
  from nst_jax.engine import memory, prepare  # pylint: disable=g-import-not-at-top
  platform = jax.devices()[0].platform
  use_winograd = prepare.conv_algorithm_for('auto', platform,
                                            'float32') == 'winograd'
  return memory.estimate_bytes(
      size * 3 // 4, size, losses.LossSpec(), 'adam',
      use_winograd=use_winograd,
      donated=memory.loop_state_donated()) <= memory.available_bytes()


def configurations(sizes) -> list:
  """(size, label, fields) of every run."""
  runs = []
  for size in sizes:
    limit = device_gb(size)
    runs.append((size, 'whole', {'row_strips': 1}))
    runs.append((size, f'auto, {limit:g} GiB device',
                 {'row_strips': 0, 'max_memory_gb': limit}))
    if not whole_fits_here(size):  # what a run here does by default
      runs.append((size, 'auto, this machine', {'row_strips': 0}))
  return runs


def lbfgs_fits() -> list:
  """What `memory.fit` chooses for the default lbfgs (and adam) at 4096 px
  (4096 x 3072) on devices of 16 and 24 GB, without running."""
  from nst_jax.engine import config_files, memory, settings as settings_lib  # pylint: disable=g-import-not-at-top
  rows = []
  for optimizer, gigabytes in (('lbfgs', 16), ('lbfgs', 24), ('adam', 16)):
    config = config_files.make_config(None, {'optimizer': optimizer,
                                    'max_memory_gb': gigabytes * 1e9 / 2**30,
                                    'image_size': 4096})
    config.content, config.style = 'content', 'style'
    settings = settings_lib.check(config, from_files=False)
    whole = memory.estimate_bytes(3072, 4096, settings.spec, optimizer,
                                  lbfgs_memory=settings.lbfgs_memory,
                                  use_winograd=False)
    row = {'optimizer': optimizer, 'device_gb': gigabytes,
           'whole_estimate_gib': whole / 2**30}
    try:
      # An accelerator's: the loop's state donated (not on CPU).
      fit = memory.fit(settings, 3072, 4096, use_winograd=False,
                       donated=True)
      row.update(row_strips=fit.row_strips, strip_split=fit.strip_split,
                 lbfgs_memory=fit.lbfgs_memory,
                 estimate_gib=fit.needed / 2**30,
                 limit_gib=fit.limit / 2**30, warnings=list(fit.warnings))
    except Exception as error:  # pylint: disable=broad-except
      row['error'] = str(error)
    rows.append(row)
  return rows


def tables(results: dict) -> str:
  """The Markdown tables of `results`."""
  baseline = results['baseline_kib']
  lines = [
      '| size (content; style) | strips | split | peak RSS | peak RSS − '
      'baseline | XLA temp (chunk) | estimate | time per evaluation | '
      'vs whole | other processes |',
      '|---|---|---|---|---|---|---|---|---|---|']
  whole_ms = {}
  for row in results['runs']:
    if row.get('label') == 'whole' and 'error' not in row:
      whole_ms[row['size']] = row['per_evaluation_ms']
  for row in results['runs']:
    size = row['size']
    if 'error' in row:
      refused = re.search(r'needs about ([0-9.]+ GiB)', row['error'])
      if refused:  # the memory estimate's one-line refusal
        lines.append(f'| {size}x{size * 3 // 4} | {row["label"]} | - | '
                     f'refused: needs about {refused.group(1)} | - | - | '
                     f'{refused.group(1)} | - | - | - |')
      else:
        lines.append(f'| {size} | {row["label"]} | - | failed: '
                     f'{row["error"][:80]} | - | - | - | - | - | - |')
      continue
    width, height = row['content']
    style = 'x'.join(map(str, next(iter(row['styles'].values()))))
    ratio = (f'{row["per_evaluation_ms"] / whole_ms[size]:.2f}'
             if size in whole_ms else '-')
    strips = ('1 (whole)' if row['row_strips'] == 1
              else f'{row["row_strips"]} ({row["label"]})')
    lines.append(
        f'| {width}x{height}; {style} | {strips} | '
        f'{row["strip_split"] or "-"} | '
        f'{row["peak_rss_kib"] / 2**20:.2f} GiB | '
        f'{(row["peak_rss_kib"] - baseline) / 2**20:.2f} GiB | '
        f'{row["xla_temp_gib"]:.2f} GiB | {row["estimate_gib"]:.2f} GiB | '
        f'{row["per_evaluation_ms"] / 1000:.2f} s | {ratio} | '
        f'{row["other_processes_cores"]:.2f} cores |')
  lines += ['', '| optimizer | device | whole image, estimate | strips | '
            'split | L-BFGS pairs | estimate |', '|---|---|---|---|---|---|---|']
  for row in results['fits']:
    if 'error' in row:
      lines.append(f'| {row["optimizer"]} | {row["device_gb"]} GB | '
                   f'{row["whole_estimate_gib"]:.1f} GiB | refused: '
                   f'{row["error"][:60]} | - | - | - |')
      continue
    lines.append(
        f'| {row["optimizer"]} | {row["device_gb"]} GB | '
        f'{row["whole_estimate_gib"]:.1f} GiB | {row["row_strips"]} | '
        f'{row["strip_split"] if row["row_strips"] > 1 else "-"} | '
        f'{row["lbfgs_memory"] if row["optimizer"] != "adam" else "-"} | '
        f'{row["estimate_gib"]:.1f} GiB |')
  if results.get('ratios'):
    lines += ['', '| size | strips | split | time per evaluation (median) | '
              'strips / whole (median of rounds) | modelled | '
              'other processes |', '|---|---|---|---|---|---|---|']
    for entry in results['ratios']:
      if 'error' in entry:
        lines.append(f'| {entry["size"]} | failed: {entry["error"][:80]} '
                     '| - | - | - | - | - |')
        continue
      width, height = entry['content']
      for row in entry['rows']:
        count, _, split = row['name'].partition(':')
        lines.append(
            f'| {width}x{height} | {"1 (whole)" if not split else count} | '
            f'{split or "-"} | {row["median_s"]:.2f} s | '
            f'{row["ratio"]:.2f} | '
            f'{row.get("modelled_ratio", 1.0):.2f} | '
            f'{entry["other_processes_cores"]:.2f} cores |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='1024,2048,4096')
  parser.add_argument('--iterations', type=int, default=3,
                      help='adam steps per run (each one evaluation)')
  parser.add_argument('--ratio-sizes', default='1024,2048',
                      help='sizes whose evaluations are timed in turns, '
                      'whole and in strips (RATIO_CHOICES)')
  parser.add_argument('--rounds', type=int, default=3,
                      help='rounds of those timings')
  parser.add_argument('--skip-runs', action='store_true',
                      help='only the timings in turns and the estimates')
  parser.add_argument('--out', default='out/strips_study.json')
  parser.add_argument('--table-from', default='',
                      help='print the tables of an earlier --out file')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    name, kwargs = json.loads(args.child)
    print(json.dumps(CHILDREN[name](**kwargs)))
    return
  if args.table_from:
    with open(args.table_from) as f:
      print(tables(json.load(f)))
    return
  import jax  # pylint: disable=g-import-not-at-top
  results = {'machine': {'cpu': platform.processor() or platform.machine(),
                         'cores': os.cpu_count(), 'jax': jax.__version__},
             'iterations': args.iterations,
             'baseline_kib': in_child('baseline')['peak_rss_kib'],
             'fits': lbfgs_fits(), 'runs': [], 'ratios': []}
  sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  ratio_sizes = [int(s) for s in args.ratio_sizes.split(',') if s.strip()]

  def save():
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)
  for size in ratio_sizes:
    entry = dict(in_child('ratio', size=size, choices=RATIO_CHOICES,
                          rounds=args.rounds), size=size)
    results['ratios'].append(entry)
    print(json.dumps({k: v for k, v in entry.items() if k != 'stderr'}),
          file=sys.stderr, flush=True)
    save()
  for size, label, fields in configurations([] if args.skip_runs
                                            else sizes):
    row = dict(in_child('run', size=size, iterations=args.iterations,
                        fields=fields), size=size, label=label,
               fields=fields)
    results['runs'].append(row)
    print(json.dumps({k: v for k, v in row.items() if k != 'stderr'}),
          file=sys.stderr, flush=True)
    save()
  print(tables(results))


if __name__ == '__main__':
  main()
