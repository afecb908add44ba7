"""Benchmark nst_jax against a plain PyTorch implementation of the same loss.

  python scripts/benchmark.py                          # 128, 256, 512 px
  python scripts/benchmark.py --sizes= --time-to-quality  # panel, hours
  python scripts/benchmark.py --sizes=1024 --optimizers=lbfgs_nols --no-torch

The problem is Gatys et al.'s loss in the paper's normalisation (VGG19 to
conv5_1, alpha 1, beta 1e3) of the built-in demo images with seeded random
weights, built by the library as a run builds it. Per size: one evaluation
(loss + pixel gradient) in JAX and in PyTorch (scripts/torch_reference.py),
optimiser steps (the loop programs a run uses) as ratios to evaluations,
compiling and memory; more with --sweep, --startup, --layer-sizes,
--memory-sizes, --time-to-quality (a panel of 20 problems: --ttq-panel). docs/performance.md defines each figure.
Writes JSON (--out) and prints Markdown tables (--table-from prints them
again).

On a GPU or TPU (or with --single-process) only this process opens the
device: it times compiling itself (cached: after jax.clear_caches()), memory
is jax.Device.memory_stats()'s peak during one evaluation less the bytes in
use before it (GPU preallocation leaves both as they are; docs/devices.md),
PyTorch runs on the CPU (JAX_PLATFORMS=cpu), --startup is skipped, and
--dtype=both is the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

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

from nst_jax import api, weights
from nst_jax.engine import devices
from nst_jax.io import images
from nst_jax.core import losses, optim, vgg, winograd
from nst_jax.engine import programs as programs_lib
from scripts import child_processes
# pylint: enable=g-import-not-at-top,wrong-import-position

_IMPORTED = time.perf_counter()

FLOPS_PER_PIXEL = 4 * vgg.MACS_PER_PIXEL['conv5_1']
FLOPS_FORMULA = (f"4 * MACS_PER_PIXEL['conv5_1'] * H * W = 4 * "
                 f"{vgg.MACS_PER_PIXEL['conv5_1']:,} * H * W")
# Step sizes that keep each optimiser finite on the paper-normalised loss
# (speed does not depend on them, as long as the run does not stop).
LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 1.0, 'sgd': 1e-9}
ALPHA, BETA, WEIGHTS_SEED = 1.0, 1e3, 0
PROGRAMS = programs_lib.Programs()


def xla_options():
  """The compiler options the library's programs use here."""
  return programs_lib.compiler_options(jax.default_backend())


# ---------------------------------------------------------------------------
# The problem and its programs, built by the library.

@dataclasses.dataclass
class Bench:
  """A benchmark problem."""
  size: int
  spec: losses.LossSpec
  problem: optim.Problem
  pixels: Any  # the start: the content image


def blob_image(seed, size, which=0):
  """A seeded 8 x 8 image of uniform random colours (0-255) upscaled
  (bicubic, per channel in float32, clipped to 0-255) to `size` px:
  `which` 0 is problem `seed`'s content, 1 its style."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  blobs = np.random.default_rng([seed, which]).uniform(
      0, 255, (8, 8, 3)).astype(np.float32)
  return np.clip(np.stack([np.asarray(Image.fromarray(blobs[..., c]).resize(
      (size, size), Image.BICUBIC)) for c in range(3)], -1), 0,
                 255).astype(np.float32)


def problem_images(size, image_seed=None):
  """(content, style) at `size` px: the demo images (`image_seed` None) or
  problem `image_seed`'s colour blobs."""
  if image_seed is None:
    return images.demo_content(size), images.demo_style(size)
  return blob_image(image_seed, size, 0), blob_image(image_seed, size, 1)


def panel_weights(preprocessing='caffe'):
  """The seeded random VGG19 for a preprocessing (layout). Keras's
  (caffe): `weights.random_weights`. torchvision's: the same network with
  its first layer converted to torchvision's input, kernel_rgb[c] =
  kernel_bgr[2 - c] x 255 std[c], so it computes nearly the same features
  of the same pixels (the two layouts' means differ by under 0.5 of 255).
  Trained torchvision weights are made for that input; unconverted random
  weights would see inputs 57 times smaller, and with zero biases every
  feature 57 times smaller: the invariant losses' gradients then fell
  below torch.optim.LBFGS's absolute curvature test (s.y > 1e-10), so it
  never moved."""
  params, _ = weights.random_weights(WEIGHTS_SEED)
  if preprocessing == 'torchvision':
    scale = 255.0 * np.asarray(vgg.TORCHVISION_STD, np.float32)
    first = dict(params['conv1_1'])
    first['kernel'] = (np.asarray(first['kernel'])[:, :, ::-1]
                       * scale[None, None, :, None]).astype(np.float32)
    params = dict(params, conv1_1=first)
  return params


def build(size, normalization='paper', remat=False, style_weight=BETA,
          conv_algorithm='auto', shard_rows=False, compute=True,
          dtype='float32', preprocessing='caffe', image_seed=None) -> Bench:
  """The demo content and style (or, with `image_seed`, that problem's
  colour blobs: `problem_images`) at `size` px with seeded random weights,
  prepared as a run with `dtype` prepares them, the network's input
  preprocessed as `preprocessing` ('caffe': Keras's layout, 'torchvision');
  `compute=False`: zeros of the same shapes, computing nothing (enough to
  compile its programs)."""
  conv_algorithm = api.resolve_conv_algorithm(
      conv_algorithm, jax.devices()[0].platform, dtype, shard_rows)
  spec = losses.LossSpec(normalization=normalization, remat=remat,
                         conv_algorithm=conv_algorithm, dtype=dtype,
                         preprocessing=preprocessing)
  winograd_sizes = [(size, size)] if conv_algorithm == 'winograd' else []
  loss_weights = losses.loss_weights(spec, ALPHA, style_weight)
  if not compute:
    def problem_of(params, content, style):
      variables = vgg.prepare_variables(params, winograd_sizes, spec.layers)
      return optim.Problem(variables, losses.make_targets(
          variables, content, [style], spec), loss_weights)
    image = jax.ShapeDtypeStruct((size, size, 3), jnp.float32)
    params = jax.eval_shape(vgg.init_params, jax.random.key(WEIGHTS_SEED))
    return Bench(size, spec, *jax.tree_util.tree_map(
        lambda x: np.zeros(x.shape, x.dtype),
        (jax.eval_shape(problem_of, params, image, image), image)))
  params = panel_weights(preprocessing)
  content, style = problem_images(size, image_seed)
  variables = PROGRAMS.prepare_variables(params, winograd_sizes, spec.layers)
  targets = PROGRAMS.targets(variables, content, [style], [1.0], spec)
  return Bench(size, spec, optim.Problem(variables, targets, loss_weights),
               jax.device_put(content))


