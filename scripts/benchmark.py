"""Benchmark nst_jax (and, when installed, a plain PyTorch implementation).

  python scripts/benchmark.py                          # 128, 256, 512 px
  python scripts/benchmark.py --sizes=128,256 --time-to-quality
  python scripts/benchmark.py --sizes=1024 --optimizers=lbfgs_nols --no-torch

What is measured, per image size (square H = W), for the loss of Gatys et
al. in the paper's normalisation (VGG19 to conv5_1 with average pooling,
style layers conv1_1 ... conv5_1, content layer conv4_2, alpha 1, beta 1e3,
Caffe preprocessing) with seeded random He-normal weights (pretrained weights
are not needed: speed does not depend on the values):

* evaluation: one loss + gradient w.r.t. the pixels with
  `optim.loss_and_grad_jit`, median wall time of several calls after a
  warm-up (`--repeats`, default: as many as fit in ~8 s, 3 to 9);
* achieved FLOP/s against the analytic count

    FLOPs per evaluation = 2 (multiply + add) * 2 (forward + input gradient)
                           * MACS_PER_PIXEL['conv5_1'] * H * W
                         = 4 * 361,152 * H * W   (94.7 GFLOP at 256 px)

  (the input gradient of a 3x3 convolution costs as many multiply-adds as
  its forward; pooling, Grams and losses are a few percent), cross-checked
  with XLA's own count `compiled.cost_analysis()['flops']`; every program
  is compiled with `optim.compiler_options` as `run` does, and on CPU the
  evaluation is also timed compiled without them (XLA's defaults);
* one optimisation step per optimiser: a compiled `optim.run_chunk` of
  `--steps` steps (10 up to 256 px, 5 at 512), timed, divided by the steps
  and by the evaluations the steps spent (`state.evaluations`); as ratios
  to the mean of the evaluations timed right before and after each chunk,
  median over `--rounds` chunks (so a load that drifts affects both sides
  alike). A chunk ends with one forward pass (`losses.loss_terms` at the
  final pixels, for logging): it is timed on its own, and the ratio without
  it is reported too. Minor page faults per evaluation and per step are
  recorded (XLA maps and unmaps its temporary buffers on every call);
* compile time of the evaluation and of each optimiser's init + chunk
  functions (`.lower(...).compile()`), in two fresh processes sharing a new
  temporary persistent compilation cache: cold (empty cache, which it fills)
  and warm (everything loaded from the cache);
* peak memory, two ways: (a) peak RSS of a fresh process that builds the
  problem, compiles and runs one evaluation, minus that of a process that
  only imported jax and started its CPU backend, read from /proc/self/status
  VmHWM (getrusage's ru_maxrss is recorded too, but a child inherits its
  parent's peak through fork + exec, so there it is only an upper bound);
  also the high-water mark during the evaluation alone (/proc/self/
  clear_refs, then VmHWM) minus the RSS just before it; (b) XLA's
  `compiled.memory_analysis()`: temp + argument + output bytes (arguments
  include the 80 MB weights and their 80 MB pre-flipped copy), and the temp
  bytes with `LossSpec(remat=True)`;
* with torch installed (optional; `pip install torch==2.13.0`, the `bench`
  extra) and unless `--no-torch`: the same network and losses in plain
  PyTorch (`scripts/torch_reference.py`, weights copied HWIO -> OIHW), one
  evaluation timed in its own process with `torch.set_num_threads(cores)`,
  the ratio JAX/PyTorch, and a check that both compute the same loss and
  gradient norm.

`--time-to-quality` (needs torch): from the content image at `--ttq-size`
(128) px, torch.optim.LBFGS(lr=1, history_size=100, no line search) runs
`--ttq-evaluations` (300) evaluations; then nst_jax's `lbfgs`, `lbfgs_nols`
(and `lbfgs_nols` 100 steps at half size first, upsampled) start from the
same image with `stop_loss` = torch's final loss; each runs in a fresh process
without persistent cache, and reports whether and after how many evaluations
it got there, in seconds with and without compile.

`--sweep`: 4 members at 64 px as one program (map and vmap) vs 4 runs.

Writes JSON (`--out`, default out/benchmark.json) and prints Markdown tables
(`--table-from=FILE` prints them again from a JSON file). Absolute times
vary with the machine's load: each measurement records the CPU cores other
processes used meanwhile ("other load"; /proc/stat), and ratios are
measured within one run. The default run (128, 256, 512 px, PyTorch,
compile, memory) takes about 8 minutes on 2 cores; `--time-to-quality` adds
about 5.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_PROCESS_START = time.perf_counter()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from nst_jax import losses, optim, vgg  # pylint: disable=g-import-not-at-top,wrong-import-position
from nst_jax import run as run_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
try:
  from nst_jax import images as nst_images  # pylint: disable=g-import-not-at-top
except ImportError:  # being written: fall back to synthetic images
  nst_images = None
try:
  from nst_jax import weights as nst_weights  # pylint: disable=g-import-not-at-top
except ImportError:
  nst_weights = None

_IMPORTED = time.perf_counter()

FLOPS_PER_PIXEL = 4 * vgg.MACS_PER_PIXEL['conv5_1']
FLOPS_FORMULA = (f"4 * MACS_PER_PIXEL['conv5_1'] * H * W = 4 * "
                 f"{vgg.MACS_PER_PIXEL['conv5_1']:,} * H * W (2 FLOPs per "
                 'multiply-add, forward + input gradient of the same cost)')
# Step sizes that keep each optimiser finite on the paper-normalised loss
# (speed does not depend on them, as long as the run does not stop).
LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 1.0, 'sgd': 1e-9}
ALPHA, BETA = 1.0, 1e3
WEIGHTS_SEED = 0


# ---------------------------------------------------------------------------
# The problem: images, weights, loss.

def synthetic_images(size):
  """Deterministic content (smooth gradients + blobs + noise) and style
  (oriented stripes + noise), RGB 0-255 float32, when nst_jax.images is
  unavailable."""
  rng = np.random.default_rng(1508)
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
  blob = np.exp(-((x - 0.4) ** 2 + (y - 0.55) ** 2) / 0.03)
  content = np.stack([200 * x + 40 * blob, 180 * y + 30, 220 * (1 - x) * y
                      + 60 * blob], -1)
  content += rng.normal(0, 6, content.shape)
  stripes = np.sin(40 * (0.8 * x + 0.6 * y)) * np.cos(25 * (x - y))
  style = np.stack([128 + 100 * stripes, 90 + 60 * np.roll(stripes, 3, 0),
                    160 - 80 * stripes], -1)
  style += rng.normal(0, 12, style.shape)
  return (np.clip(content, 0, 255).astype(np.float32),
          np.clip(style, 0, 255).astype(np.float32))


def content_and_style(size):
  """(content, style, source): nst_jax's demo images if available."""
  if nst_images is not None and hasattr(nst_images, 'demo_content') and (
      hasattr(nst_images, 'demo_style')):
    return (np.asarray(nst_images.demo_content(size), np.float32),
            np.asarray(nst_images.demo_style(size), np.float32),
            'nst_jax.images.demo_content/demo_style')
  content, style = synthetic_images(size)
  return content, style, 'synthetic (benchmark.synthetic_images)'


def random_params(seed=WEIGHTS_SEED):
  """Seeded He-normal VGG19 weights as NumPy arrays (HWIO kernels)."""
  if nst_weights is not None and hasattr(nst_weights, 'random_weights'):
    params, _ = nst_weights.random_weights(seed)
    return params
  return jax.tree_util.tree_map(np.asarray,
                                vgg.init_params(jax.random.key(seed)))


# Compiled, as the CLI does (nst_jax.run); op by op it compiles every
# operation separately and peaks higher (at 512 px: 2.3 vs 1.9 GiB RSS).
_make_targets = jax.jit(losses.make_targets, static_argnames=('spec',))


def conv_algorithm_for(requested='auto', shard_rows=False):
  """What nst_jax.run uses on this platform for `requested`."""
  return run_lib.resolve_conv_algorithm(requested, jax.devices()[0].platform,
                                        'float32', shard_rows)


def xla_options():
  """The compiler options `run` uses on this platform
  (`optim.compiler_options`)."""
  return optim.compiler_options(jax.default_backend())


