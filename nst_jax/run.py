"""One style-transfer run from a config: `run(config)` -> manifest dict.

Reads and checks the inputs (nothing is written before they pass), compiles
the loss and the optimisation chunk ahead of time (so the manifest can report
compile time apart from steady-state time), runs the compiled loop chunk by
chunk, and writes the image and its manifest atomically. Ctrl-C / SIGTERM
between chunks saves the current image marked partial.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import images, losses, optim, settings as settings_lib, vgg
from nst_jax import weights as weights_lib
from nst_jax.errors import UserError

BUILTIN_IMAGES = {'builtin:scene': images.demo_content,
                  'builtin:painting': images.demo_style}


class Interrupted(Exception):
  """Raised by `run` after saving a partial result on SIGINT/SIGTERM."""

  def __init__(self, signum, manifest):
    super().__init__(f'interrupted by signal {signum}')
    self.signum = signum
    self.manifest = manifest


# ---------------------------------------------------------------------------
# Inputs.

def read_image(path: str, image_size: int, what: str) -> np.ndarray:
  """An image file, or a built-in image ('builtin:scene', 'builtin:painting')."""
  if path in BUILTIN_IMAGES:
    return BUILTIN_IMAGES[path](image_size)
  return images.load_image(path, image_size, what=what)


def check_image_size(pixels, path, what, layers):
  """Refuses images too small for the deepest layer (after four poolings)."""
  needed = vgg.min_image_size(layers)
  height, width = pixels.shape[:2]
  if min(height, width) < needed:
    raise UserError(
        f'{what} {path!r}: {width}x{height} pixels is too small; layer '
        f'{vgg.deepest_layer(layers)} needs at least {needed}x{needed} '
        '(raise config.image_size or use shallower layers)')


def initial_pixels(settings, content, styles, variables_shape_hw):
  """The starting image: noise, content, the first style or init_image."""
  height, width = variables_shape_hw
  if settings.init == 'noise':
    return images.noise_image(settings.seed, (height, width))
  if settings.init == 'content':
    return content
  if settings.init == 'style':
    return images.resize(styles[0], (height, width))
  start = images.load_image(settings.init_image, what='init image')
  return images.resize(start, (height, width))


# ---------------------------------------------------------------------------
# Memory.

def estimate_memory_bytes(height, width, spec: losses.LossSpec,
                          optimizer: str) -> int:
  """Rough peak bytes of one evaluation plus optimiser state (float32).

  Counts each layer's activation up to the deepest layer three times (kept
  for the backward pass, its gradient, a temporary), the weights twice (they
  and their pre-flipped copy) and the optimiser's copies of the pixels.
  """
  activations = 0
  h, w, channels = height, width, 3
  for name in vgg.LAYER_ORDER[:vgg.LAYER_ORDER.index(
      vgg.deepest_layer(spec.layers)) + 1]:
    if name.startswith('conv'):
      channels = vgg.CONV_SHAPES[name][1]
    else:
      h, w = h // 2, w // 2
    activations += h * w * channels
  weights = sum(9 * cin * cout + cout for cin, cout in vgg.CONV_SHAPES.values())
  pixel_copies = {'lbfgs': 2 * optim.LBFGS_MEMORY + 6,
                  'lbfgs_nols': 2 * optim.LBFGS_MEMORY + 4}.get(optimizer, 6)
  return 4 * (3 * activations + 2 * weights
              + pixel_copies * height * width * 3)


def available_memory_bytes() -> int:
  """The default device's memory limit (CPU: physical memory)."""
  device = jax.devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def check_memory(settings, height, width):
  needed = estimate_memory_bytes(height, width, settings.spec,
                                 settings.optimizer)
  limit = (settings.max_memory_gb * 2**30 if settings.max_memory_gb
           else available_memory_bytes())
  if needed > limit:
    raise UserError(
        f'config.image_size: {width}x{height} needs about '
        f'{needed / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB '
        'available; use a smaller image_size (or remat / more devices)')


# ---------------------------------------------------------------------------
# Output.

def _finite_or_none(value):
  value = float(value)
  return value if math.isfinite(value) else None


def terms_to_json(terms) -> dict:
  """loss_terms output -> plain floats (non-finite as null)."""
  return {
      'total': _finite_or_none(terms['total']),
      'content': _finite_or_none(terms['content']),
      'style': _finite_or_none(terms['style']),
      'style_layers': {name: _finite_or_none(v)
                       for name, v in terms['style_layers'].items()},
      'tv': _finite_or_none(terms['tv'])}


