"""Benchmark nst_jax against a plain PyTorch implementation of the same loss.

  python scripts/benchmark.py                          # 128, 256, 512 px
  python scripts/benchmark.py --sizes=1024 --optimizer=lbfgs_nols --no-torch
  python scripts/bench_tables.py out/benchmark.json    # the tables again

The problem is Gatys et al.'s loss in the paper's normalisation (VGG19 to
conv5_1, alpha 1, beta 1e3) of the built-in demo images with seeded random
weights, built by the library as a run builds it (scripts/bench_problems.py).
Per size: one evaluation (loss + pixel gradient) in JAX and in PyTorch
(scripts/torch_reference.py), optimiser steps (the library's compiled loop)
as ratios to evaluations, compiling and memory; more with --sweep,
--startup, --layer-sizes, --memory-sizes. An optimiser is a set of config
fields: --optimizer='optimizer=lbfgs,lbfgs_pyramid=2', repeated or
separated by ';' (default: each optimiser, L-BFGS as torch's algorithm).
The time to reach PyTorch's loss is scripts/time_to_quality.py's.
docs/performance.md defines each figure. Writes JSON (--out) and prints
Markdown tables (scripts/bench_tables.py).

On a GPU or TPU (or with --single-process) only this process opens the
device: it times compiling itself (cached: after jax.clear_caches()), memory
is jax.Device.memory_stats()'s peak during one evaluation less the bytes in
use before it (GPU preallocation leaves both as they are; docs/devices.md),
PyTorch runs on the CPU (JAX_PLATFORMS=cpu), --startup is skipped, and
--dtype=both is the default.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

_PROCESS_START = time.perf_counter()

# This checkout's package and scripts, whatever else is installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np

from nst_jax.core import descent, optimizers as optimizers_lib, vgg, winograd
from nst_jax.io import images, scenes
from nst_jax.engine import devices, problem as problem_lib
from nst_jax.engine import programs as programs_lib
from scripts import bench_problems, child_processes
from scripts.bench_problems import (LEARNING_RATES, WEIGHTS_SEED,
                                    default_threads, median_time, timed)
# pylint: enable=g-import-not-at-top,wrong-import-position

_IMPORTED = time.perf_counter()

FLOPS_PER_PIXEL = 4 * vgg.MACS_PER_PIXEL['conv5_1']
FLOPS_FORMULA = (f"4 * MACS_PER_PIXEL['conv5_1'] * H * W = 4 * "
                 f"{vgg.MACS_PER_PIXEL['conv5_1']:,} * H * W")
# The steps study's optimisers unless --optimizer says: each, with L-BFGS
# as torch's algorithm (`bench_problems.BASE_FIELDS`).
DEFAULT_OPTIMIZERS = tuple({'optimizer': name}
                           for name in optimizers_lib.OPTIMIZERS)
build = bench_problems.build


def xla_options():
  """The compiler options the library's programs use here."""
  return programs_lib.compiler_options(jax.default_backend())


def compile_evaluation(problem, options=None, pixels=None, arguments=None):
  """`descent.loss_and_grad_jit` for `problem` (at `pixels` and
  `arguments`, default its start and its own, placed as they are),
  compiled with the library's compiler options (or `options`)."""
  return descent.loss_and_grad_jit.lower(
      problem.start if pixels is None else pixels,
      problem.loss_arguments if arguments is None else arguments,
      problem.spec).compile(xla_options() if options is None else options)


def memory_fields(compiled):
  """XLA's byte counts of a compiled program."""
  m = compiled.memory_analysis()
  fields = {k: int(getattr(m, k)) for k in (
      'temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
      'alias_size_in_bytes', 'generated_code_size_in_bytes')}
  fields['temp_plus_argument_plus_output_bytes'] = (
      fields['temp_size_in_bytes'] + fields['argument_size_in_bytes']
      + fields['output_size_in_bytes'])
  return fields