def make_problem(size, normalization='paper', remat=False, style_weight=BETA,
                 conv_algorithm='auto'):
  """(spec, problem, start pixels = the content image, NumPy params)."""
  params = random_params()
  spec = losses.LossSpec(normalization=normalization, remat=remat,
                         conv_algorithm=conv_algorithm_for(conv_algorithm))
  variables = vgg.prepare_variables(
      jax.tree_util.tree_map(jnp.asarray, params),
      winograd_sizes=([(size, size)] if spec.conv_algorithm == 'winograd'
                      else ()), layers=spec.layers)
  content, style, _ = content_and_style(size)
  targets = _make_targets(variables, jnp.asarray(content),
                         [jnp.asarray(style)], spec)
  problem = optim.Problem(variables, targets,
                          losses.loss_weights(spec, ALPHA, style_weight))
  return spec, problem, jnp.asarray(content), params


def abstract_problem(size, normalization='paper'):
  """Like `make_problem` but only shapes (jax.ShapeDtypeStruct): for
  compiling without computing anything."""
  conv_algorithm = conv_algorithm_for()
  spec = losses.LossSpec(normalization=normalization,
                         conv_algorithm=conv_algorithm)
  params = {name: {'kernel': jax.ShapeDtypeStruct((3, 3, cin, cout),
                                                  jnp.float32),
                   'bias': jax.ShapeDtypeStruct((cout,), jnp.float32)}
            for name, (cin, cout) in vgg.CONV_SHAPES.items()}
  pixels = jax.ShapeDtypeStruct((size, size, 3), jnp.float32)

  def build(params, content, style):
    variables = vgg.prepare_variables(
        params, winograd_sizes=[(size, size)] if conv_algorithm == 'winograd'
        else (), layers=spec.layers)
    targets = losses.make_targets(variables, content, [style], spec)
    return optim.Problem(variables, targets,
                         losses.loss_weights(spec, ALPHA, BETA))
  return spec, jax.eval_shape(build, params, pixels, pixels), pixels


# ---------------------------------------------------------------------------
# Timing helpers.

def timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def auto_repeats(first_call_s, requested, budget_s=8.0):
  if requested > 0:
    return requested
  return int(min(9, max(3, budget_s // max(first_call_s, 1e-3))))


def auto_steps(size, requested):
  if requested > 0:
    return requested
  return 10 if size <= 256 else 5 if size <= 512 else 3


def median_time(fn, repeats):
  """Median seconds of `fn()` (blocked) over `repeats` calls after one
  warm-up call; repeats <= 0: automatic from the warm-up's duration."""
  first, _ = timed(fn)
  times = [timed(fn)[0] for _ in range(auto_repeats(first, repeats))]
  return float(np.median(times)), times


def first_cost(analysis):
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return analysis or {}


def memory_fields(compiled):
  m = compiled.memory_analysis()
  if m is None:
    return None
  fields = {k: int(getattr(m, k)) for k in (
      'temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
      'alias_size_in_bytes', 'generated_code_size_in_bytes')
            if hasattr(m, k)}
  fields['temp_plus_argument_plus_output_bytes'] = (
      fields.get('temp_size_in_bytes', 0)
      + fields.get('argument_size_in_bytes', 0)
      + fields.get('output_size_in_bytes', 0))
  return fields


class OtherLoad:
  """CPU time that other processes used while a phase ran, in cores (0 = the
  machine was ours; 1 = another process kept one core busy on average).

  From /proc/stat's busy time minus this process's and its finished
  children's CPU time; None where /proc/stat is missing.
  """

  def __init__(self):
    self.start = self._snapshot()

  @staticmethod
  def _snapshot():
    try:
      with open('/proc/stat') as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
      return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf('SC_CLK_TCK')
    t = os.times()
    mine = t.user + t.system + t.children_user + t.children_system
    return time.perf_counter(), busy, mine

  def cores(self):
    end = self._snapshot()
    if self.start is None or end is None:
      return None
    wall = end[0] - self.start[0]
    other = (end[1] - self.start[1]) - (end[2] - self.start[2])
    return round(max(other, 0.0) / max(wall, 1e-9), 3)


# ---------------------------------------------------------------------------
# In-process measurements.

def bench_evaluation(size, spec, problem, pixels, repeats, remat_memory):
  """One evaluation: time, FLOP/s, XLA's FLOP and memory counts."""
  row = {'size': size, 'flops_per_evaluation': FLOPS_PER_PIXEL * size * size}
  t = time.perf_counter()
  compiled = optim.loss_and_grad_jit.lower(pixels, problem, spec).compile(
      xla_options())
  row['in_process_compile_s'] = time.perf_counter() - t
  cost = first_cost(compiled.cost_analysis())
  row['xla_flops'] = float(cost['flops']) if 'flops' in cost else None
  if row['xla_flops']:
    row['xla_over_analytic_flops'] = row['xla_flops'] / row[
        'flops_per_evaluation']
  row['xla_memory'] = memory_fields(compiled)
  other = OtherLoad()
  evaluation, times = median_time(lambda: compiled(pixels, problem), repeats)
  row['evaluation_other_processes_cores'] = other.cores()
  row['evaluation_s'] = evaluation
  row['evaluation_times_s'] = times
  if xla_options():  # The same program with XLA's default options.
    default = optim.loss_and_grad_jit.lower(pixels, problem, spec).compile()
    row['evaluation_xla_defaults_s'], _ = median_time(
        lambda: default(pixels, problem), repeats)
  faults = minor_faults()
  jax.block_until_ready(compiled(pixels, problem))
  row['minor_page_faults_per_evaluation'] = minor_faults() - faults
  row['gflops_per_s'] = row['flops_per_evaluation'] / evaluation / 1e9
  value, grad = compiled(pixels, problem)
  row['loss_at_content'] = float(value)
  row['grad_norm_at_content'] = float(jnp.linalg.norm(grad))
  # The forward pass alone (what a chunk adds at its end for logging).
  forward = jax.jit(losses.total_loss, static_argnames=('spec',)).lower(
      pixels, problem.variables, problem.targets, problem.weights,
      spec).compile(xla_options())
  row['forward_s'], _ = median_time(
      lambda: forward(pixels, problem.variables, problem.targets,
                      problem.weights), 2)
  row['forward_over_evaluation'] = row['forward_s'] / evaluation
  if remat_memory:
    remat = optim.loss_and_grad_jit.lower(
        pixels, problem, dataclasses.replace(spec, remat=True)).compile(
            xla_options())
    row['xla_memory_remat'] = memory_fields(remat)
  return row, compiled


def minor_faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bench_steps(name, spec, problem, pixels, steps, evaluate, rounds):
  """Times compiled chunks of `steps` steps of optimiser `name`.

  `rounds` chunks, each between two timed evaluations (evaluation, chunk,
  evaluation, chunk, ..., evaluation); each round's ratio compares its steps
  to the mean of the two evaluations around it, and the median ratio is
  reported, so a load that drifts during the run affects both sides alike.
  """
  lr = jnp.asarray(LEARNING_RATES[name], jnp.float32)
  criteria = optim.stop_criteria(10**9)
  t = time.perf_counter()
  init = optim.init_state_jit.lower(pixels, problem, spec, name, lr).compile(
      xla_options())
  state = init(pixels, problem, lr)
  chunk = optim.run_chunk.lower(state, problem, spec, name, lr, criteria,
                                steps).compile(xla_options())
  in_process_compile = time.perf_counter() - t
  # Warm-up: the same program, one step (the rest are skipped no-ops).
  state, _, _ = jax.block_until_ready(
      chunk(state, problem, lr, optim.stop_criteria(1)))
  state = state.replace(stop_reason=jnp.asarray(optim.RUNNING, jnp.int32))
  other = OtherLoad()
  evaluation_prev, _ = timed(evaluate)
  step_times, ratios, per_eval_ratios, locals_ = [], [], [], []
  total_steps = total_evaluations = faults = 0
  for _ in range(rounds):
    evaluations0, step0 = int(state.evaluations), int(state.step)
    faults0 = minor_faults()
    elapsed, (state, values, _) = timed(
        lambda state=state: chunk(state, problem, lr, criteria))
    faults += minor_faults() - faults0
    evaluation_next, _ = timed(evaluate)
    done = int(state.step) - step0
    spent = int(state.evaluations) - evaluations0
    if done == 0:
      break
    local = (evaluation_prev + evaluation_next) / 2
    evaluation_prev = evaluation_next
    total_steps += done
    total_evaluations += spent
    step_times.append(elapsed / done)
    locals_.append(local)
    ratios.append(elapsed / done / local)
    per_eval_ratios.append(elapsed / max(spent, 1) / local)
  median = lambda xs: float(np.median(xs)) if xs else float('nan')
  return {
      'rounds': len(ratios), 'steps': total_steps,
      'evaluations': total_evaluations, 'chunk_steps': steps,
      'step_s': median(step_times), 'step_times_s': step_times,
      'evaluations_per_step': total_evaluations / max(total_steps, 1),
      'local_evaluation_s': median(locals_),
      'step_over_evaluation': median(ratios),
      'step_over_evaluation_rounds': ratios,
      'per_evaluation_over_evaluation': median(per_eval_ratios),
      'minor_page_faults_per_step': faults / max(total_steps, 1),
      'in_process_compile_s': in_process_compile,
      'stop_reason': optim.STOP_REASONS[int(state.stop_reason)],
      'final_loss': float(values[-1]),
      'other_processes_cores': other.cores(),
  }


def auto_rounds(size, requested):
  if requested > 0:
    return requested
  return 3 if size <= 128 else 2 if size <= 256 else 1


def bench_size(size, optimizers, repeats, steps, rounds=1,
               remat_memory=True):
  spec, problem, pixels, _ = make_problem(size)
  row, compiled = bench_evaluation(size, spec, problem, pixels, repeats,
                                   remat_memory)
  row['conv_algorithm'] = spec.conv_algorithm
  if spec.conv_algorithm != 'direct':  # The same with lax convolutions.
    direct_spec, direct_problem, _, _ = make_problem(size,
                                                     conv_algorithm='direct')
    direct = optim.loss_and_grad_jit.lower(pixels, direct_problem,
                                           direct_spec).compile(xla_options())
    row['evaluation_direct_s'], _ = median_time(
        lambda: direct(pixels, direct_problem), len(row['evaluation_times_s']))
    del direct, direct_problem
  evaluate = lambda: compiled(pixels, problem)
  row['steps'] = {}
  for name in optimizers:
    result = bench_steps(name, spec, problem, pixels, steps, evaluate,
                         rounds)
    row['steps'][name] = result
    print(f'  {size} px {name}: {1000 * result["step_s"]:.0f} ms/step, '
          f'{result["evaluations_per_step"]:.2f} evaluations/step, '
          f'{result["step_over_evaluation"]:.3f} x evaluation',
          file=sys.stderr, flush=True)
  return row


# ---------------------------------------------------------------------------
# Fresh processes: compile time, memory, PyTorch, time to quality.

def run_child(args, timeout=3600):
  """Runs this script with internal `args`; returns its last stdout line as
  JSON plus 'process_wall_s', or {'error': ...}."""
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  cmd = [sys.executable, os.path.abspath(__file__)] + list(args)
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s: {" ".join(args)}'}
  wall = time.perf_counter() - start
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    return {'error': f'exit {proc.returncode}: '
                     + proc.stderr.strip()[-1500:]}
  result = json.loads(lines[-1])
  result['process_wall_s'] = wall
  return result


def configure_cache(cache_dir):
  """Persistent compilation cache in `cache_dir`, or none at all."""
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  else:
    jax.config.update('jax_enable_compilation_cache', False)


def compile_only(size, optimizers, steps):
  """Child: lowers and compiles the evaluation and each optimiser's init
  and chunk functions from shapes only; seconds of each."""
  spec, problem, pixels = abstract_problem(size)
  lr = jnp.asarray(1.0, jnp.float32)
  criteria = optim.stop_criteria(10**9)
  result = {'size': size, 'imports_s': _IMPORTED - _PROCESS_START,
            'optimizers': {}}
  t = time.perf_counter()
  optim.loss_and_grad_jit.lower(pixels, problem, spec).compile(xla_options())
  result['evaluation_s'] = time.perf_counter() - t
  for name in optimizers:
    t = time.perf_counter()
    optim.init_state_jit.lower(pixels, problem, spec, name, lr).compile(
        xla_options())
    init_s = time.perf_counter() - t
    state = jax.eval_shape(
        lambda p, pr, l, name=name: optim.init_state(p, pr, spec, name, l),
        pixels, problem, lr)
    t = time.perf_counter()
    optim.run_chunk.lower(state, problem, spec, name, lr, criteria,
                          steps).compile(xla_options())
    result['optimizers'][name] = {'init_s': init_s,
                                  'chunk_s': time.perf_counter() - t}
    result['optimizers'][name]['total_s'] = (
        init_s + result['optimizers'][name]['chunk_s'])
  result['total_s'] = result['evaluation_s'] + sum(
      r['total_s'] for r in result['optimizers'].values())
  return result


def bench_compile(size, optimizers, steps, cache):
  """Cold then warm compile in fresh processes sharing the cache dir `cache`
  (which holds nothing of this size yet)."""
  common = ['--compile-only', f'--sizes={size}',
            f'--optimizers={",".join(optimizers)}',
            f'--steps={steps}', f'--cache-dir={cache}']
  before = len(os.listdir(cache))
  other = OtherLoad()
  cold = run_child(common)
  cold['other_processes_cores'] = other.cores()
  cold['cache_entries_written'] = len(os.listdir(cache)) - before
  other = OtherLoad()
  warm = run_child(common)
  warm['other_processes_cores'] = other.cores()
  return {'cold': cold, 'warm': warm}


def _proc_status_kib(field):
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    pass
  return None


# Peak memory. getrusage's ru_maxrss is the brief's first choice, but on
# Linux a child process inherits its parent's peak through fork + exec (the
# old address space's high-water mark is kept at exec), so in a child spawned
# by this benchmark it is at least this process's peak: an upper bound only.
# /proc/self/status VmHWM belongs to the child's own address space and is the
# number reported; ru_maxrss is recorded beside it.

def _peaks():
  return {'vmhwm_kib': _proc_status_kib('VmHWM'),
          'ru_maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def memory_baseline():
  """Child: peak RSS with this script's imports (jax, flax, optax,
  nst_jax) after starting the CPU backend (for information)."""
  jax.block_until_ready(jnp.zeros(()))
  return _peaks()


JAX_ONLY_BASELINE = (
    'import json, resource, jax, jax.numpy as jnp\n'
    'jax.block_until_ready(jnp.zeros(()))\n'
    'hwm = [int(l.split()[1]) for l in open("/proc/self/status")\n'
    '       if l.startswith("VmHWM:")]\n'
    'print(json.dumps({"vmhwm_kib": hwm[0] if hwm else None, "ru_maxrss_kib":'
    ' resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n')


def jax_only_baseline():
  """Peak RSS of a fresh process that only imported jax and started its CPU
  backend."""
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, '-c', JAX_ONLY_BASELINE],
                        capture_output=True, text=True, cwd=REPO,
                        check=False)
  if proc.returncode != 0:
    return {'error': proc.stderr.strip()[-1500:]}
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result['process_wall_s'] = time.perf_counter() - start
  return result


def memory_only(size, remat=False, row_shards=1):
  """Child: build the problem, compile and run one evaluation at `size`;
  the peak RSS after each phase, and during the evaluation alone. With
  `row_shards` > 1: that many simulated CPU devices, the image's rows split
  over them (as `shard_rows` does), and XLA's bytes per device."""
  if row_shards > 1:
    jax.config.update('jax_num_cpu_devices', row_shards)
  # As nst_jax.run: shard_rows means direct convolutions.
  spec, problem, pixels, _ = make_problem(
      size, remat=remat,
      conv_algorithm=conv_algorithm_for(shard_rows=row_shards > 1))
  if row_shards > 1:
    mesh = jax.make_mesh((row_shards,), ('rows',),
                         axis_types=(jax.sharding.AxisType.Auto,))
    pixels = jax.device_put(pixels, jax.NamedSharding(mesh, jax.P('rows')))
    problem = jax.device_put(problem, jax.NamedSharding(mesh, jax.P()))
  jax.block_until_ready(problem)
  result = {'size': size, 'remat': remat, 'row_shards': row_shards,
            'after_setup': _peaks()}
  compiled = optim.loss_and_grad_jit.lower(pixels, problem, spec).compile(
      xla_options())
  result['xla'] = memory_fields(compiled)
  result['after_compile'] = _peaks()
  result['rss_before_evaluation_kib'] = _proc_status_kib('VmRSS')
  try:  # Linux >= 4.0: reset VmHWM to the current RSS.
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    reset = True
  except OSError:
    reset = False
  jax.block_until_ready(compiled(pixels, problem))
  result['after_evaluation'] = _peaks()
  result['vmhwm_reset_before_evaluation'] = reset
  return result


def bench_startup(runs=3, iterations=10, conv_algorithm='auto'):
  """Seconds from launching `python -m nst_jax.main` to its first
  optimisation step, at 128 px from PNG files and a weights file (as a user
  runs it), in fresh processes sharing a new cache folder: the first fills
  it (traces and compiles), the others load the compiled programs from
  it."""
  cache = tempfile.mkdtemp(prefix='nst_jax_startup_cache_')
  out = tempfile.mkdtemp(prefix='nst_jax_startup_out_')
  rows = []
  try:
    content, style, _ = content_and_style(128)
    paths = {}
    for name, pixels in (('content', content), ('style', style)):
      paths[name] = os.path.join(out, f'{name}.png')
      nst_images.save_image(paths[name], pixels)
    weights = os.path.join(out, 'weights.npz')
    subprocess.run([sys.executable, '-m', 'nst_jax.weights', 'random',
                    f'--seed={WEIGHTS_SEED}', weights], cwd=REPO, check=True,
                   capture_output=True)
    for index in range(runs):
      output = os.path.join(out, f'run{index}.png')
      launched = time.time()
      proc = subprocess.run(
          [sys.executable, '-m', 'nst_jax.main',
           '--config=configs/default.py', f'--config.content={paths["content"]}',
           f'--config.style={paths["style"]}', f'--config.weights={weights}',
           '--config.image_size=128', '--config.init=content',
           f'--config.iterations={iterations}',
           f'--config.compilation_cache={cache}',
           f'--config.conv_algorithm={conv_algorithm}',
           f'--config.output={output}'],
          cwd=REPO, capture_output=True, text=True, check=False,
          env=dict(os.environ, NST_JAX_OFFLINE='1'))
      if proc.returncode != 0:
        rows.append({'error': proc.stderr.strip()[-1500:]})
        continue
      with open(os.path.splitext(output)[0] + '.json') as f:
        manifest = json.load(f)
      timing = manifest['timing']
      rows.append({
          'launch_to_loop_s': timing['loop_start_unix'] - launched,
          'run_to_loop_s': timing['start_to_loop_s'],
          'compile_s': timing['compile_s'],
          'conv_algorithm': manifest['device'].get('conv_algorithm'),
          'programs': manifest['programs']})
  finally:
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
  return rows


def bench_layers(size, repeats=5):
  """Per convolution layer of VGG19 up to conv5_1 for a `size` px image:
  forward + input gradient (the ReLU'd output against a random cotangent),
  direct and with each Winograd tile, and the tile `vgg.winograd_tile`
  picks. The basis of that rule."""
  from nst_jax import winograd  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rows = []
  for name in vgg.CONV_LAYERS[:vgg.CONV_LAYERS.index('conv5_1') + 1]:
    side = size // 2 ** (int(name[4]) - 1)
    cin, cout = vgg.CONV_SHAPES[name]
    x = jnp.asarray(rng.normal(size=(1, side, side, cin)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout))
                         * np.sqrt(2 / (9 * cin)), jnp.float32)
    bias = jnp.zeros((cout,), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(1, side, side, cout)),
                            jnp.float32)
    flipped = vgg.flip_kernel(kernel)
    row = {'layer': name, 'side': side, 'channels': [cin, cout],
           'picked': vgg.winograd_tile(side, side, cin, cout) or 'direct'}
    candidates = {'direct': (lambda x, k, b, f: vgg.conv_relu(x, k, b, f),
                             (kernel, bias, flipped))}
    if cin >= 16:
      for tile in winograd.TILES:
        candidates[tile] = (vgg.winograd_conv_relu, (
            kernel, bias, winograd.transform_kernel(kernel, tile),
            winograd.transform_kernel(flipped, tile)))
    for label, (fn, args) in candidates.items():
      grad = jax.jit(jax.grad(
          lambda x, *args, fn=fn: jnp.vdot(fn(x, *args), cotangent)),
                     compiler_options=xla_options())
      seconds, _ = median_time(lambda grad=grad, args=args: grad(x, *args),
                               repeats)
      row[f'{label}_s'] = seconds
    rows.append(row)
  return {'size': size, 'layers': rows}


