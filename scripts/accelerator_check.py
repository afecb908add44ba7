#!/usr/bin/env python3
"""One run that measures nst_jax on an accelerator against PyTorch on the
same device; `scripts/accelerator_check.sh` is how to start it.

  python scripts/accelerator_check.py --out=out/accelerator_check.json
  JAX_PLATFORMS=cpu python scripts/accelerator_check.py --small   # a trial

Sections (each written to --out as soon as it is done, so a run stopped at
its time limit keeps what it measured; one that fails records its error):

* `evaluation`: one loss + pixel-gradient evaluation (Gatys et al.'s loss
  to conv5_1, paper normalisation, seeded random weights) at each --sizes,
  in three precisions, each beside PyTorch's on the same device:
  `highest` (float32 convolutions: JAX `default_matmul_precision
  ('highest')`; torch with TF32 off), `tf32` (TF32 convolutions: JAX
  `'tensorfloat32'`; torch's own default, cuDNN TF32 on, matmuls float32)
  and `bfloat16` (nst_jax `dtype='bfloat16'`: bf16 convolutions, Gram sums
  in float32; torch autocast to bf16). nst_jax's `dtype='float32'` runs
  under JAX's default precision, which is `tf32` on GPUs that have it.
  The loss of each is recorded, for parity.
* `parity`: the same evaluation in float32 `highest` on the accelerator and
  on the host CPU: the relative difference of the loss and of the gradient.
* `end_to_end`: `python -m nst_jax.main --config=gpu` (--e2e-iterations
  steps at --e2e-size px, built-in images, random weights) as a new
  process twice with one compilation cache: the first compiles (cold), the
  second loads its programs (cached); wall time and the manifest's timing.
* `sweep`: --members style weights as one compiled sweep (vmap) against the
  same members as separate runs, --sweep-iterations steps at --sweep-size.
* `large`: one --large image (W x H, e.g. 4096x3072) whole on one device,
  --large-iterations steps: time, the memory estimate, row strips and pairs
  the fit chose, and the device's peak memory.
* Every section records the device's peak memory (`memory_stats`, where the
  device has it) beside the library's estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

import nst_jax
from nst_jax.io import scenes
from scripts import bench_problems
from scripts.benchmark import compile_evaluation
# pylint: enable=g-import-not-at-top,wrong-import-position

PRECISIONS = ('highest', 'tf32', 'bfloat16')
_JAX_PRECISION = {'highest': 'highest', 'tf32': 'tensorfloat32',
                  'bfloat16': None}


def _peak_bytes():
  """The device's peak bytes in use so far (None where it keeps none)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def _median_s(fn, repeats, synchronize=lambda: None):
  fn()
  synchronize()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    synchronize()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def jax_evaluation(size, precision, repeats):
  """nst_jax's evaluation at `size` in `precision`: seconds, loss, grad."""
  dtype = 'bfloat16' if precision == 'bfloat16' else 'float32'
  problem = bench_problems.build(size, dtype=dtype, conv_algorithm='direct')
  pixels = jax.device_put(problem.start)
  with jax.default_matmul_precision(_JAX_PRECISION[precision]):
    compiled = compile_evaluation(problem, options={})
  run = lambda: jax.block_until_ready(compiled(pixels, problem.loss_arguments))
  seconds = _median_s(run, repeats)
  value, grad = run()
  return {'evaluation_s': seconds, 'loss': float(value),
          'grad_norm': float(np.linalg.norm(np.asarray(grad, np.float64)))}


def torch_evaluation(size, precision, repeats):
  """PyTorch's evaluation of the same loss on the same kind of device."""
  import torch  # pylint: disable=g-import-not-at-top
  from scripts import torch_reference  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.allow_tf32 = precision == 'tf32'
  torch.backends.cuda.matmul.allow_tf32 = False
  torch.backends.cudnn.benchmark = True
  content, style = bench_problems.problem_images(size)
  params = bench_problems.panel_weights('caffe')
  loss = torch_reference.Gatys(params, content, style, device=device)
  pixels = torch_reference.to_nchw(content).to(device).requires_grad_(True)

  def once():
    pixels.grad = None
    with torch.autocast(device_type=device, dtype=torch.bfloat16,
                        enabled=precision == 'bfloat16'):
      value = loss(pixels)
    value.backward()
    return value

  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  seconds = _median_s(once, repeats, sync)
  value = once()
  return {'evaluation_s': seconds, 'loss': float(value),
          'grad_norm': float(pixels.grad.float().norm()), 'device': device,
          'torch': torch.__version__}


def section_evaluation(args):
  rows = []
  for size in args.sizes:
    for precision in PRECISIONS:
      row = {'size': size, 'precision': precision,
             'jax': jax_evaluation(size, precision, args.repeats),
             'peak_bytes': _peak_bytes()}
      if not args.no_torch:
        row['torch'] = torch_evaluation(size, precision, args.repeats)
        row['jax_over_torch'] = (row['jax']['evaluation_s']
                                 / row['torch']['evaluation_s'])
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def section_parity(args):
  size = args.sizes[0]
  here = jax_evaluation(size, 'highest', 1)
  cpu = jax.devices('cpu')[0]
  with jax.default_device(cpu), jax.default_matmul_precision('highest'):
    problem = bench_problems.build(size, conv_algorithm='direct')
    compiled = compile_evaluation(
        problem, options={}, pixels=jax.device_put(problem.start, cpu),
        arguments=jax.device_put(problem.loss_arguments, cpu))
    value, grad = compiled(jax.device_put(problem.start, cpu),
                           jax.device_put(problem.loss_arguments, cpu))
  value, grad_norm = float(value), float(np.linalg.norm(
      np.asarray(grad, np.float64)))
  return {'size': size, 'loss_here': here['loss'], 'loss_cpu': value,
          'loss_relative_difference': abs(here['loss'] - value) / abs(value),
          'grad_norm_relative_difference': abs(
              here['grad_norm'] - grad_norm) / grad_norm}


