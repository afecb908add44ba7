"""The benchmark's problems, optimisers, timers and PyTorch's side.

Shared by scripts/benchmark.py and scripts/time_to_quality.py. A problem is
Gatys et al.'s loss of a content and a style image with seeded random VGG19
weights, built by the library (`nst_jax.engine.problem.build`) from config
fields, as a run builds it: the demo images in the paper's normalisation
(alpha 1, beta 1e3) for the core benchmark, or a panel problem's seeded
colour blobs (`PANEL`) for the time-to-quality study. The same images and
weights go to PyTorch (`torch_child`, scripts/torch_reference.py).

An optimiser is a set of config fields (`OPTIMIZER_FIELDS`), written
'optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8' (`parse_optimizers`);
fields it does not give are torch.optim.LBFGS's algorithm
(`lbfgs_pyramid=1`, `lbfgs_first_step=0`) and `LEARNING_RATES`.
"""

from __future__ import annotations

import functools
import json
import importlib.metadata
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

from nst_jax import weights
from nst_jax.core import optimizers as optimizers_lib, vgg
from nst_jax.io import scenes
from nst_jax.engine import config_files, problem as problem_lib
from nst_jax.engine import programs as programs_lib
from scripts import child_processes

ALPHA, BETA, WEIGHTS_SEED = 1.0, 1e3, 0
# Step sizes that keep each optimiser finite on the paper-normalised loss
# (speed does not depend on them, as long as the run does not stop).
LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 1.0, 'sgd': 1e-9}
# What every benchmark problem sets on the default config: the seeded
# random weights, the content image as the start, JAX's persistent cache
# left to the benchmark (which times compiling), the whole image at once,
# and torch.optim.LBFGS's algorithm unless an optimiser says otherwise.
BASE_FIELDS = {'weights': 'random', 'init': 'content', 'content_weight': ALPHA,
               'compilation_cache': '', 'row_strips': 1, 'lbfgs_pyramid': 1,
               'lbfgs_first_step': 0.0}
# The config fields an optimiser may set; the time-to-quality study also
# takes a coarse level (`TTQ_FIELDS`).
OPTIMIZER_FIELDS = ('optimizer', 'lbfgs_pyramid', 'lbfgs_first_step',
                    'lbfgs_memory', 'learning_rate')
TTQ_FIELDS = OPTIMIZER_FIELDS + ('coarse_to_fine', 'coarse_iterations')


# ---------------------------------------------------------------------------
# Images and weights.

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
    return scenes.demo_content(size), scenes.demo_style(size)
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


def weights_source(preprocessing='caffe'):
  """The `weights` field of `panel_weights(preprocessing)`: 'random' for
  Keras's layout; for torchvision's a weights file of the converted
  network, written once into the temporary folder (atomically, so
  processes side by side read whole files)."""
  if preprocessing == 'caffe':
    return 'random'
  path = os.path.join(tempfile.gettempdir(), 'nst_jax_bench',
                      f'vgg19_random{WEIGHTS_SEED}_{preprocessing}.npz')
  if not os.path.exists(path):
    _, meta = weights.random_weights(WEIGHTS_SEED)
    weights.save_weights(path, panel_weights(preprocessing),
                         dict(meta, preprocessing=preprocessing))
  return path


# ---------------------------------------------------------------------------
# Optimisers: sets of config fields.

@functools.lru_cache(maxsize=None)
def _field_types():
  """{field: its type in the default config}."""
  config = config_files.make_config()
  return {field: type(config[field]) for field in TTQ_FIELDS}


def parse_optimizer(text, allowed=OPTIMIZER_FIELDS) -> dict:
  """'optimizer=lbfgs,lbfgs_pyramid=2' -> {'optimizer': 'lbfgs',
  'lbfgs_pyramid': 2}, each value of its field's type in the default
  config; a bare name is the `optimizer` field ('adam').

  Raises:
    ValueError: a field not in `allowed`, a bad value or no optimizer.
  """
  fields = {}
  for part in (p.strip() for p in text.split(',') if p.strip()):
    field, equals, value = part.partition('=')
    field, value = (field.strip(), value.strip()) if equals else (
        'optimizer', field.strip())
    if field not in allowed:
      raise ValueError(f'{text!r}: {field!r} is not one of '
                       + ', '.join(allowed))
    kind = _field_types()[field]
    try:
      fields[field] = kind(value)
    except ValueError:
      raise ValueError(f'{text!r}: {field}={value!r} is not '
                       + {int: 'an integer', float: 'a number'}.get(
                           kind, kind.__name__)) from None
  if fields.get('optimizer') not in optimizers_lib.OPTIMIZERS:
    raise ValueError(f'{text!r}: needs optimizer=NAME, NAME one of '
                     + ', '.join(optimizers_lib.OPTIMIZERS))
  return fields