def print_layers_table(results):
  for result in results:
    print()
    print(f'Per layer at {result["size"]} px (forward + input gradient; '
          '`--layer-sizes`):')
    print()
    print('| layer | map | channels | direct | F(2x2) | F(4x4) | picked |')
    print('|---|---|---|---|---|---|---|')
    for row in result['layers']:
      print(f'| {row["layer"]} | {row["side"]} | {row["channels"][0]} → '
            f'{row["channels"][1]} | {_fmt_ms(row.get("direct_s"))} | '
            f'{_fmt_ms(row.get("F2_s"))} | {_fmt_ms(row.get("F4_s"))} | '
            f'{row["picked"]} |')


def _fmt_ms(seconds):
  return '-' if seconds is None else f'{1000 * seconds:.2f} ms'


def bench_memory_sizes(sizes, row_shards=4):
  """Peak memory of one evaluation at each size, with and without remat,
  and XLA's bytes per device with the rows split over `row_shards`
  simulated devices; each in a fresh process."""
  baseline = jax_only_baseline()
  rows = []
  for size in sizes:
    for remat, shards in ((False, 1), (True, 1), (False, row_shards)):
      print(f'memory {size} px remat={remat} shards={shards} ...',
            file=sys.stderr, flush=True)
      extra = ['--remat'] if remat else []
      if shards > 1:
        extra.append(f'--row-shards={shards}')
      row = bench_memory(size, baseline, extra)
      row.update(size=size, remat=remat, row_shards=shards)
      rows.append(row)
  return {'baseline': baseline, 'rows': rows}


def bench_memory(size, baseline, extra=()):
  """Peak RSS of a fresh process doing one evaluation at `size`, minus the
  jax-only `baseline` (MiB)."""
  child = run_child(['--memory-only', f'--sizes={size}', *extra])
  if 'error' in child:
    return child
  mib = lambda kib: None if kib is None else kib / 1024
  setup, compiled, evaluated = (child['after_setup'], child['after_compile'],
                                child['after_evaluation'])
  out = {'child': child}
  if baseline.get('vmhwm_kib') and setup.get('vmhwm_kib'):
    base = baseline['vmhwm_kib']
    # Without the reset, VmHWM after the evaluation is the whole process's.
    peak = max(compiled['vmhwm_kib'], evaluated['vmhwm_kib'])
    out.update({
        'method': 'VmHWM (/proc/self/status) of the child minus that of a '
                  'process that only imported jax',
        'baseline_mib': mib(base),
        'peak_rss_minus_baseline_mib': mib(peak - base),
        'after_setup_minus_baseline_mib': mib(setup['vmhwm_kib'] - base),
        'after_compile_minus_baseline_mib': mib(compiled['vmhwm_kib'] - base),
    })
    if child['vmhwm_reset_before_evaluation']:
      out['evaluation_peak_rss_mib'] = mib(evaluated['vmhwm_kib'])
      out['evaluation_peak_over_rss_before_mib'] = mib(
          evaluated['vmhwm_kib'] - child['rss_before_evaluation_kib'])
  else:  # No /proc: ru_maxrss, an upper bound (see above).
    out.update({
        'method': 'ru_maxrss minus that of a process that only imported jax '
                  '(upper bound: includes the parent\'s peak)',
        'baseline_mib': mib(baseline['ru_maxrss_kib']),
        'peak_rss_minus_baseline_mib': mib(evaluated['ru_maxrss_kib']
                                           - baseline['ru_maxrss_kib'])})
  out['ru_maxrss_mib_upper_bound'] = mib(evaluated['ru_maxrss_kib'])
  return out