def section_end_to_end(args):
  folder = tempfile.mkdtemp(prefix='nst_jax_check_')
  runs = []
  for label in ('cold', 'cached'):
    output = os.path.join(folder, f'{label}.png')
    command = [sys.executable, '-m', 'nst_jax.main', '--config=gpu',
               '--config.weights=random', '--config.content=builtin:scene',
               '--config.style=builtin:painting',
               f'--config.image_size={args.e2e_size}',
               f'--config.iterations={args.e2e_iterations}',
               f'--config.compilation_cache={folder}/cache',
               f'--config.output={output}']
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          check=False, cwd=REPO)
    wall = time.perf_counter() - start
    row = {'run': label, 'wall_s': wall, 'returncode': done.returncode}
    if done.returncode == 0:
      with open(os.path.splitext(output)[0] + '.json') as file:
        manifest = json.load(file)
      row.update(timing=manifest['timing'], programs=manifest['programs'],
                 evaluations=manifest['evaluations'],
                 final=manifest['final'], device=manifest['device'])
    else:
      row['stderr'] = done.stderr[-2000:]
    runs.append(row)
    print(json.dumps(row), flush=True)
  return runs


def section_sweep(args):
  weights = tuple(float(w) for w in np.logspace(-4, -1, args.members))
  fields = dict(weights='random', image_size=args.sweep_size,
                iterations=args.sweep_iterations, log_every=10,
                init='content', dtype='bfloat16', optimizer='lbfgs_nols')
  content, style = 'builtin:scene', 'builtin:painting'
  # Once each first, so that neither timing includes compiling.
  nst_jax.stylize(content, style, **fields)
  nst_jax.stylize(content, style, **fields, sweep={'style_weight': weights})
  start = time.perf_counter()
  swept = nst_jax.stylize(content, style, **fields,
                          sweep={'style_weight': weights})
  sweep_s = time.perf_counter() - start
  start = time.perf_counter()
  for weight in weights:
    nst_jax.stylize(content, style, **dict(fields, style_weight=weight))
  separate_s = time.perf_counter() - start
  return {'members': args.members, 'size': args.sweep_size,
          'iterations': args.sweep_iterations, 'sweep_s': sweep_s,
          'separate_runs_s': separate_s, 'speedup': separate_s / sweep_s,
          'sweep_mode': swept.manifest['device']['sweep_mode'],
          'peak_bytes': _peak_bytes()}


def section_large(args):
  width, height = (int(x) for x in args.large.split('x'))
  content = scenes.demo_content(max(width, height))
  content = np.rint(content[:height, :width]).astype(np.uint8)
  start = time.perf_counter()
  result = nst_jax.stylize(content, 'builtin:painting', weights='random',
                           image_size=max(width, height),
                           iterations=args.large_iterations,
                           log_every=args.large_iterations, init='content',
                           dtype='bfloat16', optimizer='lbfgs_nols')
  return {'size': [width, height], 'seconds': time.perf_counter() - start,
          'image_shape': list(result.image.shape),
          'device': result.manifest['device'],
          'timing': result.manifest['timing'],
          'peak_bytes': _peak_bytes()}


SECTIONS = {'evaluation': section_evaluation, 'parity': section_parity,
            'end_to_end': section_end_to_end, 'sweep': section_sweep,
            'large': section_large}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[1:]))
  add = parser.add_argument
  add('--sizes', default='512,1024,2048')
  add('--repeats', type=int, default=5)
  add('--e2e-size', type=int, default=512)
  add('--e2e-iterations', type=int, default=500)
  add('--members', type=int, default=8)
  add('--sweep-size', type=int, default=512)
  add('--sweep-iterations', type=int, default=100)
  add('--large', default='4096x3072')
  add('--large-iterations', type=int, default=20)
  add('--sections', default=','.join(SECTIONS))
  add('--no-torch', action='store_true')
  add('--small', action='store_true',
      help='a trial on a CPU: 32 px, few steps, 2 members, 64x48')
  add('--out', default=os.path.join('out', 'accelerator_check.json'))
  args = parser.parse_args(argv)
  if args.small:
    args.sizes, args.repeats, args.e2e_size, args.e2e_iterations = (
        '32', 1, 32, 4)
    args.members, args.sweep_size, args.sweep_iterations = 2, 32, 4
    args.large, args.large_iterations = '64x48', 2
  args.sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
  return args


def main(argv=None):
  args = parse_args(argv)
  device = jax.devices()[0]
  report = {'date': time.strftime('%Y-%m-%d'), 'jax': jax.__version__,
            'platform': device.platform, 'device': device.device_kind,
            'python': platform.python_version(), 'args': {
                k: v for k, v in vars(args).items()}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for name in [s for s in args.sections.split(',') if s]:
    start = time.perf_counter()
    try:
      report[name] = SECTIONS[name](args)
    except Exception as error:  # pylint: disable=broad-except
      report[name] = {'error': f'{type(error).__name__}: {error}',
                      'traceback': traceback.format_exc()[-3000:]}
    report[f'{name}_s'] = time.perf_counter() - start
    with open(args.out, 'w') as file:
      json.dump(report, file, indent=1)
    print(f'{name}: {report[f"{name}_s"]:.1f} s', flush=True)
  failed = [n for n in SECTIONS if isinstance(report.get(n), dict)
            and 'error' in report[n]]
  print(f'wrote {args.out}' + (f' (failed: {", ".join(failed)})'
                              if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