def parse_optimizers(values, allowed=OPTIMIZER_FIELDS) -> list:
  """`parse_optimizer` of each optimiser in `values` (flag values, each
  holding one or more separated by ';')."""
  return [parse_optimizer(text, allowed) for value in values
          for text in value.split(';') if text.strip()]


def optimizer_key(fields) -> str:
  """The canonical text of an optimiser's fields, its key in reports:
  'optimizer=lbfgs,lbfgs_pyramid=2,lbfgs_first_step=8'."""
  show = lambda v: f'{v:g}' if isinstance(v, float) else str(v)
  return ','.join(f'{field}={show(fields[field])}' for field in TTQ_FIELDS
                  if field in fields)


def optimizer_label(fields) -> str:
  """'lbfgs, pyramid 2, first step 8'; an L-BFGS without other settings
  says it is torch's algorithm; a coarse level says its steps."""
  name = fields['optimizer']
  if fields.get('coarse_to_fine'):
    rest = {k: v for k, v in fields.items() if not k.startswith('coarse')}
    return (optimizer_label(rest).replace(" (torch's)", '')
            + f', {fields.get("coarse_iterations", 100)} steps at half size'
            ' first')
  extras = ''.join(
      f', {label} {fields[field]:g}' for field, label, torch_value in (
          ('lbfgs_pyramid', 'pyramid', 1),
          ('lbfgs_first_step', 'first step', 0),
          ('lbfgs_memory', 'memory', optimizers_lib.LBFGS_MEMORY),
          ('learning_rate', 'learning rate', LEARNING_RATES[name]))
      if fields.get(field, torch_value) != torch_value)
  if name not in ('lbfgs', 'lbfgs_nols'):
    return name + extras
  return name + (extras or " (torch's)")


def optimizer_config(fields) -> dict:
  """An optimiser's config fields, with its `LEARNING_RATES` step unless it
  gives one (the coarse level is the caller's)."""
  fields = {k: v for k, v in fields.items() if not k.startswith('coarse')}
  return dict({'learning_rate': LEARNING_RATES[fields['optimizer']]},
              **fields)


# ---------------------------------------------------------------------------
# Problems.

def build(size, *, normalization='paper', style_weight=BETA,
          preprocessing='caffe', image_seed=None, conv_algorithm='auto',
          dtype='float32', shard_rows=False, optimizer=None, members=1,
          sweep_mode='auto', programs=None) -> problem_lib.Problem:
  """The problem of the demo content and style (or, with `image_seed`,
  that problem's colour blobs: `problem_images`) at `size` px with seeded
  random weights (`panel_weights(preprocessing)`), alpha 1, beta
  `style_weight`, built by `problem.build` as a run with these settings
  builds it; `optimizer`: its config fields (default lbfgs, torch's);
  `members` copies as one sweep in `sweep_mode`."""
  fields = dict(BASE_FIELDS, image_size=size,
                loss_normalization=normalization, style_weight=style_weight,
                weights=weights_source(preprocessing),
                conv_algorithm=conv_algorithm, dtype=dtype,
                shard_rows=shard_rows, sweep={'mode': sweep_mode})
  fields.update(optimizer_config(optimizer or {'optimizer': 'lbfgs'}))
  content, style = problem_images(size, image_seed)
  return problem_lib.build(fields, content, [style], members=members,
                           programs=programs, log=lambda message: None)


# Time to quality: a panel of problems. Seeded colour blobs (`blob_image`)
# for content and style, at 128 and 256 px, in the paper's normalisation
# (alpha 1, beta 1e3) and the invariant one (alpha 1, beta 1e-3, the default
# config's), with each weight layout's preprocessing: 'caffe' (Keras's
# converted file) and 'torchvision'. The weights are seeded random ones
# (no pretrained file exists offline), so a layout is its preprocessing.
# The tuned set (seeds 0-7 and 200-207, the full 2 x 2 x 2 design twice, and
# 100-103) chose the optimiser and its settings; the held-out set (seeds
# 300-307, the full design again) only measures the choice.
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