def torch_available():
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def default_threads():
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def torch_evaluation_child(size, repeats, threads):
  """Child: one PyTorch evaluation at `size` (see torch_reference)."""
  from scripts import torch_reference  # pylint: disable=g-import-not-at-top
  content, style, _ = content_and_style(size)
  first = torch_reference.evaluation(random_params(), content, style, 1,
                                     threads)
  return torch_reference.evaluation(
      random_params(), content, style,
      auto_repeats(first['evaluation_s'], repeats), threads)


def torch_lbfgs_child(size, evaluations, threads):
  from scripts import torch_reference  # pylint: disable=g-import-not-at-top
  content, style, _ = content_and_style(size)
  return torch_reference.lbfgs(random_params(), content, style, evaluations,
                               threads)


def compile_loop(spec, problem, pixels, name, lr, criteria, chunk_size):
  """AOT-compiled (init, chunk) functions of optimiser `name`."""
  init = optim.init_state_jit.lower(pixels, problem, spec, name, lr).compile(
      xla_options())
  abstract_state = jax.eval_shape(
      lambda p, pr, l: optim.init_state(p, pr, spec, name, l), pixels,
      problem, lr)
  chunk = optim.run_chunk.lower(abstract_state, problem, spec, name, lr,
                                criteria, chunk_size).compile(xla_options())
  return init, chunk


def run_until_stopped(chunk, state, problem, lr, criteria, clock_start,
                      curve=None):
  """Runs chunks until `state` stops; after each appends (evaluations,
  seconds since `clock_start`, loss) to `curve` if given."""
  while int(state.stop_reason) == optim.RUNNING:
    state, _, _ = chunk(state, problem, lr, criteria)
    if curve is not None:
      curve.append((int(state.evaluations), time.perf_counter() - clock_start,
                    float(state.value)))
  return state


def ttq_jax_child(name, size, stop_loss, max_steps, chunk_size):
  """Child (fresh process, no persistent cache): nst_jax optimiser `name`
  from the content image until the loss is <= stop_loss."""
  if name == 'lbfgs_nols_c2f':
    return coarse_to_fine_to(size, stop_loss, None, coarse_steps=100,
                             max_steps=max_steps, chunk_size=chunk_size)
  t0 = time.perf_counter()
  spec, problem, pixels, _ = make_problem(size)
  jax.block_until_ready(problem)
  setup_s = time.perf_counter() - t0
  lr = jnp.asarray(LEARNING_RATES[name], jnp.float32)
  criteria = optim.stop_criteria(max_steps, stop_loss=stop_loss)
  t1 = time.perf_counter()
  init, chunk = compile_loop(spec, problem, pixels, name, lr, criteria,
                             chunk_size)
  t2 = time.perf_counter()
  state = init(pixels, problem, lr)
  curve = [(int(state.evaluations), 0.0, float(state.value))]
  state = run_until_stopped(chunk, state, problem, lr, criteria, t2, curve)
  t3 = time.perf_counter()
  reason = optim.STOP_REASONS[int(state.stop_reason)]
  return {'optimizer': name, 'reached': reason == 'stop_loss',
          'stop_reason': reason, 'evaluations': int(state.evaluations),
          'steps': int(state.step), 'final_loss': float(state.value),
          'setup_s': setup_s, 'compile_s': t2 - t1, 'optimize_s': t3 - t2,
          'optimize_incl_compile_s': t3 - t1, 'chunk_size': chunk_size,
          'lbfgs_memory': optim.LBFGS_MEMORY, 'curve': curve}