def compile_evaluation(bench, options=None):
  """`optim.loss_and_grad_jit` for `bench`, compiled with the library's
  compiler options (or `options`)."""
  return optim.loss_and_grad_jit.lower(bench.pixels, bench.problem,
                                       bench.spec).compile(
                                           xla_options() if options is None
                                           else options)


class Loop(NamedTuple):
  """A compiled loop: `start(pixels=None)`, the initial state (from the
  content image), and `run(state, criteria=None)`, one chunk (with the
  loop's stop criteria or, for one member, `criteria`)."""
  start: Callable
  run: Callable
  compile_s: dict


def optimizer_of(name) -> optim.Optimizer:
  """An `optim.Optimizer` from a name, optionally with L-BFGS's pyramid
  preconditioner: 'lbfgs_nols:p2' (2 levels), 'lbfgs:p3w0.7' (3 levels,
  weight 0.7), for lbfgs a first trial of f pixel values: 'lbfgs:p2f4',
  a luminance weight c: 'lbfgs:p2c-0.5', and m curvature pairs:
  'lbfgs:p2m20'."""
  if isinstance(name, optim.Optimizer):
    return name
  base, _, pyramid = name.partition(':')
  match = re.fullmatch(r'(?:p(\d+))?(?:w([0-9.]+))?(?:f([0-9.]+))?'
                       r'(?:c(-?[0-9.]+))?(?:m(\d+))?', pyramid)
  if base not in optim.OPTIMIZERS or not match:
    raise ValueError(f'unknown optimizer {name!r}')
  return optim.Optimizer(
      base, pyramid_levels=int(match.group(1) or 1),
      pyramid_weight=float(match.group(2) or 1.0),
      first_step=float(match.group(3) or 0.0),
      luminance_weight=float(match.group(4) or 0.0),
      lbfgs_memory=int(match.group(5) or optim.LBFGS_MEMORY))


def compile_loop(bench, optimizer, chunk_size, criteria, members=1,
                 mode='map', learning_rate=None, owner=PROGRAMS) -> Loop:
  """The init and chunk programs of `owner.loop` (what a run of that many
  members executes) for `members` copies of `bench` on the first device."""
  optimizer = optimizer_of(optimizer)
  programs = owner.loop(bench.spec, optimizer, chunk_size, mode,
                        jax.devices()[:1])
  lr = (LEARNING_RATES[optimizer.name] if learning_rate is None
        else learning_rate)
  variables = programs.place(bench.problem.variables, batched=False)
  args = programs.place(devices.stack([(
      bench.pixels, bench.problem.targets, bench.problem.loss_weights,
      np.float32(lr), criteria)] * members))
  pixels, targets, loss_weights, lr, criteria = args
  start = time.perf_counter()
  init = programs.compiled('init', None, variables, *args[:4])
  middle = time.perf_counter()
  state = jax.tree_util.tree_map(  # What init returns.
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      init.out_info)
  chunk = programs.compiled('chunk', None, variables, state, *args[1:])
  end = time.perf_counter()
  return Loop(
      lambda start=None: init(variables, pixels if start is None else
                              programs.place(np.asarray(start)[None]),
                              targets, loss_weights, lr),
      lambda state, stop=None: chunk(
          variables, state, targets, loss_weights, lr, criteria if stop is
          None else programs.place(devices.stack([stop]))),
      {'init_s': middle - start, 'chunk_s': end - middle,
       'total_s': end - start})


# ---------------------------------------------------------------------------
# Timing, load and child processes.

def timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def auto_repeats(first_s, requested):
  """As many timed calls as fit in about 8 s, 3 to 9, unless requested."""
  return requested or int(min(9, max(3, 8.0 // max(first_s, 1e-3))))


def median_time(fn, repeats):
  """Median seconds of `fn()` over `repeats` calls after a warm-up call,
  and the times."""
  first, _ = timed(fn)
  times = [timed(fn)[0] for _ in range(auto_repeats(first, repeats))]
  return float(np.median(times)), times


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


def run_child(function, **kwargs):
  """`function(**kwargs)` (one of CHILDREN) in a fresh process of this
  script, without a persistent compilation cache unless it opens one: its
  result with 'process_wall_s' and 'other_processes_cores', or {'error'}.
  PyTorch's child gets JAX's CPU backend only: it never opens an accelerator
  that this process holds."""
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  if function is torch_child:
    env['JAX_PLATFORMS'] = 'cpu'
  return child_processes.run(__file__, function.__name__, kwargs, REPO, env)


def run_here(function, **kwargs):
  """`run_child` in this process (--single-process): the result with
  'other_processes_cores', or {'error'} if it raised."""
  load = child_processes.other_load()
  try:
    result = function(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'[:1500]}
  return dict(result, in_process=True, other_processes_cores=load())


def default_threads():
  """The cores this process may use, as XLA's thread pool does."""
  if hasattr(os, 'sched_getaffinity'):  # Linux
    return len(os.sched_getaffinity(0))
  return os.cpu_count()


# ---------------------------------------------------------------------------
# Per size: evaluation, steps, compiling, PyTorch, memory.

def bench_evaluation(bench, repeats, remat_memory):
  """One evaluation: time, FLOP/s, XLA's FLOP and byte counts; also with
  direct convolutions and with XLA's default options."""
  pixels, problem = bench.pixels, bench.problem
  row = {'size': bench.size, 'dtype': bench.spec.dtype,
         'conv_algorithm': bench.spec.conv_algorithm,
         'flops_per_evaluation': FLOPS_PER_PIXEL * bench.size**2}
  compiled = compile_evaluation(bench)
  row['xla_flops'] = float(compiled.cost_analysis()['flops'])
  row['xla_over_analytic_flops'] = (row['xla_flops']
                                    / row['flops_per_evaluation'])
  row['xla_memory'] = memory_fields(compiled)
  if remat_memory:
    remat = dataclasses.replace(bench.spec, remat=True)
    row['xla_memory_remat'] = memory_fields(compile_evaluation(
        dataclasses.replace(bench, spec=remat)))
  evaluate = lambda: compiled(pixels, problem)
  load = child_processes.other_load()
  row['evaluation_s'], times = median_time(evaluate, repeats)
  row['evaluation_other_processes_cores'] = load()
  row['gflops_per_s'] = row['flops_per_evaluation'] / row['evaluation_s'] / 1e9
  if xla_options():
    default = compile_evaluation(bench, options={})
    row['evaluation_xla_defaults_s'], _ = median_time(
        lambda: default(pixels, problem), len(times))
  if bench.spec.conv_algorithm != 'direct':
    direct = build(bench.size, conv_algorithm='direct',
                   dtype=bench.spec.dtype)
    direct_compiled = compile_evaluation(direct)
    row['evaluation_direct_s'], _ = median_time(
        lambda: direct_compiled(direct.pixels, direct.problem), len(times))
  value, grad = evaluate()
  row['loss_at_content'] = float(value)
  row['grad_norm_at_content'] = float(jnp.linalg.norm(grad))
  return row, evaluate


def bench_steps(bench, name, steps, evaluate, rounds):
  """Chunks of `steps` steps of optimiser `name`, each between two timed
  evaluations; a round's ratios are to the mean of the two and the median
  over rounds is reported, so a load that drifts affects both alike."""
  loop = compile_loop(bench, name, steps, optim.stop_criteria(10**9))
  # Warm-up: the same program, one step (the rest are skipped no-ops).
  state, _, _ = jax.block_until_ready(loop.run(loop.start(),
                                               optim.stop_criteria(1)))
  state = state.replace(stop_reason=jnp.full_like(state.stop_reason,
                                                  optim.RUNNING))
  load = child_processes.other_load()
  before, _ = timed(evaluate)
  step_s, ratios, per_evaluation = [], [], []
  total_steps = total_evaluations = 0
  for _ in range(rounds):
    step0, evaluations0 = int(state.step[0]), int(state.evaluations[0])
    elapsed, (state, _, _) = timed(lambda state=state: loop.run(state))
    after, _ = timed(evaluate)
    done = int(state.step[0]) - step0
    spent = int(state.evaluations[0]) - evaluations0
    if done == 0:
      break
    local, before = (before + after) / 2, after
    total_steps += done
    total_evaluations += spent
    step_s.append(elapsed / done)
    ratios.append(elapsed / done / local)
    per_evaluation.append(elapsed / max(spent, 1) / local)
  median = lambda xs: float(np.median(xs)) if xs else float('nan')
  return {'chunk_steps': steps, 'step_s': median(step_s),
          'evaluations_per_step': total_evaluations / max(total_steps, 1),
          'step_over_evaluation': median(ratios),
          'step_over_evaluation_rounds': ratios,
          'per_evaluation_over_evaluation': median(per_evaluation),
          'in_process_compile_s': loop.compile_s['total_s'],
          'other_processes_cores': load()}


def compile_child(size, optimizers, steps, cache_dir, dtype='float32'):
  """Compiles the evaluation and each optimiser's init and chunk programs
  from shapes alone, with the persistent cache in `cache_dir` (None: the one
  this process has open). In this process (--single-process) JAX's
  in-memory caches are cleared first, so only the persistent cache holds
  programs compiled before."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  jax.clear_caches()
  bench = build(size, compute=False, dtype=dtype)
  owner = programs_lib.Programs()
  start = time.perf_counter()
  compile_evaluation(bench)
  result = {'imports_s': _IMPORTED - _PROCESS_START,
            'evaluation_s': time.perf_counter() - start, 'optimizers': {
                name: compile_loop(bench, name, steps, optim.stop_criteria(
                    10**9), owner=owner).compile_s for name in optimizers}}
  result['total_s'] = result['evaluation_s'] + sum(
      r['total_s'] for r in result['optimizers'].values())
  return result


def torch_child(study, size, threads, repeats=0, evaluations=0,
                problem=None):
  """PyTorch on the same images and weights: one evaluation ('evaluation')
  or torch.optim.LBFGS from the content image ('lbfgs'; then `repeats`
  single evaluations timed). `problem`: a panel problem (`PANEL`) instead
  of the demo's paper loss at `size`."""
  from scripts import torch_reference  # pylint: disable=g-import-not-at-top
  params = panel_weights(problem['preprocessing'] if problem else 'caffe')
  loss_kwargs = {}
  if problem:
    size = problem['size']
    loss_kwargs = dict(alpha=ALPHA, beta=problem['style_weight'],
                       normalization=problem['normalization'],
                       preprocessing=problem['preprocessing'])
  content, style = problem_images(size, problem and problem['seed'])
  if study == 'lbfgs':
    return torch_reference.lbfgs(params, content, style, evaluations, threads,
                                 timed_evaluations=repeats, **loss_kwargs)
  first = torch_reference.evaluation(params, content, style, 1, threads,
                                     **loss_kwargs)
  return torch_reference.evaluation(
      params, content, style, auto_repeats(first['evaluation_s'], repeats),
      threads, **loss_kwargs)


def bench_torch(row, repeats, threads):
  """PyTorch's evaluation at the row's size, and how the two compare."""
  torch_row = row['torch'] = run_child(
      torch_child, study='evaluation', size=row['size'], threads=threads,
      repeats=repeats)
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


def memory_child(size, remat, row_shards, dtype='float32'):
  """Builds the problem, compiles and runs one evaluation: the peak RSS
  after each phase and the RSS before the evaluation. With `row_shards`
  > 1 the rows are split over that many simulated CPU devices."""
  if row_shards > 1:
    jax.config.update('jax_num_cpu_devices', row_shards)
  bench = build(size, remat=remat, shard_rows=row_shards > 1, dtype=dtype)
  if row_shards > 1:
    mesh = devices.make_mesh(jax.devices(), shard_rows=True)
    bench.pixels = jax.device_put(bench.pixels,
                                  jax.NamedSharding(mesh, jax.P('rows')))
    bench.problem = jax.device_put(bench.problem,
                                   jax.NamedSharding(mesh, jax.P()))
  jax.block_until_ready(bench.problem)
  result = {'after_setup_kib': status_kib()}
  compiled = compile_evaluation(bench)
  result.update(xla=memory_fields(compiled), after_compile_kib=status_kib(),
                rss_before_evaluation_kib=status_kib('VmRSS'))
  with open('/proc/self/clear_refs', 'w') as f:  # VmHWM := the current RSS
    f.write('5')
  jax.block_until_ready(compiled(bench.pixels, bench.problem))
  result['after_evaluation_kib'] = status_kib()
  return result


def bench_memory(size, baseline_kib, remat=False, row_shards=1,
                 dtype='float32'):
  """Peak RSS of a fresh process doing one evaluation at `size` less the
  jax-only baseline, and its rise during the evaluation alone (MiB)."""
  child = run_child(memory_child, size=size, remat=remat,
                    row_shards=row_shards, dtype=dtype)
  row = {'size': size, 'remat': remat, 'row_shards': row_shards,
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


def memory_here(bench):
  """`evaluation_memory` of the first evaluation of `bench` in this process,
  with XLA's byte counts (as `bench_memory`'s)."""
  compiled = compile_evaluation(bench)
  return dict(evaluation_memory(lambda: compiled(bench.pixels,
                                                 bench.problem)),
              size=bench.size, remat=bench.spec.remat, row_shards=1,
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
    benches = {dtype: build(size, dtype=dtype) for dtype in args.dtypes}
    # Before any other evaluation or step at this size raises the peak.
    memories = {dtype: memory_here(bench) for dtype, bench in benches.items()
                if single and memory}
    for dtype in args.dtypes:
      load = child_processes.other_load()
      bench = benches.pop(dtype)
      row, evaluate = bench_evaluation(bench, args.repeats, memory)
      row['steps'] = {name: bench_steps(bench, name, steps, evaluate, rounds)
                      for name in optimizers}
      del bench, evaluate
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
  """Peak memory of one evaluation at each size, without and with remat,
  and with the rows split over `row_shards` simulated devices; `single`:
  in this process, without splitting."""
  if single:
    return {'rows': [memory_here(build(size, remat=remat)) for size in sizes
                     for remat in (False, True)]}
  baseline = jax_only_baseline()
  return {'baseline_kib': baseline, 'rows': [
      bench_memory(size, baseline, remat, shards) for size in sizes
      for remat, shards in ((False, 1), (True, 1), (False, row_shards))]}


# Time to quality: a panel of problems. Seeded colour blobs (`blob_image`)
# for content and style, at 128 and 256 px, in the paper's normalisation
# (alpha 1, beta 1e3) and the invariant one (alpha 1, beta 1e-3, the default
# config's), with each weight layout's preprocessing: 'caffe' (Keras's
# converted file) and 'torchvision'. The weights are seeded random ones
# (no pretrained file exists offline), so a layout is its preprocessing.
# The tuned set (seeds 0-7 and 200-207, the full 2 x 2 x 2 design twice, and
# 100-103) chose the optimiser and its settings; the held-out set (seeds
# 300-307, the full design again) only measures the choice.
# The default (lbfgs with the config's pyramid levels and first step), the
# same without line search, and torch's algorithm; 'lbfgs_nols_c2f' can be
# asked for.
TTQ_OPTIMIZERS = (
    f'lbfgs:p{optim.LBFGS_PYRAMID}f{optim.LBFGS_FIRST_STEP:g}',
    f'lbfgs_nols:p{optim.LBFGS_PYRAMID}', 'lbfgs')
STYLE_WEIGHTS = {'paper': BETA, 'invariant': 1e-3}


def panel_problem(seed, size, normalization, preprocessing, held_out=False):
  return {'name': f'{"h" if held_out else "t"}{seed}-{size}-'
                  f'{normalization[:3]}-{preprocessing[:5]}',
          'seed': seed, 'size': size, 'normalization': normalization,
          'preprocessing': preprocessing,
          'style_weight': STYLE_WEIGHTS[normalization], 'held_out': held_out}


DESIGN = [(size, normalization, preprocessing) for size in (128, 256)
          for normalization in ('paper', 'invariant')
          for preprocessing in ('caffe', 'torchvision')]
PANEL = [panel_problem(seed, *DESIGN[seed]) for seed in range(8)] + [
    panel_problem(seed, size, normalization, preprocessing)
    for seed, size, normalization, preprocessing in (
        (100, 128, 'paper', 'caffe'),
        (101, 128, 'invariant', 'torchvision'),
        (102, 256, 'invariant', 'caffe'),
        (103, 256, 'paper', 'torchvision'))] + [
            panel_problem(200 + index, *design)
            for index, design in enumerate(DESIGN)] + [
                panel_problem(300 + index, *design, held_out=True)
                for index, design in enumerate(DESIGN)]


def panel_bench(problem, size=None, **kwargs) -> Bench:
  """`build` for a panel problem (at `size`, default its own)."""
  return build(size or problem['size'],
               normalization=problem['normalization'],
               style_weight=problem['style_weight'],
               preprocessing=problem['preprocessing'],
               image_seed=problem['seed'], **kwargs)


def run_until_stopped(loop, state, curve=None):
  """Chunks until the run stops; appends [evaluations, loss] after each
  chunk to `curve` if given."""
  while int(state.stop_reason[0]) == optim.RUNNING:
    state, _, _ = loop.run(state)
    if curve is not None:
      curve.append([int(state.evaluations[0]), float(state.value[0])])
  return state


def ttq_child(name, size, stop_loss, max_steps, chunk_size, problem=None,
              cache_dir=None, names=None):
  """nst_jax's `name` (or each of `names`, one after another) from the
  content image until the loss is at most `stop_loss`; 'lbfgs_nols_c2f':
  100 lbfgs_nols steps at half size first, then on from the upsampled
  result. `problem`: a panel problem instead of the demo's at `size`.
  With `names`: {name: result} and the loss at the start."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  make = (lambda s: panel_bench(problem, s)) if problem else build
  size = problem['size'] if problem else size
  bench = make(size)
  if names is None:
    return _ttq_run(name, bench, make, stop_loss, max_steps, chunk_size)
  results = {'start_loss': float(optim.loss_and_grad_jit(
      bench.pixels, bench.problem, bench.spec)[0])}
  for one in names:
    try:
      results[one] = _ttq_run(one, bench, make, stop_loss, max_steps,
                              chunk_size)
    except Exception as e:  # pylint: disable=broad-except
      results[one] = {'error': f'{type(e).__name__}: {e}'[:1500]}
  return results


def _ttq_run(name, bench, make, stop_loss, max_steps, chunk_size):
  coarse = name == 'lbfgs_nols_c2f'
  optimizer = 'lbfgs_nols' if coarse else name
  small = make(bench.size // 2) if coarse else None
  jax.block_until_ready((bench.problem, small and small.problem))
  compile_start = time.perf_counter()
  loop = compile_loop(bench, optimizer, chunk_size,
                      optim.stop_criteria(max_steps, stop_loss=stop_loss))
  if coarse:
    small_loop = compile_loop(small, optimizer, chunk_size,
                              optim.stop_criteria(100))
  optimize_start = time.perf_counter()
  result, pixels = {'compile_s': optimize_start - compile_start}, None
  if coarse:
    state = run_until_stopped(small_loop, small_loop.start())
    result.update(coarse_size=bench.size // 2,
                  coarse_evaluations=int(state.evaluations[0]))
    pixels = images.resize(np.asarray(state.pixels[0]),
                           (bench.size, bench.size))
  curve = []  # host reads between chunks, a few ms in seconds
  state = run_until_stopped(loop, loop.start(pixels), curve)
  end = time.perf_counter()
  reason = optim.STOP_REASONS[int(state.stop_reason[0])]
  return dict(result, reached=reason == 'stop_loss', stop_reason=reason,
              evaluations=int(state.evaluations[0]), steps=int(state.step[0]),
              final_loss=float(state.value[0]), curve=curve,
              optimize_s=end - optimize_start,
              optimize_incl_compile_s=end - compile_start)


def time_to_quality(size, evaluations, threads, chunk_size, single=False):
  """torch.optim.LBFGS for `evaluations` evaluations, then each nst_jax run
  until it reaches torch's final loss; each in a fresh process (`single`:
  the nst_jax runs in this one)."""
  torch_run = run_child(torch_child, study='lbfgs', size=size,
                        threads=threads, evaluations=evaluations)
  if 'error' in torch_run:
    return torch_run
  runs = {name: (run_here if single else run_child)(
      ttq_child, name=name, size=size, stop_loss=torch_run['final_loss'],
      max_steps=3 * evaluations, chunk_size=chunk_size)
          for name in TTQ_OPTIMIZERS}
  return {'size': size, 'torch': torch_run, 'jax': runs}


def loop_evaluation_child(size, chunk_size=10, chunks=3, cache_dir=None):
  """Seconds per evaluation of lbfgs_nols's compiled loop (one evaluation
  per step, the 100-pair history's products included) at `size` px: the
  median of `chunks` chunks after a warm-up one, over their steps."""
  if cache_dir:
    programs_lib.open_cache(cache_dir)
  bench = panel_bench(PANEL[0], size)
  loop = compile_loop(bench, 'lbfgs_nols', chunk_size,
                      optim.stop_criteria(10**9))
  state, _, _ = jax.block_until_ready(loop.run(loop.start()))
  times = []
  for _ in range(chunks):
    seconds, (state, _, _) = timed(lambda state=state: loop.run(state))
    times.append(seconds / chunk_size)
  return {'evaluation_s': float(np.median(times)), 'times_s': times}


def per_evaluation(sizes, threads, cache_dir, single=False):
  """Per size, back to back: PyTorch's evaluation, the nst_jax loop's, and
  PyTorch's again; the ratio of nst_jax's to the mean of PyTorch's. Sizes
  without PyTorch (a coarse level's) time nst_jax only."""
  out = {}
  for size, with_torch in sizes:
    torch_s, row = [], {}
    for turn in (['torch', 'jax', 'torch'] if with_torch else ['jax']):
      if turn == 'torch':
        r = run_child(torch_child, study='evaluation', size=size,
                      threads=threads, repeats=7)
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


def time_to_quality_panel(problems, evaluations, threads, chunk_size, names,
                          single=False, checkpoint=lambda q: None,
                          per_evaluation_from=None, torch_rows=None):
  """Per problem: torch.optim.LBFGS for `evaluations` evaluations (and 7
  single evaluations timed after it), then each of `names` in one fresh
  process until its loss is at most torch's final one, at most 3 x
  `evaluations` steps. Per-evaluation times per size are measured back to
  back first (or taken from `per_evaluation_from`, an earlier panel's).
  `torch_rows`: {`problem_key`: torch's run} from an earlier panel, reused
  (torch's 300 evaluations do not depend on nst_jax). `checkpoint(q)`
  after each problem (partial results)."""
  cache = tempfile.mkdtemp(prefix='nst_jax_ttq_cache_')
  q = {'panel': True, 'evaluations': evaluations, 'optimizers': list(names),
       'rows': []}
  try:
    sizes = sorted({p['size'] for p in problems})
    coarse = sorted({s // 2 for s in sizes} - set(sizes)) if (
        'lbfgs_nols_c2f' in names) else []
    q['per_evaluation'] = per_evaluation_from or per_evaluation(
        [(s, True) for s in sizes] + [(s, False) for s in coarse], threads,
        cache, single)
    checkpoint(q)
    for problem in problems:
      row = {'problem': problem}
      q['rows'].append(row)
      t = (torch_rows or {}).get(problem_key(problem))
      if t:  # timed in another run: no time ratio (count ratios only)
        row['torch_reused'] = True
      row['torch'] = t = t or run_child(
          torch_child, study='lbfgs', size=problem['size'], threads=threads,
          evaluations=evaluations, repeats=7, problem=problem)
      if 'error' not in t:
        row['jax'] = r = (run_here if single else run_child)(
            ttq_child, name=None, size=problem['size'],
            stop_loss=t['final_loss'], max_steps=3 * evaluations,
            chunk_size=chunk_size, problem=problem, cache_dir=cache,
            names=list(names))
        if 'start_loss' in r:
          row['start_loss_rel_diff_vs_torch'] = abs(
              r['start_loss'] / t['start_loss'] - 1)
      q['summary'] = panel_summary(q['rows'], q['per_evaluation'], names)
      checkpoint(q)
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return q


def bench_sweep(size=64, members=4, steps=10):
  """Per optimiser, the init and a chunk of `steps` steps of `members`
  members as one program (in each mode) against those of one run."""
  bench = build(size, normalization='invariant', style_weight=1e-3)
  criteria = optim.stop_criteria(10**9)
  results = {}
  for name in optim.OPTIMIZERS:
    # SGD's step scales with the gradient, smaller in this normalisation.
    lr = LEARNING_RATES[name] * (1e6 if name == 'sgd' else 1)
    one = compile_loop(bench, name, steps, criteria, learning_rate=lr)
    one_s, _ = median_time(lambda loop=one: loop.run(loop.start()), 2)
    results[name] = {'one_run_s': one_s}
    for mode in optim.SWEEP_MODES:
      sweep = compile_loop(bench, name, steps, criteria, members, mode, lr)
      sweep_s, _ = median_time(lambda loop=sweep: loop.run(loop.start()), 2)
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
    images.save_image(path('content.png'), images.demo_content(128))
    images.save_image(path('style.png'), images.demo_style(128))
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


def machine(have_torch):
  info = {'cpu': platform.processor(), 'cores': os.cpu_count(),
          'memory_gib': os.sysconf('SC_PAGE_SIZE')
                        * os.sysconf('SC_PHYS_PAGES') / 2**30,
          'jax': jax.__version__, 'compiler_options': xla_options(),
          'device': jax.devices()[0].device_kind}
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      info['cpu'] = next((line.split(':', 1)[1].strip() for line in f
                          if line.startswith('model name')), info['cpu'])
  if have_torch:  # Not imported here: its threads would stay beside XLA's.
    info['torch'] = importlib.metadata.version('torch')
  return info


# ---------------------------------------------------------------------------
# Tables.

def _s(seconds):
  if seconds is None:
    return '-'
  return f'{1000 * seconds:.0f} ms' if seconds < 10 else f'{seconds:.1f} s'


def _num(value, digits=0, unit=''):
  return '-' if value is None else f'{value:.{digits}f}{unit}'


def _mib(count):
  return _num(None if count is None else count / 2**20)


def _rise(mem):
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


def print_evaluations(report):
  m = report['machine']
  print(f'Machine: {m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]:.0f} GiB;'
        f' device {m.get("device", "cpu")}; jax {m["jax"]}'
        + (f', torch {m["torch"]}' if 'torch' in m else '')
        + f'; load average {report["load_average_start"][0]:.2f} at start, '
        f'{report["load_average_end"][0]:.2f} at end.')
  rows = []
  for row in report['sizes']:
    torch_row, mem = row.get('torch', {}), row.get('memory', {})
    xla, remat = row['xla_memory'], row.get('xla_memory_remat', {})
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
        _num(mem.get('peak_rss_minus_baseline_mib'), 0, ' MiB'), _rise(mem),
        f'{_mib(xla["temp_plus_argument_plus_output_bytes"])} MiB '
        f'({_mib(xla["temp_size_in_bytes"])}; '
        f'{_mib(remat.get("temp_size_in_bytes"))})',
        f'{_num(row["evaluation_other_processes_cores"], 2)} / '
        f'{_num(torch_row.get("other_processes_cores"), 2)}'])
  _table(f'One evaluation (loss + gradient w.r.t. the pixels; FLOPs = '
         f'{FLOPS_FORMULA}):',
         ['size', 'dtype', 'JAX', 'JAX, direct convolutions',
          "JAX, XLA's default options", 'GFLOP/s', 'XLA FLOPs / analytic',
          'PyTorch', 'PyTorch GFLOP/s', 'JAX / PyTorch',
          'peak RSS − baseline', 'rise in evaluation',
          'XLA temp+arg+out (temp; remat temp)', 'other load JAX / PyTorch'],
         rows)


def print_steps(sizes):
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
          row['size'], row.get('dtype', 'float32'), name, _s(r['step_s']),
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
  compiled = [(row['size'], row.get('dtype', 'float32'), row['compile'])
              for row in sizes if 'compile' in row]
  if compiled:
    cell = lambda c, key: ' / '.join(
        f'{c[phase][key]:.1f} s' if key in c[phase] else
        c[phase].get('error', '-')[:100] for phase in ('cold', 'warm'))
    _table('Compiling in a fresh process (--single-process: in this one, '
           'cached = after jax.clear_caches()), cold / cached:',
           ['size', 'dtype', 'the evaluation', 'launch to everything compiled'],
           [[size, dtype, cell(c, 'evaluation_s'), cell(c, 'process_wall_s')]
            for size, dtype, c in compiled])


def print_sweep(sweep):
  _table('Sweep of 4 members at 64 px as one program, against 4 runs:',
         ['optimiser', '4-member sweep / 4 runs (map)', '(vmap)'],
         [[name, f'{r["map_over_k_runs"]:.2f}', f'{r["vmap_over_k_runs"]:.2f}']
          for name, r in sweep.items()])


def ttq_label(name):
  """'lbfgs:p2f8' -> 'lbfgs, pyramid 2, first step 8'; plain L-BFGS names
  say they are torch's algorithm."""
  if name == 'lbfgs_nols_c2f':
    return 'lbfgs_nols c2f'
  optimizer = optimizer_of(name)
  if optimizer.name not in ('lbfgs', 'lbfgs_nols'):
    return name
  pyramid = ('' if optimizer.pyramid_levels == 1 else
             f', pyramid {optimizer.pyramid_levels}')
  if pyramid and optimizer.pyramid_weight != 1:
    pyramid += f' w {optimizer.pyramid_weight:g}'
  extras = pyramid + ''.join(
      f', {label} {value:g}' for label, value, torch_value in (
          ('first step', optimizer.first_step, 0),
          ('luminance', optimizer.luminance_weight, 0),
          ('memory', optimizer.lbfgs_memory, optim.LBFGS_MEMORY))
      if value != torch_value)
  return optimizer.name + (extras or " (torch's)")


def print_time_to_quality_panel(q):
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
          'start loss rel. diff.'] + [ttq_label(n) for n in names],
         rows)
  summary_rows = []
  for label, by_name in q.get('summary', {}).items():
    for name, e in by_name.items():
      summary_rows.append([
          label.replace('_', ' '), ttq_label(name), e['problems'],
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
  never was (to chunk resolution: run with --ttq-chunk=1 for single steps)."""
  out = []
  for k in at:
    if k > len(torch_curve):
      break
    target = torch_curve[k - 1][2]
    out.append(next((e for e, loss in curve if loss <= target), None))
  return out


def print_catch_up(q):
  rows = []
  for row in q['rows']:
    for name in q['optimizers']:
      r = row.get('jax', {}).get(name) or {}
      if r.get('curve') and row['torch'].get('curve'):
        rows.append([row['problem']['name'], ttq_label(name)] + [
            '-' if e is None else e
            for e in catch_up(row['torch']['curve'], r['curve'])])
  if rows:
    _table("Catching up: nst_jax's evaluations until its loss is at most "
           "torch.optim.LBFGS's after k evaluations (to the chunk: "
           '--ttq-chunk):', ['problem', 'optimiser'] + [
               f'k = {k}' for k in CATCH_UP_AT], rows)


def print_time_to_quality(q):
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
    label = 'nst_jax ' + {'lbfgs': 'lbfgs (strong Wolfe line search)',
                          'lbfgs_nols_c2f': 'lbfgs_nols, 100 steps at half '
                                            'size first'}.get(name, name)
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
  rows = []
  for row in memory['rows']:
    xla, split = row['child'].get('xla', {}), row['row_shards'] > 1
    rows.append([
        row['size'], 'yes' if row['remat'] else 'no', row['row_shards'],
        '-' if split else _num(row.get('peak_rss_minus_baseline_mib')),
        '-' if split else _rise(row),
        _mib(xla.get('temp_size_in_bytes')),
        _mib(xla.get('temp_plus_argument_plus_output_bytes'))])
  _table('Peak memory of one evaluation (a fresh process per row, or this '
         'one with --single-process; XLA counts per device; split rows by '
         'XLA only):',
         ['size', 'remat', 'devices (rows split)', 'peak RSS − baseline MiB',
          'rise during the evaluation', 'XLA temp MiB per device',
          'XLA temp+args MiB per device'], rows)


def print_report(report):
  if report['sizes']:
    print_evaluations(report)
    print_steps(report['sizes'])
    print_compile(report['sizes'])
  for key, printer in (('layers', print_layers), ('startup', print_startup),
                       ('memory_by_size', print_memory),
                       ('sweep_64px_4_members', print_sweep),
                       ('time_to_quality', print_time_to_quality)):
    if key in report:
      printer(report[key])


# ---------------------------------------------------------------------------
# Command line.

CHILDREN = {f.__name__: f for f in (compile_child, memory_child, torch_child,
                                    ttq_child, loop_evaluation_child)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[1:]))
  add = parser.add_argument
  add('--sizes', default='128,256,512', help='square image sizes, px')
  add('--optimizers', default=','.join(optim.OPTIMIZERS))
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
  add('--time-to-quality', '--time_to_quality', dest='time_to_quality',
      action='store_true',
      help="nst_jax to torch.optim.LBFGS's loss after --ttq-evaluations, "
           'on the panel of problems (--ttq-panel)')
  add('--ttq-panel', '--ttq_panel', dest='ttq_panel', default='all',
      choices=('all', 'tuned', 'held_out', 'demo'),
      help="the time-to-quality problems: the tuned set's 20 (seeds 0-7, "
           "100-103, 200-207), the held-out set's 8 (seeds 300-307), both, "
           "or the "
           "demo images "
           'at --ttq-size (one problem, paper loss)')
  add('--ttq-problems', '--ttq_problems', dest='ttq_problems', default='',
      help='comma-separated panel problem names (e.g. t0-128-pap-caffe) or '
           'seeds to run only those')
  add('--ttq-optimizers', '--ttq_optimizers', dest='ttq_optimizers',
      default=','.join(TTQ_OPTIMIZERS),
      help="nst_jax optimisers to time on the panel: lbfgs, lbfgs_nols (torch's "
           'algorithm) or with the pyramid preconditioner, e.g. lbfgs:p2 '
           '(2 levels), lbfgs_nols:p3w0.7 (3 levels, weight 0.7), '
           'lbfgs:p2f8 (and a first line-search trial of 8 pixel values); '
           'lbfgs_nols_c2f: lbfgs_nols with 100 steps at half size first')
  add('--ttq-size', type=int, default=128, help='--ttq-panel=demo: its size')
  add('--ttq-per-evaluation-from', '--ttq_per_evaluation_from',
      dest='ttq_per_evaluation_from', default='',
      help="a panel's JSON whose per-evaluation times to reuse (running "
           'part of the panel beside another)')
  add('--ttq-torch-from', '--ttq_torch_from', dest='ttq_torch_from',
      default='', help="panel JSON files (comma-separated) whose torch "
      'runs to reuse for the same problems and --ttq-evaluations')
  add('--ttq-evaluations', type=int, default=300)
  add('--ttq-chunk', type=int, default=10)
  add('--sweep', action='store_true',
      help='4 members at 64 px as one program vs 4 runs')
  add('--startup', action='store_true',
      help='launch to first step of `python -m nst_jax.main`')
  add('--layer-sizes', default='',
      help='e.g. 128,256: each convolution layer, direct and Winograd')
  add('--memory-sizes', default='',
      help='e.g. 512,1024: peak memory of one evaluation, with and without '
           'remat, and with rows split over 4 devices')
  add('--dtype', choices=('float32', 'bfloat16', 'both'),
      help='of the evaluation and step studies (default: float32 on CPU, '
           'both on an accelerator)')
  add('--single-process', '--single_process', dest='single_process',
      action='store_true', help='no child process opens the JAX device '
      '(automatic on an accelerator): compiling and memory are measured here')
  add('--out', default=os.path.join('out', 'benchmark.json'))
  add('--table-from', default='', help='print the tables of a JSON file')
  add('--child', default='', help=argparse.SUPPRESS)  # [name, kwargs]
  return parser.parse_args(argv)


def panel_problems(which, only=''):
  """The panel's problems for --ttq-panel and --ttq-problems, smaller
  sizes first (a partial run has both sets at 128 px)."""
  chosen = [p for p in PANEL if which == 'all'
            or p['held_out'] == (which == 'held_out')]
  wanted = {w.strip() for w in only.split(',') if w.strip()}
  if wanted:
    chosen = [p for p in chosen if p['name'] in wanted
              or str(p['seed']) in wanted]
  return sorted(chosen, key=lambda p: (p['size'], p['held_out'], p['seed']))


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
    q['summary'] = panel_summary(q['rows'], q['per_evaluation'],
                                 q['optimizers'])
  return report


def per_evaluation_from(path):
  if not path:
    return None
  with open(path) as f:
    return json.load(f)['time_to_quality']['per_evaluation']


def problem_key(problem):
  """A problem's name without its set's letter: the same seed, size, loss
  and layout whichever set it was in."""
  return problem['name'][1:]


def torch_rows_from(paths, evaluations):
  """{`problem_key`: torch's run} from earlier panels' JSON files."""
  rows = {}
  for path in (p for p in paths.split(',') if p.strip()):
    with open(path) as f:
      q = json.load(f).get('time_to_quality', {})
    for row in q.get('rows', []):
      if (q.get('evaluations') == evaluations and 'torch' in row
          and 'error' not in row['torch']):
        rows.setdefault(problem_key(row['problem']), row['torch'])
  return rows


def write_report(report, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    name, kwargs = json.loads(args.child)
    print(json.dumps(CHILDREN[name](**kwargs)))
    return
  if args.table_from:
    print_report(merged_reports(args.table_from.split(',')))
    return
  sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  optimizers = [o for o in args.optimizers.split(',') if o.strip()]
  if set(optimizers) - set(optim.OPTIMIZERS):
    sys.exit(f'--optimizers: valid are {", ".join(optim.OPTIMIZERS)}')
  have_torch = (not args.no_torch
                and importlib.util.find_spec('torch') is not None)
  if args.time_to_quality and not have_torch:
    print('--time-to-quality needs torch (and no --no-torch); skipped',
          file=sys.stderr)
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
  report = {'machine': machine(have_torch), 'flops_formula': FLOPS_FORMULA,
            'learning_rates': LEARNING_RATES, 'dtypes': args.dtypes,
            'single_process': args.single_process,
            'torch_threads': args.torch_threads if have_torch else None,
            'load_average_start': os.getloadavg()}
  try:
    report['sizes'] = bench_sizes(args, sizes, optimizers, have_torch, cache)
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
    if args.time_to_quality and have_torch and args.ttq_panel == 'demo':
      report['time_to_quality'] = time_to_quality(
          args.ttq_size, args.ttq_evaluations, args.torch_threads,
          args.ttq_chunk, args.single_process)
    elif args.time_to_quality and have_torch:
      def checkpoint(q):
        report['time_to_quality'] = q
        write_report(report, args.out)
      report['time_to_quality'] = time_to_quality_panel(
          panel_problems(args.ttq_panel, args.ttq_problems),
          args.ttq_evaluations, args.torch_threads, args.ttq_chunk,
          [n for n in args.ttq_optimizers.split(',') if n.strip()],
          args.single_process, checkpoint, per_evaluation_from(
              args.ttq_per_evaluation_from), torch_rows_from(
                  args.ttq_torch_from, args.ttq_evaluations))
  finally:
    if cache:  # As before, for a caller in this process.
      jax.config.update('jax_compilation_cache_dir', previous_cache)
      compilation_cache.reset_cache()
      shutil.rmtree(cache, ignore_errors=True)
  report['load_average_end'] = os.getloadavg()
  report['benchmark_wall_s'] = time.perf_counter() - started
  write_report(report, args.out)
  print_report(report)
  print(f'\n(JSON: {args.out}; {report["benchmark_wall_s"]:.0f} s)',
        file=sys.stderr)


if __name__ == '__main__':
  main()