def panel_problems(which, only=''):
  """The panel's problems of a set ('all', 'tuned', 'held_out'), or of
  those only (comma-separated names or seeds), smaller sizes first (a
  partial run has both sets at 128 px)."""
  chosen = [p for p in PANEL if which == 'all'
            or p['held_out'] == (which == 'held_out')]
  wanted = {w.strip() for w in only.split(',') if w.strip()}
  if wanted:
    chosen = [p for p in chosen if p['name'] in wanted
              or str(p['seed']) in wanted]
  return sorted(chosen, key=lambda p: (p['size'], p['held_out'], p['seed']))


def problem_key(problem):
  """A problem's name without its set's letter: the same seed, size, loss
  and layout whichever set it was in."""
  return problem['name'][1:]


def panel_fields(problem) -> dict:
  """`build`'s arguments for a panel problem, but its size."""
  return dict(normalization=problem['normalization'],
              style_weight=problem['style_weight'],
              preprocessing=problem['preprocessing'],
              image_seed=problem['seed'])


def panel_build(problem, size=None, **kwargs) -> problem_lib.Problem:
  """`build` for a panel problem (at `size`, default its own)."""
  return build(size or problem['size'], **panel_fields(problem), **kwargs)


# ---------------------------------------------------------------------------
# Timing and the machine.

def timed(fn):
  """(seconds, result) of `fn()`, waiting for its arrays."""
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


class ChunkClock:
  """`problem.minimize`'s `on_chunk`: the seconds each chunk took (from the
  end of the previous callback), with `between()` run after each chunk
  and not counted.

  Attributes:
    chunks: [(seconds, step, evaluations)] per chunk; the first chunk's
      seconds are None (it is the warm-up, timed from nothing).
  """

  def __init__(self, between=lambda: None):
    self.between = between
    self.chunks = []
    self._last = None

  def __call__(self, step, evaluations, loss):
    del loss
    now = time.perf_counter()
    self.chunks.append((None if self._last is None else now - self._last,
                        step, evaluations))
    self.between()
    self._last = time.perf_counter()


def machine(have_torch):
  """The machine, its device and the versions, for a report."""
  info = {'cpu': platform.processor(), 'cores': os.cpu_count(),
          'memory_gib': os.sysconf('SC_PAGE_SIZE')
                        * os.sysconf('SC_PHYS_PAGES') / 2**30,
          'jax': jax.__version__,
          'compiler_options': programs_lib.compiler_options(
              jax.default_backend()),
          'device': jax.devices()[0].device_kind}
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      info['cpu'] = next((line.split(':', 1)[1].strip() for line in f
                          if line.startswith('model name')), info['cpu'])
  if have_torch:  # Not imported here: its threads would stay beside XLA's.
    info['torch'] = importlib.metadata.version('torch')
  return info


def default_threads():
  """The cores this process may use, as XLA's thread pool does."""
  if hasattr(os, 'sched_getaffinity'):  # Linux
    return len(os.sched_getaffinity(0))
  return os.cpu_count()


# ---------------------------------------------------------------------------
# PyTorch.

def torch_child(study, size, threads, repeats=0, evaluations=0,
                problem=None):
  """PyTorch on the same images and weights: one evaluation ('evaluation')
  or torch.optim.LBFGS from the content image ('lbfgs'; then `repeats`
  single evaluations timed). `problem`: a panel problem (`PANEL`) instead
  of the demo's paper loss at `size`. Run it in a child process with JAX
  on the CPU (`child_processes.run_child(..., cpu_only=True)`)."""
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


def write_report(report, path):
  """Writes a study's report as JSON, making its folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)


def finish_report(report, started: float, path) -> None:
  """Ends a study: the load and wall time into `report`, written to `path`
  and printed as tables (`bench_tables.print_report`)."""
  from scripts import bench_tables  # pylint: disable=g-import-not-at-top
  report['load_average_end'] = os.getloadavg()
  report['benchmark_wall_s'] = time.perf_counter() - started
  write_report(report, path)
  bench_tables.print_report(report)
  print(f'\n(JSON: {path}; {report["benchmark_wall_s"]:.0f} s)',
        file=sys.stderr)


def run_child(script, function, **kwargs):
  """`child_processes.run_child` of a study `script` (run in the
  repository); PyTorch's child gets JAX's CPU backend only, so it never
  opens an accelerator the parent holds."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return child_processes.run_child(script, function, repo,
                                   cpu_only=function is torch_child, **kwargs)