def coarse_to_fine_to(size, target, torch_s=None, coarse_steps=100,
                      max_steps=2000, chunk_size=10):
  """lbfgs_nols: `coarse_steps` at size/2 from the half-size content, then
  the upsampled result at full size until the loss reaches `target`."""
  lr = jnp.asarray(1.0, jnp.float32)
  t0 = time.perf_counter()
  spec, coarse_problem, coarse_start, _ = make_problem(size // 2)
  spec, problem, start, _ = make_problem(size)
  setup_s = time.perf_counter() - t0

  coarse_criteria = optim.stop_criteria(coarse_steps)
  fine_criteria = optim.stop_criteria(max_steps, stop_loss=target)
  t1 = time.perf_counter()
  coarse_init, coarse_chunk = compile_loop(
      spec, coarse_problem, coarse_start, 'lbfgs_nols', lr, coarse_criteria,
      chunk_size)
  fine_init, fine_chunk = compile_loop(spec, problem, start, 'lbfgs_nols', lr,
                                       fine_criteria, chunk_size)
  t2 = time.perf_counter()
  state = run_until_stopped(coarse_chunk,
                            coarse_init(coarse_start, coarse_problem, lr),
                            coarse_problem, lr, coarse_criteria, t2)
  coarse_evaluations = int(state.evaluations)
  if nst_images is not None and hasattr(nst_images, 'resize'):
    upsampled = nst_images.resize(np.asarray(state.pixels), (size, size))
  else:
    upsampled = jax.image.resize(state.pixels, (size, size, 3), 'lanczos3')
  upsampled = jnp.asarray(upsampled)
  state = fine_init(upsampled, problem, lr)
  curve = [(int(state.evaluations), time.perf_counter() - t2,
            float(state.value))]
  state = run_until_stopped(fine_chunk, state, problem, lr, fine_criteria, t2,
                            curve)
  t3 = time.perf_counter()
  reason = optim.STOP_REASONS[int(state.stop_reason)]
  result = {'optimizer': 'lbfgs_nols_c2f', 'reached': reason == 'stop_loss',
            'stop_reason': reason, 'coarse_size': size // 2,
            'coarse_evaluations': coarse_evaluations,
            'evaluations': int(state.evaluations),
            'steps': int(state.step), 'final_loss': float(state.value),
            'setup_s': setup_s, 'compile_s': t2 - t1, 'optimize_s': t3 - t2,
            'optimize_incl_compile_s': t3 - t1, 'chunk_size': chunk_size,
            'curve': curve}
  if torch_s:
    result['optimize_over_torch'] = result['optimize_s'] / torch_s
  return result


def time_to_quality(size, evaluations, threads, chunk_size):
  print(f'time to quality at {size} px: torch.optim.LBFGS, {evaluations} '
        'evaluations ...', file=sys.stderr, flush=True)
  other = OtherLoad()
  torch_run = run_child(['--ttq-torch', f'--ttq-size={size}',
                         f'--ttq-evaluations={evaluations}',
                         f'--torch-threads={threads}'])
  if 'error' in torch_run:
    return {'error': torch_run['error']}
  torch_run['other_processes_cores'] = other.cores()
  target = torch_run['final_loss']
  result = {'size': size, 'torch_evaluations': evaluations,
            'target_loss': target, 'torch': torch_run, 'jax': {}}
  for name in ('lbfgs', 'lbfgs_nols', 'lbfgs_nols_c2f'):
    print(f'  nst_jax {name} to loss {target:.6g} ...', file=sys.stderr,
          flush=True)
    other = OtherLoad()
    run = run_child([f'--ttq-jax={name}', f'--ttq-size={size}',
                     f'--stop-loss={target!r}',
                     f'--max-steps={3 * evaluations}',
                     f'--ttq-chunk={chunk_size}'])
    if 'error' not in run:
      run['optimize_over_torch'] = run['optimize_s'] / torch_run['seconds']
      run['incl_compile_over_torch'] = (run['optimize_incl_compile_s']
                                        / torch_run['seconds'])
      run['evaluations_over_torch'] = run['evaluations'] / torch_run[
          'evaluations']
    run['other_processes_cores'] = other.cores()
    result['jax'][name] = run
  return result


def bench_sweep(size, members, steps):
  """K members as one program (map and vmap) vs one run, per optimiser."""
  spec, problem, pixels, _ = make_problem(size, normalization='invariant',
                                          style_weight=1e-3)
  stack = lambda tree: jax.tree_util.tree_map(
      lambda x: jnp.stack([x] * members), tree)
  results = {}
  for name in optim.OPTIMIZERS:
    lr = jnp.asarray(LEARNING_RATES[name] * (1e6 if name == 'sgd' else 1),
                     jnp.float32)
    criteria = optim.stop_criteria(10**9)
    single = lambda: optim.run_chunk(
        optim.init_state_jit(pixels, problem, spec, name, lr), problem, spec,
        name, lr, criteria, steps)
    one, _ = median_time(single, 2)
    results[name] = {'one_run_s': one}
    for mode in optim.SWEEP_MODES:
      batched = optim.Problem(problem.variables, stack(problem.targets),
                              jax.tree_util.tree_map(
                                  lambda x: x * jnp.ones((members,) + x.shape),
                                  problem.weights))

      def sweep(mode=mode, batched=batched):
        state = optim.init_state_batched_jit(
            stack(pixels), batched, spec, name, stack(lr), mode)
        return optim.run_chunk_batched_jit(
            state, batched, spec, name, stack(lr), stack(criteria),
            steps, mode)
      results[name][f'{mode}_over_k_runs'] = median_time(sweep, 2)[0] / (
          members * one)
  return results


def machine():
  model = ''
  memory = None
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal'):
          memory = int(line.split()[1]) / 2**20
          break
  except OSError:
    pass
  info = {'cpu': model or platform.processor(), 'cores': os.cpu_count(),
          'cores_available': default_threads(), 'memory_gib': memory,
          'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
          'python': platform.python_version(), 'numpy': np.__version__,
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'compiler_options': xla_options(),
          'lbfgs_memory': optim.LBFGS_MEMORY}
  for module in ('jaxlib', 'flax', 'optax'):
    try:
      info[module] = __import__(module).__version__
    except (ImportError, AttributeError):
      pass
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info['torch'] = torch.__version__
  except ImportError:
    pass
  return info


# ---------------------------------------------------------------------------
# Report.

def _fmt_s(seconds):
  if seconds is None:
    return '-'
  return f'{1000 * seconds:.0f} ms' if seconds < 10 else f'{seconds:.1f} s'


def _fmt_ratio(r):
  text = f'{r["step_over_evaluation"]:.3f}'
  rounds = r.get('step_over_evaluation_rounds') or []
  if len(rounds) > 1:
    text += f' ({min(rounds):.2f}-{max(rounds):.2f})'
  return text


def _fmt_load(cores):
  return '-' if cores is None else f'{cores:.2f}'


def print_memory_table(memory):
  """The --memory-sizes table."""
  mib = lambda b: '-' if b is None else f'{b / 2**20:.0f}'
  print()
  print('Peak memory of one evaluation (fresh process per row; peak RSS = '
        'VmHWM minus a process that only imported jax, so it includes '
        'compiling and the 160 MB of weights; RSS rise = VmHWM during the '
        'evaluation alone minus RSS before it; XLA = `memory_analysis()`, '
        'per device; rows split over simulated CPU devices are measured by '
        'XLA only):')
  print()
  print('| size | remat | devices (rows split) | peak RSS − baseline MiB | '
        'RSS rise during the evaluation MiB | XLA temp MiB per device | '
        'XLA temp+args MiB per device |')
  print('|---|---|---|---|---|---|---|')
  for row in memory['rows']:
    child = row.get('child') or {}
    xla = child.get('xla') or {}
    peak = row.get('peak_rss_minus_baseline_mib')
    rise = row.get('evaluation_peak_over_rss_before_mib')
    print(f'| {row["size"]} | {"yes" if row["remat"] else "no"} | '
          f'{row["row_shards"]} | '
          f'{"-" if peak is None or row["row_shards"] > 1 else f"{peak:.0f}"}'
          f' | {"-" if rise is None or row["row_shards"] > 1 else f"{rise:.0f}"}'
          f' | {mib(xla.get("temp_size_in_bytes"))} | '
          f'{mib(xla.get("temp_plus_argument_plus_output_bytes"))} |')


def print_startup_table(rows):
  print()
  print('Start-up: `python -m nst_jax.main` at 128 px (PNG content and '
        'style, a converted weights file, init=content) in a fresh process, '
        'from launch to its first optimisation step; run 1 fills a new cache '
        'folder, the others read it:')
  print()
  print('| run | convolutions | launch → first step | of which in run() | '
        'waiting for init and chunk programs | programs loaded / '
        'traced |')
  print('|---|---|---|---|---|---|')
  for index, row in enumerate(rows):
    if 'error' in row:
      print(f'| {index + 1} | error: {row["error"][:100]} | | | | |')
      continue
    print(f'| {row.get("run", index + 1)} | '
          f'{row.get("conv_algorithm") or "direct"} | '
          f'{row["launch_to_loop_s"]:.2f} s | '
          f'{row["run_to_loop_s"]:.2f} s | {row["compile_s"]:.2f} s | '
          f'{row["programs"]["loaded"]} / {row["programs"]["traced"]} |')


def print_table(report):
  if report.get('layers'):
    print_layers_table(report['layers'])
  if report.get('startup'):
    print_startup_table(report['startup'])
  if report.get('memory_by_size'):
    print_memory_table(report['memory_by_size'])
  if not report.get('sizes'):
    print_extras(report)
    return
  m = report['machine']
  print(f'Machine: {m["cpu"]}, {m["cores"]} cores, {m.get("memory_gib", 0):.0f}'
        f' GiB; jax {m["jax"]}' + (f', torch {m["torch"]}' if 'torch' in m
                                    else '')
        + f'; load average {report["load_average_start"][0]:.2f} at start, '
        f'{report["load_average_end"][0]:.2f} at end.')
  print(f'FLOPs per evaluation = {FLOPS_FORMULA}.')
  print()
  print('One evaluation (loss + gradient w.r.t. the pixels, VGG19 to conv5_1,'
        ' 5 style + 1 content layers, float32):')
  print()
  print('| size | JAX | JAX, direct convolutions | JAX, XLA\'s default '
        'options | GFLOP/s | '
        'XLA FLOPs / analytic | PyTorch | '
        'PyTorch GFLOP/s | JAX / PyTorch | peak RSS − baseline | '
        'RSS rise in evaluation | XLA temp+arg+out (temp; remat temp) | '
        'other load JAX / PyTorch |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for row in report['sizes']:
    torch_row = row.get('torch') or {}
    mem = row.get('memory') or {}
    xla = row.get('xla_memory') or {}
    remat = row.get('xla_memory_remat') or {}
    mib = lambda b: f'{b / 2**20:.0f}' if b is not None else '-'
    cells = [
        f'{row["size"]}',
        f'{_fmt_s(row["evaluation_s"])} ({row.get("conv_algorithm", "direct")})',
        _fmt_s(row.get('evaluation_direct_s', row['evaluation_s'])),
        _fmt_s(row.get('evaluation_xla_defaults_s',
                       row.get('evaluation_default_scheduler_s'))),
        f'{row["gflops_per_s"]:.0f}',
        (f'{row["xla_over_analytic_flops"]:.3f}'
         if row.get('xla_over_analytic_flops') else '-'),
        _fmt_s(torch_row.get('evaluation_s')),
        (f'{row["flops_per_evaluation"] / torch_row["evaluation_s"] / 1e9:.0f}'
         if 'evaluation_s' in torch_row else '-'),
        f'{row["jax_over_torch"]:.2f}' if 'jax_over_torch' in row else '-',
        (f'{mem["peak_rss_minus_baseline_mib"]:.0f} MiB'
         if 'peak_rss_minus_baseline_mib' in mem else '-'),
        (f'{mem["evaluation_peak_over_rss_before_mib"]:.0f} MiB'
         if 'evaluation_peak_over_rss_before_mib' in mem else '-'),
        (f'{mib(xla.get("temp_plus_argument_plus_output_bytes"))} MiB '
         f'({mib(xla.get("temp_size_in_bytes"))}; '
         f'{mib(remat.get("temp_size_in_bytes"))})' if xla else '-'),
        f'{_fmt_load(row.get("evaluation_other_processes_cores"))} / '
        f'{_fmt_load(torch_row.get("other_processes_cores"))}']
    print('| ' + ' | '.join(cells) + ' |')
  baseline = report.get('memory_baseline') or {}
  baseline = baseline.get('vmhwm_kib') or baseline.get('ru_maxrss_kib')
  print()
  print('GFLOP/s: analytic FLOPs (of direct convolutions; Winograd\'s '
        'algorithm does fewer multiply-adds) / time. Peak RSS − baseline: peak RSS '
        '(VmHWM; getrusage\'s ru_maxrss would include this parent\'s peak) '
        'of a fresh process that builds the problem (weights, targets), compiles '
        'and runs one evaluation, minus that of a process that only imported '
        'jax and started its backend'
        + (f' ({baseline / 1024:.0f} MiB)' if baseline else '')
        + '; RSS rise in evaluation: its high-water mark during the '
        'evaluation alone minus its RSS before. XLA: '
        '`compiled.memory_analysis()` of the evaluation (arguments include '
        'the 80 MB of kernels, their pre-flipped copies up to conv5_1 and, '
        'with Winograd, their transforms); remat temp with '
        '`LossSpec(remat=True)`. Other load: CPU cores used by other '
        'processes meanwhile.')
  print()
  print('One optimisation step (compiled `run_chunk`; ratios to one '
        'evaluation timed around the chunk; compile = init + chunk, fresh '
        'process, cold / from the persistent cache):')
  print()
  print('| size | optimiser | step | evaluations / step | step / evaluation '
        '(range over rounds) | per evaluation / evaluation | '
        'compile cold / cached | other load |')
  print('|---|---|---|---|---|---|---|---|')
  for row in report['sizes']:
    compile_ = row.get('compile') or {}
    cold = (compile_.get('cold') or {}).get('optimizers', {})
    warm = (compile_.get('warm') or {}).get('optimizers', {})
    for name, r in row['steps'].items():
      c = (f'{cold[name]["total_s"]:.1f} s / {warm[name]["total_s"]:.1f} s'
           if name in cold and name in warm else '-')
      print(f'| {row["size"]} | {name} | {_fmt_s(r["step_s"])} | '
            f'{r["evaluations_per_step"]:.2f} | '
            f'{_fmt_ratio(r)} | '
            f'{r["per_evaluation_over_evaluation"]:.3f} | {c} | '
            f'{_fmt_load(r.get("other_processes_cores"))} |')
  chunk_steps = sorted({(row['size'], r.get('chunk_steps'))
                        for row in report['sizes']
                        for r in row['steps'].values()})
  print()
  print('Steps per timed chunk: ' + ', '.join(
      f'{n} at {size} px' for size, n in chunk_steps) + '. Every optimiser '
        'gets the loss terms for logging with its evaluations (no extra '
        'forward pass).')
  lines = []
  for row in report['sizes']:
    compile_ = row.get('compile') or {}
    if 'cold' in compile_ and 'evaluation_s' in compile_['cold'] and (
        'evaluation_s' in compile_.get('warm', {})):
      lines.append(
          f'{row["size"]} px {compile_["cold"]["evaluation_s"]:.1f} s / '
          f'{compile_["warm"]["evaluation_s"]:.1f} s (fresh process to '
          f'everything compiled: {compile_["cold"]["process_wall_s"]:.1f} s /'
          f' {compile_["warm"]["process_wall_s"]:.1f} s)')
    elif compile_:
      lines.append(f'{row["size"]} px: ' + '; '.join(
          f'{k}: {v.get("error", "")[:200]}' for k, v in compile_.items()
          if 'error' in v))
  if lines:
    print()
    print('Compile of the evaluation alone, cold / cached: ' + '; '.join(lines)
          + '.')
  print_extras(report)


def print_extras(report):
  """The sweep and time-to-quality tables (also without per-size rows)."""
  if report.get('sweep_64px_4_members'):
    print()
    print('| optimiser | 4-member sweep / 4 runs (map) | (vmap) |')
    print('|---|---|---|')
    for name, r in report['sweep_64px_4_members'].items():
      print(f'| {name} | {r["map_over_k_runs"]:.2f} | '
            f'{r["vmap_over_k_runs"]:.2f} |')
  q = report.get('time_to_quality')
  if q and 'error' not in q:
    t = q['torch']
    print()
    print(f'Time to quality at {q["size"]} px from the content image (paper '
          f'loss, alpha 1, beta 1e3): torch.optim.LBFGS (history '
          f'{t["history_size"]}, lr 1, no line search) reaches loss '
          f'{q["target_loss"]:.6g} after {t["evaluations"]} evaluations in '
          f'{t["seconds"]:.1f} s; nst_jax with that loss as `stop_loss` '
          f'(L-BFGS memory {report["machine"]["lbfgs_memory"]}):')
    print()
    print('| run | reached | evaluations | steps | optimise | per evaluation '
          '| + compile | vs PyTorch (excl. / incl. compile) | other load |')
    print('|---|---|---|---|---|---|---|---|---|')
    print(f'| torch.optim.LBFGS | - | {t["evaluations"]} | - | '
          f'{t["seconds"]:.1f} s | '
          f'{1000 * t["seconds"] / t["evaluations"]:.0f} ms | - | 1 | '
          f'{_fmt_load(t.get("other_processes_cores"))} |')
    labels = {'lbfgs': 'nst_jax lbfgs (strong Wolfe line search)',
              'lbfgs_nols': 'nst_jax lbfgs_nols',
              'lbfgs_nols_c2f': 'nst_jax lbfgs_nols, 100 steps at half size '
                                'first'}
    for name, r in q['jax'].items():
      if 'error' in r:
        print(f'| {labels[name]} | error: {r["error"][:100]} | | | | | | | |')
        continue
      evaluations = str(r['evaluations'])
      if 'coarse_evaluations' in r:
        evaluations += f' (+{r["coarse_evaluations"]} at {r["coarse_size"]} px)'
      per_evaluation = r['optimize_s'] / max(
          r['evaluations'] + r.get('coarse_evaluations', 0), 1)
      print(f'| {labels[name]} | {"yes" if r["reached"] else "no"} | '
            f'{evaluations} | {r["steps"]} | {r["optimize_s"]:.1f} s | '
            f'{1000 * per_evaluation:.0f} ms | '
            f'{r["compile_s"]:.1f} s | {r["optimize_over_torch"]:.2f} / '
            f'{r["incl_compile_over_torch"]:.2f} | '
            f'{_fmt_load(r.get("other_processes_cores"))} |')
    curve = t.get('curve') or []
    if len(curve) >= 10:
      earlier = curve[int(0.9 * len(curve)) - 1]
      print()
      print(f'Near the target the loss falls slowly (PyTorch: '
            f'{earlier[2]:.6g} after {earlier[0]} evaluations, '
            f'{curve[-1][2]:.6g} after {curve[-1][0]}, '
            f'{100 * (earlier[2] / curve[-1][2] - 1):.2f}% apart), so the '
            'evaluations needed to reach it move by tens with rounding '
            'differences; the per-evaluation time is the steadier '
            'comparison. Loss curves are in the JSON file.')
  elif q:
    print(f'\nTime to quality: {q["error"]}')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[1:]))
  parser.add_argument('--sizes', default='128,256,512',
                      help='comma-separated square image sizes')
  parser.add_argument('--optimizers', default=','.join(optim.OPTIMIZERS))
  parser.add_argument('--repeats', type=int, default=0,
                      help='timed evaluations per size (0: automatic, 3-9)')
  parser.add_argument('--steps', type=int, default=0,
                      help='steps per timed chunk (0: 10 up to 256 px, 5 at '
                           '512, 3 above)')
  parser.add_argument('--rounds', type=int, default=0,
                      help='timed chunks per optimiser, each between two '
                           'timed evaluations (0: 3 at 128 px, 2 at 256, 1 '
                           'above)')
  parser.add_argument('--no-torch', '--no_torch', dest='no_torch',
                      action='store_true', help='skip PyTorch')
  parser.add_argument('--torch-threads', type=int, default=default_threads(),
                      help='torch.set_num_threads (default: the cores '
                           'available, as XLA uses)')
  parser.add_argument('--skip-compile', '--skip_compile', dest='skip_compile',
                      action='store_true')
  parser.add_argument('--skip-memory', '--skip_memory', dest='skip_memory',
                      action='store_true')
  parser.add_argument('--time-to-quality', '--time_to_quality',
                      dest='time_to_quality', action='store_true')
  parser.add_argument('--ttq-size', type=int, default=128)
  parser.add_argument('--ttq-evaluations', type=int, default=300)
  parser.add_argument('--ttq-chunk', type=int, default=10)
  parser.add_argument('--sweep', action='store_true',
                      help='4 members at 64 px vs 4 single runs')
  parser.add_argument('--startup', action='store_true',
                      help='launch-to-first-step of the demo config in '
                           'fresh processes: cold, then from the caches')
  parser.add_argument('--layer-sizes', default='',
                      help='e.g. 128,256: each convolution layer timed '
                           'direct and with each Winograd tile (the basis '
                           'of vgg.winograd_tile)')
  parser.add_argument('--memory-sizes', default='',
                      help='e.g. 512,1024,2048: peak memory of one '
                           'evaluation with and without remat, and XLA '
                           'bytes per device with rows split over 4 '
                           'simulated devices (fresh processes)')
  parser.add_argument('--out', default=os.path.join('out', 'benchmark.json'))
  parser.add_argument('--table-from', default='',
                      help='only print the tables of an existing JSON file')
  # Internal: what the child processes do.
  hidden = argparse.SUPPRESS
  parser.add_argument('--compile-only', action='store_true', help=hidden)
  parser.add_argument('--memory-only', action='store_true', help=hidden)
  parser.add_argument('--remat', action='store_true', help=hidden)
  parser.add_argument('--row-shards', type=int, default=1, help=hidden)
  parser.add_argument('--memory-baseline', action='store_true', help=hidden)
  parser.add_argument('--torch-evaluation', action='store_true', help=hidden)
  parser.add_argument('--ttq-torch', action='store_true', help=hidden)
  parser.add_argument('--ttq-jax', default='', help=hidden)
  parser.add_argument('--cache-dir', default='', help=hidden)
  parser.add_argument('--stop-loss', type=float, default=None, help=hidden)
  parser.add_argument('--max-steps', type=int, default=900, help=hidden)
  return parser.parse_args(argv)


