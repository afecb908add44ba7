"""Benchmark nst_jax (and, when installed, a plain PyTorch implementation).

  python scripts/benchmark.py                        # 128, 256, 512 px
  python scripts/benchmark.py --sizes=128,256 --time_to_quality --sweep

Measures, per image size: one evaluation (forward + gradient w.r.t. the
pixels; VGG19 to conv5_1, 5 style + 1 content layers, seeded random weights:
speed does not depend on the values), one compiled optimisation step of each
optimiser (and the evaluations it spent), compile time cold and from the
persistent compilation cache (fresh processes), XLA's memory estimate with
and without remat, and achieved FLOP/s against the analytic count:

  FLOPs per evaluation = 2 (multiply + add) * 2 (forward + input gradient)
                         * MACS_PER_PIXEL['conv5_1'] (361,152) * H * W

(the input gradient of a convolution costs as many multiply-adds as its
forward; pooling, Grams and losses are small). With torch installed
(`pip install torch==2.13.0`, the `bench` extra), the same network and
losses in PyTorch are timed in the same run, and `--time_to_quality`
compares reaching torch.optim.LBFGS's loss after 300 evaluations.

Writes JSON (`--out`) and prints a Markdown table. Ratios are measured in
one run on one machine; absolute times vary with the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nst_jax import images, losses, optim, vgg, weights  # pylint: disable=g-import-not-at-top,wrong-import-position

FLOPS_PER_PIXEL = 4 * vgg.MACS_PER_PIXEL['conv5_1']
# Step sizes that keep each optimiser finite on the paper-normalised loss
# (speed does not depend on them, as long as the run does not stop).
LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 1.0, 'sgd': 1e-9}


def median_time(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def make_problem(size, normalization='paper', remat=False, style_weight=1e3):
  params, _ = weights.random_weights(0)
  variables = vgg.prepare_variables(jax.tree_util.tree_map(jnp.asarray,
                                                           params))
  spec = losses.LossSpec(normalization=normalization, remat=remat)
  content = images.demo_content(size)
  targets = losses.make_targets(variables, content, [images.demo_style(size)],
                                spec)
  problem = optim.Problem(variables, targets,
                          losses.loss_weights(spec, 1.0, style_weight))
  return spec, problem, jnp.asarray(content), params


def bench_size(size, optimizers, repeats, steps):
  spec, problem, pixels, _ = make_problem(size)
  row = {'size': size, 'flops_per_evaluation': FLOPS_PER_PIXEL * size * size}
  compiled = optim.loss_and_grad_jit.lower(pixels, problem, spec).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  row['xla_flops'] = float(cost.get('flops', float('nan'))) if cost else None
  evaluation = median_time(lambda: compiled(pixels, problem), repeats)
  row['evaluation_s'] = evaluation
  row['gflops_per_s'] = row['flops_per_evaluation'] / evaluation / 1e9
  for remat in (False, True):
    remat_spec = dataclasses.replace(spec, remat=remat)
    memory = optim.loss_and_grad_jit.lower(
        pixels, problem, remat_spec).compile().memory_analysis()
    row[f'xla_temp_mib{"_remat" if remat else ""}'] = (
        memory.temp_size_in_bytes / 2**20)
  row['steps'] = {}
  for name in optimizers:
    lr = jnp.asarray(LEARNING_RATES[name])
    criteria = optim.stop_criteria(10**9)
    state = optim.init_state_jit(pixels, problem, spec, name, lr)
    state, _, _ = optim.run_chunk(state, problem, spec, name, lr, criteria,
                                  steps)  # compile + warm up
    jax.block_until_ready(state)
    before = int(state.evaluations)
    start = time.perf_counter()
    state, _, _ = optim.run_chunk(state, problem, spec, name, lr, criteria,
                                  steps)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    spent = int(state.evaluations) - before
    row['steps'][name] = {
        'step_s': elapsed / steps, 'evaluations_per_step': spent / steps,
        'step_over_evaluation': elapsed / steps / evaluation,
        'per_evaluation_over_evaluation': elapsed / max(spent, 1) / evaluation}
  return row


COMPILE_SCRIPT = '''
import json, sys, time
start = time.perf_counter()
import jax
jax.config.update('jax_compilation_cache_dir', sys.argv[2])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
sys.path.insert(0, sys.argv[3])
from scripts import benchmark
spec, problem, pixels, _ = benchmark.make_problem(int(sys.argv[1]))
import jax.numpy as jnp
from nst_jax import optim
lr = jnp.asarray(1.0)
ready = time.perf_counter()
state = optim.init_state_jit.lower(pixels, problem, spec, 'lbfgs', lr).compile()(
    pixels, problem, lr)
optim.run_chunk.lower(state, problem, spec, 'lbfgs', lr,
                      optim.stop_criteria(10), 10).compile()
print(json.dumps({'compile_s': time.perf_counter() - ready,
                  'process_to_compiled_s': time.perf_counter() - start}))
'''


def bench_compile(size):
  """Cold and persistent-cache compile of the L-BFGS init + chunk, fresh
  processes."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results = {}
  with tempfile.TemporaryDirectory() as cache:
    for label in ('cold', 'warm'):
      out = subprocess.run(
          [sys.executable, '-c', COMPILE_SCRIPT, str(size), cache, repo],
          capture_output=True, text=True, check=True, cwd=repo)
      results[label] = json.loads(out.stdout.strip().splitlines()[-1])
  return results