def _json_safe(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write_json(path: str, data: dict) -> None:
  """Writes JSON atomically (temporary file in the folder, then rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  handle, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.json')
  try:
    with os.fdopen(handle, 'w') as f:
      json.dump(_json_safe(data), f, indent=2, allow_nan=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def versions() -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {'nst_jax': nst_jax.__version__, 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
          'optax': optax.__version__, 'numpy': np.__version__,
          'python': platform.python_version()}


def device_info() -> dict:
  devices = jax.devices()
  return {'platform': devices[0].platform,
          'kind': devices[0].device_kind, 'count': len(devices),
          'processes': jax.process_count()}


def config_dict(config) -> dict:
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def numbered_path(output: str, iteration: int) -> str:
  """out/result.png -> out/result_iter0050.png."""
  stem, ext = os.path.splitext(output)
  return f'{stem}_iter{iteration:04d}{ext}'


def enable_compilation_cache(folder: str) -> str:
  """Turns on JAX's persistent compilation cache; returns the folder used."""
  if not folder:
    return ''
  if folder == 'auto':
    base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    folder = os.path.join(base, 'nst_jax', 'jax')
  os.makedirs(folder, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return folder


class _SignalCatcher:
  """Records SIGINT/SIGTERM instead of dying, so the loop can save first."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


class _Progress:
  """A progress bar on a terminal, plain log lines otherwise."""

  def __init__(self, total):
    self.total = total
    self.start = time.perf_counter()
    self.tty = sys.stderr.isatty()

  def update(self, step, evaluations, total_loss):
    elapsed = time.perf_counter() - self.start
    rate = step / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    if self.tty:
      filled = int(30 * step / max(self.total, 1))
      sys.stderr.write(f'\r[{"#" * filled}{"." * (30 - filled)}] '
                       f'{step}/{self.total} loss {total_loss:.4g} '
                       f'{rate:.2f} it/s ETA {eta:.0f}s ')
      sys.stderr.flush()
    else:
      logging.info('iteration %d/%d evaluations %d loss %.6g (%.2f it/s)',
                   step, self.total, evaluations, total_loss, rate)

  def close(self):
    if self.tty:
      sys.stderr.write('\n')


# ---------------------------------------------------------------------------
# The run.

def run(config) -> dict:
  """Runs style transfer as `config` says and writes the image and manifest.

  Args:
    config: an `ml_collections.ConfigDict` (see configs/default.py) or a dict
      with the same fields.
  Returns:
    The manifest written beside the output image. `manifest['stop_reason']`
    is 'iterations', 'stop_loss', 'tolerance' or 'non_finite'.
  Raises:
    UserError: bad input (nothing has been written).
    Interrupted: SIGINT/SIGTERM; the partial image and manifest were saved.
  """
  started = time.perf_counter()
  settings = settings_lib.check(config)
  cache_folder = enable_compilation_cache(settings.compilation_cache)

  content = read_image(settings.content, settings.image_size, 'content image')
  style_size = max(1, round(settings.image_size * settings.style_scale))
  styles = [read_image(path, style_size, 'style image')
            for path in settings.styles]
  check_image_size(content, settings.content, 'content image',
                   settings.spec.layers)
  for path, style in zip(settings.styles, styles):
    check_image_size(style, path, 'style image', settings.spec.style_layers
                     or settings.spec.layers)
  height, width = content.shape[:2]
  check_memory(settings, height, width)
  start = initial_pixels(settings, content, styles, (height, width))

  warnings = []
  params, meta, weights_path = weights_lib.resolve_weights(
      settings.weights,
      allow_random_fallback=bool(config.get('allow_random_weights', False)),
      log=lambda message: (warnings.append(message),
                           logging.warning('%s', message)))
  if meta.get('random'):
    warning = ('RESULTS USE RANDOM, UNTRAINED VGG19 WEIGHTS (seed '
               f'{meta.get("seed")}), not pretrained ones: see weights/README.md')
    if warning not in warnings:
      warnings.append(warning)
    logging.warning('%s', warning)
  spec = dataclasses.replace(settings.spec,
                             preprocessing=meta['preprocessing'])

  variables = vgg.prepare_variables(
      jax.tree_util.tree_map(jnp.asarray, params))
  targets = jax.jit(losses.make_targets, static_argnames=('spec',))(
      variables, content, styles, spec,
      blend_weights=settings.style_blend_weights)
  problem = optim.Problem(
      variables=variables, targets=targets,
      weights=losses.loss_weights(
          spec, settings.content_weight, settings.style_weight,
          settings.tv_weight, settings.content_layer_weights,
          settings.style_layer_weights))
  learning_rate = jnp.asarray(settings.learning_rate, jnp.float32)
  criteria = optim.stop_criteria(settings.iterations, settings.stop_loss,
                                 settings.tolerance)
  chunk_size = (math.gcd(settings.log_every, settings.save_every)
                if settings.save_every else settings.log_every)
  chunk_size = min(chunk_size, max(settings.iterations, 1))

  # Compile ahead of time, so compilation is timed apart from optimisation.
  compile_start = time.perf_counter()
  pixels = jnp.asarray(start, jnp.float32)
  init_fn = optim.init_state_jit.lower(
      pixels, problem, spec, settings.optimizer, learning_rate).compile()
  state = init_fn(pixels, problem, learning_rate)
  chunk_fn = optim.run_chunk.lower(
      state, problem, spec, settings.optimizer, learning_rate, criteria,
      chunk_size).compile()
  terms_fn = jax.jit(losses.loss_terms, static_argnames=('spec',)).lower(
      pixels, variables, targets, problem.weights, spec).compile()
  compile_s = time.perf_counter() - compile_start

  initial = terms_to_json(terms_fn(pixels, variables, targets,
                                   problem.weights))
  history = [{'iteration': 0, 'evaluations': 1, 'total': initial['total'],
              'content': initial['content'], 'style': initial['style']}]
  final_terms = initial
  progress = _Progress(settings.iterations)
  optimize_start = time.perf_counter()
  first_evaluations = int(state.evaluations)
  interrupted = None
  with _SignalCatcher() as catcher:
    while True:
      if catcher.signum is not None:
        interrupted = catcher.signum
        break
      previous_step = int(state.step)
      state, _, terms = chunk_fn(state, problem, learning_rate, criteria)
      step = int(state.step)
      if step > previous_step:
        final_terms = terms_to_json(terms)
        history.append({'iteration': step,
                        'evaluations': int(state.evaluations),
                        'total': final_terms['total'],
                        'content': final_terms['content'],
                        'style': final_terms['style']})
        progress.update(step, int(state.evaluations),
                        float(terms['total']))
        if settings.save_every and step // settings.save_every > (
            previous_step // settings.save_every):
          images.save_image(numbered_path(settings.output, step),
                            np.asarray(state.pixels))
      if int(state.stop_reason) != optim.RUNNING:
        break
  progress.close()
  optimize_s = time.perf_counter() - optimize_start

  stop_reason = ('interrupted' if interrupted is not None
                 else optim.STOP_REASONS[int(state.stop_reason)])
  loop_evaluations = int(state.evaluations) - first_evaluations
  manifest = {
      'config': config_dict(config),
      'partial': interrupted is not None,
      'stop_reason': stop_reason,
      'iterations_done': int(state.step),
      'weights': {'path': weights_path,
                  'sha256': file_sha256(weights_path) if weights_path else None,
                  'source': meta.get('source'),
                  'source_sha256': meta.get('source_sha256'),
                  'preprocessing': meta.get('preprocessing'),
                  'normalized': bool(meta.get('normalized')),
                  'random': bool(meta.get('random'))},
      'warnings': warnings,
      'device': device_info(),
      'versions': versions(),
      'image_size': {'content': [width, height],
                     'styles': [list(s.shape[1::-1]) for s in styles]},
      'initial': initial,
      'final': final_terms,
      'history': history,
      'evaluations': int(state.evaluations),
      'timing': {
          'compile_s': compile_s,
          'per_evaluation_ms': (1000 * optimize_s / loop_evaluations
                                if loop_evaluations else None),
          'optimize_s': optimize_s,
          'total_s': time.perf_counter() - started},
      'compilation_cache': cache_folder or None,
      'output': settings.output,
  }
  if stop_reason == 'non_finite':
    manifest['non_finite_at_iteration'] = int(state.step)
  images.save_image(settings.output, np.asarray(state.pixels))
  manifest['timing']['total_s'] = time.perf_counter() - started
  write_json(settings.manifest, manifest)
  if interrupted is not None:
    raise Interrupted(interrupted, manifest)
  return manifest