def child_main(args):
  """The internal modes; prints one JSON line. Returns False if none."""
  size = int(args.sizes.split(',')[0] or 0)
  optimizers = args.optimizers.split(',')
  if args.compile_only:
    configure_cache(args.cache_dir)
    result = compile_only(size, optimizers, auto_steps(size, args.steps))
  elif args.memory_baseline:
    result = memory_baseline()
  elif args.memory_only:
    configure_cache('')
    result = memory_only(size, args.remat, args.row_shards)
  elif args.torch_evaluation:
    result = torch_evaluation_child(size, args.repeats, args.torch_threads)
  elif args.ttq_torch:
    result = torch_lbfgs_child(args.ttq_size, args.ttq_evaluations,
                               args.torch_threads)
  elif args.ttq_jax:
    configure_cache('')
    result = ttq_jax_child(args.ttq_jax, args.ttq_size, args.stop_loss,
                           args.max_steps, args.ttq_chunk)
  else:
    return False
  print(json.dumps(result))
  return True


def main(argv=None):
  args = parse_args(argv)
  if child_main(args):
    return
  if args.table_from:
    with open(args.table_from) as f:
      print_table(json.load(f))
    return
  sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  optimizers = [o for o in args.optimizers.split(',') if o.strip()]
  for name in optimizers:
    if name not in optim.OPTIMIZERS:
      sys.exit(f'unknown optimizer {name!r}; valid: '
               + ', '.join(optim.OPTIMIZERS))
  have_torch = torch_available() and not args.no_torch
  if args.time_to_quality and not have_torch:
    print('--time-to-quality needs torch (and no --no-torch); skipped',
          file=sys.stderr)
  started = time.perf_counter()
  report = {'machine': machine(), 'flops_formula': FLOPS_FORMULA,
            'flops_per_pixel': FLOPS_PER_PIXEL,
            'images': content_and_style(8)[2],
            'weights': f'random He-normal, seed {WEIGHTS_SEED}',
            'loss': {'normalization': 'paper', 'alpha': ALPHA, 'beta': BETA,
                     'pooling': 'avg', 'preprocessing': 'caffe',
                     'style_layers': list(losses.DEFAULT_STYLE_LAYERS),
                     'content_layers': list(losses.DEFAULT_CONTENT_LAYERS)},
            'learning_rates': LEARNING_RATES,
            'torch_threads': args.torch_threads if have_torch else None,
            'load_average_start': os.getloadavg(), 'sizes': []}
  cache = None
  if not args.skip_compile:
    # The compile children of each size fill this cache first; this process
    # then loads the same programs from it instead of compiling them again
    # (same machine code; saves minutes).
    cache = tempfile.mkdtemp(prefix='nst_jax_bench_cache_')
    configure_cache(cache)
  report['main_process_compilation_cache'] = (
      'shared with the compile children' if cache else 'none')
  try:
    run_sizes(args, report, sizes, optimizers, have_torch, cache)
    finish(args, report, have_torch, started)
  finally:
    if cache:
      shutil.rmtree(cache, ignore_errors=True)