def bench_sweep(size, members, steps):
  """K members as one program (map and vmap) vs one run, per optimiser."""
  spec, problem, pixels, _ = make_problem(size, normalization='invariant',
                                          style_weight=1e-3)
  stack = lambda tree: jax.tree_util.tree_map(
      lambda x: jnp.stack([x] * members), tree)
  results = {}
  for name in optim.OPTIMIZERS:
    lr = jnp.asarray(LEARNING_RATES[name] * (1e6 if name == 'sgd' else 1))
    criteria = optim.stop_criteria(10**9)
    single = lambda: optim.run_chunk(
        optim.init_state_jit(pixels, problem, spec, name, lr), problem, spec,
        name, lr, criteria, steps)
    one = median_time(single, 2)
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
      results[name][f'{mode}_over_k_runs'] = median_time(sweep, 2) / (
          members * one)
  return results


# ---------------------------------------------------------------------------
# PyTorch: the same network and losses, for comparison in the same run.

def torch_problem(params, size):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  convs = []
  for name in vgg.CONV_LAYERS:
    kernel = torch.from_numpy(np.ascontiguousarray(
        np.transpose(params[name]['kernel'], (3, 2, 0, 1))))
    convs.append((name, kernel, torch.from_numpy(params[name]['bias'])))
  mean = torch.tensor(vgg.CAFFE_MEAN_BGR).view(1, 3, 1, 1)

  def features(pixels):  # pixels (1, 3, H, W) RGB 0-255
    x = pixels.flip(1) - mean
    out = {}
    for name, kernel, bias in convs:
      block = int(name[4])
      if name.endswith('_1') and block > 1:
        x = torch.nn.functional.avg_pool2d(x, 2)
      x = torch.relu(torch.nn.functional.conv2d(x, kernel, bias, padding=1))
      out[name] = x
      if name == 'conv5_1':
        break
    return out

  style_layers = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')

  def gram(f):
    f = f[0].flatten(1)
    return f @ f.t()

  to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(
      np.transpose(a, (2, 0, 1))[None]))
  with torch.no_grad():
    content_features = features(to_torch(images.demo_content(size)))
    target_content = content_features['conv4_2']
    target_grams = {l: gram(f) for l, f in features(to_torch(
        images.demo_style(size))).items() if l in style_layers}

  def loss(pixels, alpha=1.0, beta=1e3):
    f = features(pixels)
    content = 0.5 * ((f['conv4_2'] - target_content) ** 2).sum()
    style = 0
    for l in style_layers:
      n = f[l].shape[1]
      m = f[l].shape[2] * f[l].shape[3]
      style = style + ((gram(f[l]) - target_grams[l]) ** 2).sum() / (
          4.0 * n * n * m * m) / len(style_layers)
    return alpha * content + beta * style

  return loss, to_torch(images.demo_content(size))