run_child = functools.partial(bench_problems.run_child, __file__)
run_here = child_processes.run_here


# ---------------------------------------------------------------------------
# Per size: evaluation, steps, compiling, PyTorch, memory.

def bench_evaluation(problem, size, repeats):
  """One evaluation: time, FLOP/s, XLA's FLOP and byte counts; also with
  direct convolutions and with XLA's default options."""
  pixels, arguments = jax.device_put(problem.start), problem.loss_arguments
  row = {'size': size, 'dtype': problem.spec.dtype,
         'conv_algorithm': problem.spec.conv_algorithm,
         'flops_per_evaluation': FLOPS_PER_PIXEL * size**2}
  compiled = compile_evaluation(problem)
  row['xla_flops'] = float(compiled.cost_analysis()['flops'])
  row['xla_over_analytic_flops'] = (row['xla_flops']
                                    / row['flops_per_evaluation'])
  row['xla_memory'] = memory_fields(compiled)
  evaluate = lambda: compiled(pixels, arguments)
  load = child_processes.other_load()
  row['evaluation_s'], times = median_time(evaluate, repeats)
  row['evaluation_other_processes_cores'] = load()
  row['gflops_per_s'] = row['flops_per_evaluation'] / row['evaluation_s'] / 1e9
  if xla_options():
    default = compile_evaluation(problem, options={})
    row['evaluation_xla_defaults_s'], _ = median_time(
        lambda: default(pixels, arguments), len(times))
  if problem.spec.conv_algorithm != 'direct':
    direct = build(size, conv_algorithm='direct', dtype=problem.spec.dtype)
    direct_compiled = compile_evaluation(direct)
    direct_pixels = jax.device_put(direct.start)
    row['evaluation_direct_s'], _ = median_time(
        lambda: direct_compiled(direct_pixels, direct.loss_arguments),
        len(times))
  value, grad = evaluate()
  row['loss_at_content'] = float(value)
  row['grad_norm_at_content'] = float(jnp.linalg.norm(grad))
  return row, evaluate


def bench_steps(size, dtype, fields, steps, evaluate, rounds):
  """`rounds` chunks of `steps` steps of the optimiser of config `fields`
  (the library's loop, after a first chunk as the warm-up), each between
  two timed evaluations; a round's ratios are to the mean of the two and
  the median over rounds is reported, so a load that drifts affects both
  alike."""
  problem = build(size, dtype=dtype, optimizer=fields)
  evaluations_s = []
  clock = bench_problems.ChunkClock(
      lambda: evaluations_s.append(timed(evaluate)[0]))
  load = child_processes.other_load()
  done = problem_lib.minimize(problem, iterations=steps * (rounds + 1),
                              chunk_size=steps, on_chunk=clock)
  step_s, ratios, per_evaluation = [], [], []
  total_steps = total_evaluations = 0
  for k in range(1, len(clock.chunks)):
    elapsed, step, evaluations = clock.chunks[k]
    _, step0, evaluations0 = clock.chunks[k - 1]
    taken, spent = step - step0, evaluations - evaluations0
    if taken == 0:
      break
    local = (evaluations_s[k - 1] + evaluations_s[k]) / 2
    total_steps += taken
    total_evaluations += spent
    step_s.append(elapsed / taken)
    ratios.append(elapsed / taken / local)
    per_evaluation.append(elapsed / max(spent, 1) / local)
  median = lambda xs: float(np.median(xs)) if xs else float('nan')
  return {'optimizer': fields, 'chunk_steps': steps,
          'step_s': median(step_s),
          'evaluations_per_step': total_evaluations / max(total_steps, 1),
          'step_over_evaluation': median(ratios),
          'step_over_evaluation_rounds': ratios,
          'per_evaluation_over_evaluation': median(per_evaluation),
          'in_process_compile_s': done.compile_s,
          'other_processes_cores': load()}