def finish(args, report, have_torch, started):
  """The optional extras, then the JSON file and the tables."""
  if args.sweep:
    report['sweep_64px_4_members'] = bench_sweep(64, 4, 10)
  if args.layer_sizes:
    report['layers'] = [bench_layers(int(size))
                        for size in args.layer_sizes.split(',')]
  if args.startup:
    # The default (Winograd on CPU), then direct convolutions: Winograd's
    # larger programs take longer to load from the cache.
    report['startup'] = []
    for conv_algorithm in ('auto', 'direct'):
      rows = bench_startup(conv_algorithm=conv_algorithm)
      for index, row in enumerate(rows):
        row['run'] = index + 1
      report['startup'] += rows
  if args.memory_sizes:
    report['memory_by_size'] = bench_memory_sizes(
        [int(x) for x in args.memory_sizes.split(',') if x.strip()])
  if args.time_to_quality and have_torch:
    report['time_to_quality'] = time_to_quality(
        args.ttq_size, args.ttq_evaluations, args.torch_threads,
        args.ttq_chunk)
  report['load_average_end'] = os.getloadavg()
  report['benchmark_wall_s'] = time.perf_counter() - started
  out = os.path.abspath(args.out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(report, f, indent=2)
  print_table(report)
  print(f'\n(JSON: {args.out}; {report["benchmark_wall_s"]:.0f} s)',
        file=sys.stderr)


def run_sizes(args, report, sizes, optimizers, have_torch, cache):
  """The per-size measurements, appended to report['sizes']."""
  baseline = None
  if not args.skip_memory:
    baseline = jax_only_baseline()
    report['memory_baseline'] = baseline
    report['memory_baseline_with_nst_jax_imports'] = run_child(
        ['--memory-baseline'])
  for size in sizes:
    print(f'{size} px ...', file=sys.stderr, flush=True)
    other = OtherLoad()
    steps = auto_steps(size, args.steps)
    compile_ = None
    if not args.skip_compile:
      # Before this process compiles anything of this size, so nothing of
      # it is in memory or on disk yet.
      compile_ = bench_compile(size, optimizers, steps, cache)
    row = bench_size(size, optimizers, args.repeats, steps,
                     auto_rounds(size, args.rounds),
                     remat_memory=not args.skip_memory)
    if compile_:
      row['compile'] = compile_
    if have_torch:
      torch_other = OtherLoad()
      row['torch'] = run_child(['--torch-evaluation', f'--sizes={size}',
                                f'--repeats={args.repeats}',
                                f'--torch-threads={args.torch_threads}'])
      row['torch']['other_processes_cores'] = torch_other.cores()
      if 'evaluation_s' in row['torch']:
        row['jax_over_torch'] = (row['evaluation_s']
                                 / row['torch']['evaluation_s'])
        row['loss_rel_diff_vs_torch'] = abs(
            row['loss_at_content'] - row['torch']['loss']) / abs(
                row['torch']['loss'])
        row['grad_norm_rel_diff_vs_torch'] = abs(
            row['grad_norm_at_content'] - row['torch']['grad_norm']) / abs(
                row['torch']['grad_norm'])
    if not args.skip_memory and 'error' not in baseline:
      row['memory'] = bench_memory(size, baseline)
    row['other_processes_cores'] = other.cores()
    report['sizes'].append(row)
    print(f'{size} px: evaluation {1000 * row["evaluation_s"]:.0f} ms'
          + (f', PyTorch {1000 * row["torch"]["evaluation_s"]:.0f} ms'
             if 'evaluation_s' in row.get('torch', {}) else ''),
          file=sys.stderr, flush=True)


if __name__ == '__main__':
  main()