def in_subprocess(function, *args):
  """Runs `function(*args)` of this module in a fresh process: PyTorch's
  thread pool and JAX's would otherwise compete for the same cores."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ('import json, sys; sys.path.insert(0, sys.argv[1]); '
          'from scripts import benchmark; '
          f'print(json.dumps(benchmark.{function}(*json.loads(sys.argv[2]))))')
  out = subprocess.run([sys.executable, '-c', code, repo, json.dumps(args)],
                       capture_output=True, text=True, check=True, cwd=repo)
  return json.loads(out.stdout.strip().splitlines()[-1])


def torch_evaluation(size, repeats):
  params, _ = weights.random_weights(0)
  loss, start = torch_problem(params, size)
  pixels = start.clone().requires_grad_(True)

  def once():
    pixels.grad = None
    loss(pixels).backward()
  once()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    once()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def torch_lbfgs(size, torch_evaluations):
  """torch.optim.LBFGS (history 100, lr 1, no line search) from the content
  image for `torch_evaluations` evaluations: (seconds, final loss)."""
  import torch  # pylint: disable=g-import-not-at-top
  params, _ = weights.random_weights(0)
  loss, start = torch_problem(params, size)
  x = start.clone().requires_grad_(True)
  optimizer = torch.optim.LBFGS([x], lr=1, history_size=100,
                                max_iter=torch_evaluations,
                                max_eval=torch_evaluations,
                                tolerance_grad=0, tolerance_change=0)

  def closure():
    optimizer.zero_grad()
    value = loss(x)
    value.backward()
    return value
  t = time.perf_counter()
  optimizer.step(closure)
  torch_s = time.perf_counter() - t
  with torch.no_grad():
    return torch_s, float(loss(x))


def time_to_quality(size=128, torch_evaluations=300):
  """nst_jax's L-BFGS to the loss torch.optim.LBFGS reaches in 300
  evaluations (each side in its own process), wall-clock compared."""
  torch_s, target = in_subprocess('torch_lbfgs', size, torch_evaluations)
  spec, problem, pixels, _ = make_problem(size)
  result = {'size': size, 'torch_evaluations': torch_evaluations,
            'torch_s': torch_s, 'torch_final_loss': target}
  for name in ('lbfgs', 'lbfgs_nols'):
    lr = jnp.asarray(1.0)
    criteria = optim.stop_criteria(2000, stop_loss=target)
    t = time.perf_counter()
    state = optim.init_state_jit(pixels, problem, spec, name, lr)
    chunk = optim.run_chunk.lower(state, problem, spec, name, lr, criteria,
                                  10).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    while int(state.stop_reason) == optim.RUNNING:
      state, _, _ = chunk(state, problem, lr, criteria)
    run_s = time.perf_counter() - t
    result[name] = {'reached': optim.STOP_REASONS[int(state.stop_reason)]
                               == 'stop_loss',
                    'evaluations': int(state.evaluations),
                    'steps': int(state.step), 'final_loss': float(state.value),
                    'optimize_s': run_s, 'compile_s': compile_s,
                    'optimize_over_torch': run_s / torch_s}
  result['lbfgs_nols_coarse_to_fine'] = coarse_to_fine_to(
      size, target, torch_s, coarse_steps=100)
  return result


def coarse_to_fine_to(size, target, torch_s, coarse_steps):
  """lbfgs_nols: `coarse_steps` at size/2 from the half-size content, then
  the upsampled result at full size until the loss reaches `target`."""
  lr = jnp.asarray(1.0)
  spec, coarse_problem, coarse_start, _ = make_problem(size // 2)
  spec, problem, _, _ = make_problem(size)
  run = lambda problem, pixels, criteria: optim.run_chunk.lower(
      optim.init_state_jit(pixels, problem, spec, 'lbfgs_nols', lr), problem,
      spec, 'lbfgs_nols', lr, criteria, 10).compile()
  coarse_criteria = optim.stop_criteria(coarse_steps)
  fine_criteria = optim.stop_criteria(2000, stop_loss=target)
  coarse_chunk = run(coarse_problem, coarse_start, coarse_criteria)
  fine_chunk = run(problem, jnp.zeros((size, size, 3)), fine_criteria)
  start = time.perf_counter()
  state = optim.init_state_jit(coarse_start, coarse_problem, spec,
                               'lbfgs_nols', lr)
  while int(state.stop_reason) == optim.RUNNING:
    state, _, _ = coarse_chunk(state, coarse_problem, lr, coarse_criteria)
  coarse_evaluations = int(state.evaluations)
  upsampled = jnp.asarray(images.resize(np.asarray(state.pixels),
                                        (size, size)))
  state = optim.init_state_jit(upsampled, problem, spec, 'lbfgs_nols', lr)
  while int(state.stop_reason) == optim.RUNNING:
    state, _, _ = fine_chunk(state, problem, lr, fine_criteria)
  elapsed = time.perf_counter() - start
  return {'reached': optim.STOP_REASONS[int(state.stop_reason)] == 'stop_loss',
          'coarse_evaluations': coarse_evaluations,
          'evaluations': int(state.evaluations), 'optimize_s': elapsed,
          'optimize_over_torch': elapsed / torch_s}


def machine():
  model = ''
  if os.path.exists('/proc/cpuinfo'):
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  info = {'cpu': model, 'cores': os.cpu_count(), 'jax': jax.__version__,
          'device': jax.devices()[0].device_kind,
          'python': platform.python_version()}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info['torch'] = torch.__version__
  except ImportError:
    pass
  return info


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='128,256,512')
  parser.add_argument('--optimizers', default=','.join(optim.OPTIMIZERS))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--skip_compile', action='store_true')
  parser.add_argument('--time_to_quality', action='store_true')
  parser.add_argument('--sweep', action='store_true',
                      help='K=4 members at 64 px vs 4 single runs')
  parser.add_argument('--out', default='out/benchmark.json')
  args = parser.parse_args()

  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
  report = {'machine': machine(), 'flops_formula':
            '4 * 361152 * H * W (forward + input gradient, to conv5_1)',
            'sizes': []}
  for size in (int(s) for s in args.sizes.split(',')):
    row = bench_size(size, args.optimizers.split(','), args.repeats,
                     args.steps)
    if have_torch:
      row['torch_evaluation_s'] = in_subprocess('torch_evaluation', size,
                                                args.repeats)
      row['jax_over_torch'] = row['evaluation_s'] / row['torch_evaluation_s']
    if not args.skip_compile:
      row['compile'] = bench_compile(size)
    report['sizes'].append(row)
    print(json.dumps(row), file=sys.stderr)
  if args.sweep:
    report['sweep_64px_4_members'] = bench_sweep(64, 4, args.steps)
  if args.time_to_quality and have_torch:
    report['time_to_quality'] = time_to_quality()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  print_table(report)


def print_table(report):
  m = report['machine']
  print(f'Machine: {m["cpu"]}, {m["cores"]} cores, jax {m["jax"]}'
        + (f', torch {m["torch"]}' if 'torch' in m else ''))
  print()
  print('| size | evaluation | GFLOP/s | PyTorch | JAX/PyTorch | '
        'lbfgs_nols step/eval | lbfgs evals/step | adam step/eval | '
        'compile cold / cached | XLA temp MiB (remat) |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for row in report['sizes']:
    steps = row['steps']
    cell = lambda name, key: (f'{steps[name][key]:.2f}' if name in steps
                              else '-')
    compile_ = row.get('compile')
    print(f'| {row["size"]} | {1000 * row["evaluation_s"]:.0f} ms | '
          f'{row["gflops_per_s"]:.0f} | '
          + (f'{1000 * row["torch_evaluation_s"]:.0f} ms | '
             f'{row["jax_over_torch"]:.2f} | '
             if 'torch_evaluation_s' in row else '- | - | ')
          + f'{cell("lbfgs_nols", "step_over_evaluation")} | '
          f'{cell("lbfgs", "evaluations_per_step")} | '
          f'{cell("adam", "step_over_evaluation")} | '
          + (f'{compile_["cold"]["compile_s"]:.1f} s / '
             f'{compile_["warm"]["compile_s"]:.1f} s | ' if compile_ else '- | ')
          + f'{row["xla_temp_mib"]:.0f} ({row["xla_temp_mib_remat"]:.0f}) |')
  if 'sweep_64px_4_members' in report:
    print()
    print('| optimiser | 4-member sweep / 4 runs (map) | (vmap) |')
    print('|---|---|---|')
    for name, r in report['sweep_64px_4_members'].items():
      print(f'| {name} | {r["map_over_k_runs"]:.2f} | '
            f'{r["vmap_over_k_runs"]:.2f} |')
  if 'time_to_quality' in report:
    q = report['time_to_quality']
    print()
    print(f'Time to quality at {q["size"]} px: torch.optim.LBFGS, '
          f'{q["torch_evaluations"]} evaluations, {q["torch_s"]:.1f} s, '
          f'loss {q["torch_final_loss"]:.4g}')
    for name in ('lbfgs', 'lbfgs_nols'):
      r = q[name]
      print(f'- nst_jax {name}: reached={r["reached"]} after '
            f'{r["evaluations"]} evaluations, {r["optimize_s"]:.1f} s '
            f'(+{r["compile_s"]:.1f} s compile) = '
            f'{r["optimize_over_torch"]:.2f}x PyTorch')
    r = q['lbfgs_nols_coarse_to_fine']
    print(f'- nst_jax lbfgs_nols, {r["coarse_evaluations"]} evaluations at '
          f'half size first: reached={r["reached"]} after {r["evaluations"]} '
          f'full-size evaluations, {r["optimize_s"]:.1f} s = '
          f'{r["optimize_over_torch"]:.2f}x PyTorch')


if __name__ == '__main__':
  main()