def compile_child(size, optimizers, steps, cache_dir, dtype='float32'):
  """Builds the problem, then compiles the evaluation and each optimiser's
  (config fields) init and chunk programs of `steps` steps, with the
  persistent cache in `cache_dir` (None: the one this process has open).
  In this process (--single-process) JAX's in-memory caches are cleared
  first, so only the persistent cache holds programs compiled before."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  jax.clear_caches()
  owner = programs_lib.Programs()
  problem = build(size, dtype=dtype, programs=owner)
  start = time.perf_counter()
  compile_evaluation(problem)
  result = {'imports_s': _IMPORTED - _PROCESS_START,
            'evaluation_s': time.perf_counter() - start, 'optimizers': {}}
  for fields in optimizers:
    # A stop_loss of infinity ends the run before its first step: the
    # programs compile, the start is evaluated, nothing more.
    done = problem_lib.minimize(
        build(size, dtype=dtype, optimizer=fields, programs=owner),
        iterations=steps, chunk_size=steps, stop_loss=float('inf'))
    result['optimizers'][bench_problems.optimizer_key(fields)] = {
        'total_s': done.compile_s}
  result['total_s'] = result['evaluation_s'] + sum(
      r['total_s'] for r in result['optimizers'].values())
  return result


def bench_torch(row, repeats, threads):
  """PyTorch's evaluation at the row's size, and how the two compare."""
  torch_row = row['torch'] = run_child(
      bench_problems.torch_child, study='evaluation', size=row['size'],
      threads=threads, repeats=repeats)
  if 'error' not in torch_row:
    row['jax_over_torch'] = row['evaluation_s'] / torch_row['evaluation_s']
    row['loss_rel_diff_vs_torch'] = abs(
        row['loss_at_content'] / torch_row['loss'] - 1)
    row['grad_norm_rel_diff_vs_torch'] = abs(
        row['grad_norm_at_content'] / torch_row['grad_norm'] - 1)


def status_kib(field='VmHWM'):
  """A field of /proc/self/status. VmHWM is this process's own peak RSS,
  where getrusage's ru_maxrss keeps the parent's peak through fork + exec."""
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f
                if line.startswith(field + ':'))


def jax_only_baseline():
  """Peak RSS (KiB) of a fresh process that only imported jax and started
  its CPU backend."""
  return int(subprocess.run([sys.executable, '-c', (
      'import jax, jax.numpy as jnp\n'
      'jax.block_until_ready(jnp.zeros(()))\n'
      'print(next(l.split()[1] for l in open("/proc/self/status")\n'
      '           if l.startswith("VmHWM:")))')], capture_output=True,
                            text=True, check=True).stdout)


def memory_child(size, row_shards, dtype='float32'):
  """Builds the problem, compiles and runs one evaluation: the peak RSS
  after each phase and the RSS before the evaluation. With `row_shards`
  > 1 the rows are split over that many simulated CPU devices."""
  if row_shards > 1:
    jax.config.update('jax_num_cpu_devices', row_shards)
  problem = build(size, shard_rows=row_shards > 1, dtype=dtype)
  pixels, arguments = jax.device_put(problem.start), problem.loss_arguments
  if row_shards > 1:
    mesh = devices.make_mesh(problem.prepared.devices, shard_rows=True)
    pixels = jax.device_put(problem.start,
                            jax.NamedSharding(mesh, jax.P('rows')))
    arguments = jax.device_put(arguments, jax.NamedSharding(mesh, jax.P()))
  jax.block_until_ready(arguments)
  result = {'after_setup_kib': status_kib()}
  compiled = compile_evaluation(problem, pixels=pixels, arguments=arguments)
  result.update(xla=memory_fields(compiled), after_compile_kib=status_kib(),
                rss_before_evaluation_kib=status_kib('VmRSS'))
  with open('/proc/self/clear_refs', 'w') as f:  # VmHWM := the current RSS
    f.write('5')
  jax.block_until_ready(compiled(pixels, arguments))
  result['after_evaluation_kib'] = status_kib()
  return result


def bench_memory(size, baseline_kib, row_shards=1, dtype='float32'):
  """Peak RSS of a fresh process doing one evaluation at `size` less the
  jax-only baseline, and its rise during the evaluation alone (MiB)."""
  child = run_child(memory_child, size=size, row_shards=row_shards,
                    dtype=dtype)
  row = {'size': size, 'row_shards': row_shards,
         'method': 'rss_child', 'child': child}
  if 'error' not in child:
    peak = max(child['after_compile_kib'], child['after_evaluation_kib'])
    row['peak_rss_minus_baseline_mib'] = (peak - baseline_kib) / 1024
    row['evaluation_peak_over_rss_before_mib'] = (
        child['after_evaluation_kib'] - child['rss_before_evaluation_kib']
    ) / 1024
  return row


def evaluation_memory(evaluate, device=None):
  """The memory one call of `evaluate` takes in this process: where the
  device (default the first) keeps allocator statistics, the peak bytes in
  use after it less the bytes in use before it (the peak is the process's:
  if the call did not raise it, an upper bound) and the limit; else the
  rise of the peak RSS over the RSS before it; {} without either."""
  before = (device or jax.devices()[0]).memory_stats() or {}
  if 'peak_bytes_in_use' in before and 'bytes_in_use' in before:
    jax.block_until_ready(evaluate())
    after = (device or jax.devices()[0]).memory_stats()
    return {'method': 'memory_stats', 'evaluation_peak_over_in_use_before_mib':
            (after['peak_bytes_in_use'] - before['bytes_in_use']) / 2**20,
            'peak_is_upper_bound':
            after['peak_bytes_in_use'] <= before['peak_bytes_in_use'],
            'bytes_limit': after.get('bytes_limit')}
  if not os.path.exists('/proc/self/clear_refs'):
    return {}
  rss_kib = status_kib('VmRSS')
  with open('/proc/self/clear_refs', 'w') as f:  # VmHWM := the current RSS
    f.write('5')
  jax.block_until_ready(evaluate())
  return {'method': 'rss_in_process', 'evaluation_peak_over_rss_before_mib':
          (status_kib() - rss_kib) / 1024}


def memory_here(problem, size):
  """`evaluation_memory` of the first evaluation of `problem` in this
  process, with XLA's byte counts (as `bench_memory`'s)."""
  compiled = compile_evaluation(problem)
  pixels = jax.device_put(problem.start)
  return dict(evaluation_memory(lambda: compiled(pixels,
                                                 problem.loss_arguments)),
              size=size, row_shards=1,
              child={'xla': memory_fields(compiled)})


def bench_sizes(args, sizes, optimizers, have_torch, cache):
  """The per-size studies, one row per size and dtype; compiling with
  `cache` (a new persistent cache folder, or None: not measured)."""
  single, memory = args.single_process, not args.skip_memory
  baseline = (None if not memory or single or not sizes
              else jax_only_baseline())
  rows = []
  for size in sizes:
    steps = args.steps or (10 if size <= 256 else 5 if size <= 512 else 3)
    rounds = args.rounds or (3 if size <= 128 else 2 if size <= 256 else 1)
    print(f'{size} px ({", ".join(args.dtypes)}) ...', file=sys.stderr,
          flush=True)
    # First, while the cache holds nothing of this size.
    compiles = {dtype: {phase: (run_here if single else run_child)(
        compile_child, size=size, optimizers=optimizers, steps=steps,
        cache_dir=None if single else cache, dtype=dtype)
                        for phase in ('cold', 'warm')}
                for dtype in (args.dtypes if cache else ())}
    problems = {dtype: build(size, dtype=dtype) for dtype in args.dtypes}
    # Before any other evaluation or step at this size raises the peak.
    memories = {dtype: memory_here(problem, size)
                for dtype, problem in problems.items() if single and memory}
    for dtype in args.dtypes:
      load = child_processes.other_load()
      problem = problems.pop(dtype)
      row, evaluate = bench_evaluation(problem, size, args.repeats)
      row['steps'] = {
          bench_problems.optimizer_key(fields): bench_steps(
              size, dtype, fields, steps, evaluate, rounds)
          for fields in optimizers}
      del problem, evaluate
      if dtype in compiles:
        row['compile'] = compiles[dtype]
      if have_torch and dtype == 'float32':
        bench_torch(row, args.repeats, args.torch_threads)
      if dtype in memories:
        row['memory'] = memories[dtype]
      elif baseline is not None:
        row['memory'] = bench_memory(size, baseline, dtype=dtype)
      row['other_processes_cores'] = load()
      rows.append(row)
    by_dtype = {row['dtype']: row for row in rows if row['size'] == size}
    if len(by_dtype) == 2:
      by_dtype['bfloat16']['loss_rel_diff_vs_float32'] = abs(
          by_dtype['bfloat16']['loss_at_content']
          / by_dtype['float32']['loss_at_content'] - 1)
  return rows


# ---------------------------------------------------------------------------
# The other studies.

def bench_memory_sizes(sizes, row_shards=4, single=False):
  """Peak memory of one evaluation at each size, on one device and with
  the rows split over `row_shards` simulated devices; `single`: in this
  process, without splitting."""
  if single:
    return {'rows': [memory_here(build(size), size) for size in sizes]}
  baseline = jax_only_baseline()
  return {'baseline_kib': baseline, 'rows': [
      bench_memory(size, baseline, shards) for size in sizes
      for shards in (1, row_shards)]}


def bench_sweep(size=64, members=4, steps=10):
  """Per optimiser, the init and a chunk of `steps` steps of `members`
  members as one program (in each mode) against those of one run."""
  results = {}
  for name in optimizers_lib.OPTIMIZERS:
    # SGD's step scales with the gradient, smaller in this normalisation.
    fields = {'optimizer': name, 'learning_rate':
              LEARNING_RATES[name] * (1e6 if name == 'sgd' else 1)}
    sweep_of = lambda count, mode='auto', fields=fields: build(
        size, normalization='invariant', style_weight=1e-3, optimizer=fields,
        members=count, sweep_mode=mode)
    run = lambda problem: problem_lib.minimize(problem, iterations=steps,
                                               chunk_size=steps)
    one = sweep_of(1)
    one_s, _ = median_time(lambda one=one: run(one), 2)
    results[name] = {'one_run_s': one_s}
    for mode in descent.SWEEP_MODES:
      sweep = sweep_of(members, mode)
      sweep_s, _ = median_time(lambda sweep=sweep: run(sweep), 2)
      results[name][f'{mode}_over_k_runs'] = sweep_s / (members * one_s)
  return results


def bench_startup(conv_algorithm, runs=3, iterations=10):
  """Seconds from launching `python -m nst_jax.main` to its first step at
  128 px, from PNG files and a weights file, in fresh processes sharing a
  new cache folder: the first fills it, the others load from it."""
  folder = tempfile.mkdtemp(prefix='nst_jax_startup_')
  path = lambda name: os.path.join(folder, name)
  rows = []
  try:
    images.save_image(path('content.png'), scenes.demo_content(128))
    images.save_image(path('style.png'), scenes.demo_style(128))
    subprocess.run([sys.executable, '-m', 'nst_jax.weights', 'random',
                    f'--seed={WEIGHTS_SEED}', path('weights.npz')], cwd=REPO,
                   check=True, capture_output=True)
    config = dict(content=path('content.png'), style=path('style.png'),
                  weights=path('weights.npz'), image_size=128, init='content',
                  iterations=iterations, compilation_cache=path('cache'),
                  conv_algorithm=conv_algorithm)
    for run in range(1, runs + 1):
      config['output'] = path(f'run{run}.png')
      launched = time.time()
      proc = subprocess.run(
          [sys.executable, '-m', 'nst_jax.main']
          + [f'--config.{key}={value}' for key, value in config.items()],
          cwd=REPO, capture_output=True, text=True, check=False,
          env=dict(os.environ, NST_JAX_OFFLINE='1'))
      if proc.returncode != 0:
        rows.append(dict(child_processes.failure(proc), run=run))
        continue
      with open(path(f'run{run}.json')) as f:
        manifest = json.load(f)
      timing = manifest['timing']
      rows.append({'run': run, 'programs': manifest['programs'],
                   'conv_algorithm': manifest['device']['conv_algorithm'],
                   'launch_to_loop_s': timing['loop_start_unix'] - launched,
                   'run_to_loop_s': timing['start_to_loop_s'],
                   'compile_s': timing['compile_s']})
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return rows


def bench_layers(size, repeats=5):
  """Each convolution up to conv5_1 at a `size` px image, forward + input
  gradient (of the ReLU'd output against a random cotangent), direct and
  with each Winograd tile, beside the tile `winograd.choose_tile` picks."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  rows = []
  for name in vgg.CONV_LAYERS[:vgg.CONV_LAYERS.index('conv5_1') + 1]:
    side = size // 2 ** (int(name[4]) - 1)
    cin, cout = vgg.CONV_SHAPES[name]
    x, cotangent = normal(1, side, side, cin), normal(1, side, side, cout)
    kernel = normal(3, 3, cin, cout) * np.sqrt(2 / (9 * cin))
    bias, flipped = jnp.zeros((cout,), jnp.float32), vgg.flip_kernel(kernel)
    row = {'layer': name, 'side': side, 'channels': [cin, cout],
           'picked': winograd.choose_tile(side, side, cin, cout) or 'direct'}
    candidates = {'direct': (vgg.conv_relu, (kernel, bias, flipped))}
    for tile in winograd.TILES if cin >= 16 else ():
      candidates[tile] = (vgg.winograd_conv_relu, (
          kernel, bias, winograd.transform_kernel(kernel, tile),
          winograd.transform_kernel(flipped, tile)))
    for label, (fn, args) in candidates.items():
      grad = jax.jit(jax.grad(
          lambda x, *args, fn=fn: jnp.vdot(fn(x, *args), cotangent)),
                     compiler_options=xla_options())
      row[f'{label}_s'], _ = median_time(
          lambda grad=grad, args=args: grad(x, *args), repeats)
    rows.append(row)
  return {'size': size, 'layers': rows}


# ---------------------------------------------------------------------------
# Command line.

CHILDREN = (compile_child, memory_child, bench_problems.torch_child)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[1:]))
  add = parser.add_argument
  add('--sizes', default='128,256,512', help='square image sizes, px')
  add('--optimizer', action='append',
      help="an optimiser's config fields, e.g. 'optimizer=lbfgs,"
           "lbfgs_pyramid=2' (fields: "
           + ', '.join(bench_problems.OPTIMIZER_FIELDS) + "; a bare name is "
           "optimizer=NAME); repeated or separated by ';'; empty: none "
           "(default: each optimiser, L-BFGS as torch's algorithm)")
  add('--repeats', type=int, default=0,
      help='timed evaluations per size (0: 3-9, as fit in 8 s)')
  add('--steps', type=int, default=0,
      help='steps per timed chunk (0: 10 up to 256 px, 5 at 512, 3 above)')
  add('--rounds', type=int, default=0,
      help='timed chunks per optimiser (0: 3 at 128 px, 2 at 256, 1 above)')
  add('--no-torch', '--no_torch', dest='no_torch', action='store_true')
  add('--torch-threads', type=int, default=default_threads(),
      help='torch.set_num_threads (default: the cores XLA uses)')
  add('--skip-compile', '--skip_compile', dest='skip_compile',
      action='store_true')
  add('--skip-memory', '--skip_memory', dest='skip_memory',
      action='store_true')
  add('--sweep', action='store_true',
      help='4 members at 64 px as one program vs 4 runs')
  add('--startup', action='store_true',
      help='launch to first step of `python -m nst_jax.main`')
  add('--layer-sizes', default='',
      help='e.g. 128,256: each convolution layer, direct and Winograd')
  add('--memory-sizes', default='',
      help='e.g. 512,1024: peak memory of one evaluation, on one device '
           'and with rows split over 4 devices')
  add('--dtype', choices=('float32', 'bfloat16', 'both'),
      help='of the evaluation and step studies (default: float32 on CPU, '
           'both on an accelerator)')
  add('--single-process', '--single_process', dest='single_process',
      action='store_true', help='no child process opens the JAX device '
      '(automatic on an accelerator): compiling and memory are measured here')
  add('--out', default=os.path.join('out', 'benchmark.json'))
  add('--child', default='', help=argparse.SUPPRESS)  # [name, kwargs]
  args = parser.parse_args(argv)
  try:
    args.optimizers = (list(DEFAULT_OPTIMIZERS) if args.optimizer is None
                       else bench_problems.parse_optimizers(args.optimizer))
  except ValueError as error:
    parser.error(f'--optimizer: {error}')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    child_processes.serve(args.child, CHILDREN)
    return
  sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  have_torch = (not args.no_torch
                and importlib.util.find_spec('torch') is not None)
  accelerator = jax.devices()[0].platform != 'cpu'
  args.single_process |= accelerator
  # bfloat16 first: a device's peak memory is the process's (and smaller).
  args.dtype = args.dtype or ('both' if accelerator else 'float32')
  args.dtypes = {'both': ('bfloat16', 'float32')}.get(args.dtype,
                                                      (args.dtype,))
  if args.startup and args.single_process:
    print('--startup launches processes that open the device; skipped with '
          '--single-process', file=sys.stderr)
  if (not args.skip_memory and not args.single_process
      and not os.path.exists('/proc/self/clear_refs')):
    print("peak memory needs Linux's /proc; skipped", file=sys.stderr)
    args.skip_memory = True
  started, cache = time.perf_counter(), None
  previous_cache = jax.config.jax_compilation_cache_dir
  if sizes and not args.skip_compile:
    # The compile children (or this process's cold phase) fill this cache;
    # this process then loads the same programs from it.
    cache = tempfile.mkdtemp(prefix='nst_jax_bench_cache_')
    compilation_cache.reset_cache()  # JAX opens its cache folder once
    programs_lib.open_cache(cache)
  report = {'machine': bench_problems.machine(have_torch),
            'flops_formula': FLOPS_FORMULA, 'learning_rates': LEARNING_RATES,
            'dtypes': args.dtypes,
            'single_process': args.single_process,
            'torch_threads': args.torch_threads if have_torch else None,
            'load_average_start': os.getloadavg()}
  try:
    report['sizes'] = bench_sizes(args, sizes, args.optimizers, have_torch,
                                  cache)
    if args.sweep:
      report['sweep_64px_4_members'] = bench_sweep()
    if args.layer_sizes:
      report['layers'] = [bench_layers(int(size))
                          for size in args.layer_sizes.split(',')]
    if args.startup and not args.single_process:
      # The default (Winograd on CPU), then direct convolutions, whose
      # smaller programs load faster.
      report['startup'] = bench_startup('auto') + bench_startup('direct')
    if args.memory_sizes:
      report['memory_by_size'] = bench_memory_sizes(
          [int(x) for x in args.memory_sizes.split(',') if x.strip()],
          single=args.single_process)
  finally:
    if cache:  # As before, for a caller in this process.
      jax.config.update('jax_compilation_cache_dir', previous_cache)
      compilation_cache.reset_cache()
      shutil.rmtree(cache, ignore_errors=True)
  bench_problems.finish_report(report, started, args.out)


if __name__ == '__main__':
  main()
