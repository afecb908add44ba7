"""One style-transfer run from a config: `run(config)` -> manifest dict.

Reads and checks the inputs (nothing is written before they pass), compiles
the loss and the optimisation chunk ahead of time (so the manifest can report
compile time apart from steady-state time), runs the compiled loop chunk by
chunk, and writes the image and its manifest atomically. Ctrl-C / SIGTERM
between chunks saves the current image marked partial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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
from nst_jax import program_cache as program_cache_lib
from nst_jax import weights as weights_lib
from nst_jax import winograd as winograd_lib
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


def initial_pixels(settings, seed, content, styles):
  """The starting image: noise, content, the first style or init_image."""
  height, width = content.shape[:2]
  if settings.init == 'noise':
    return images.noise_image(seed, (height, width))
  if settings.init == 'content':
    return content
  if settings.init == 'style':
    return images.resize(styles[0], (height, width))
  start = images.load_image(settings.init_image, what='init image')
  return images.resize(start, (height, width))


# ---------------------------------------------------------------------------
# Memory.

def estimate_memory_bytes(height, width, spec: losses.LossSpec,
                          optimizer: str, shards: int = 1,
                          lbfgs_memory: int = optim.LBFGS_MEMORY,
                          winograd: bool = False) -> int:
  """Rough peak bytes per device of one evaluation plus optimiser state.

  Counts (float32) each layer's activation up to the deepest layer three
  times (kept for the backward pass, its gradient, a temporary), all 16
  layers' weights, the pre-flipped kernels and, with `winograd`, the
  transforms of the layers that run (`vgg.prepare_variables`), and the
  optimiser's copies of the pixels. With rows split over `shards` devices,
  each holds 1/shards of the activations and pixel copies and all of the
  weights.
  """
  activations = 0
  h, w, channels = height, width, 3
  for name in vgg.layers_to_run(spec.layers):
    if name.startswith('conv'):
      channels = vgg.CONV_SHAPES[name][1]
    else:
      h, w = h // 2, w // 2
    activations += h * w * channels
  pixel_copies = {'lbfgs': 2 * lbfgs_memory + 6,
                  'lbfgs_nols': 2 * lbfgs_memory + 4}.get(optimizer, 6)
  per_image = 3 * activations + pixel_copies * height * width * 3
  return 4 * -(-per_image // shards) + variables_bytes(
      height, width, spec.layers, winograd)


def variables_bytes(height, width, layers, winograd: bool) -> int:
  """Bytes of `vgg.prepare_variables` for `layers` at one image size:
  all 16 layers' weights, plus the flipped kernels and, with `winograd`,
  the forward and backward transforms of the layers that run."""
  to_run = vgg.layers_to_run(layers)
  running = {name: shape for name, shape in vgg.CONV_SHAPES.items()
             if name in to_run}
  floats = sum(9 * cin * cout + cout for cin, cout in vgg.CONV_SHAPES.values())
  floats += sum(9 * cin * cout for cin, cout in running.values())
  if winograd:  # (m + 2)^2 matrices per kernel, forward and backward.
    floats += sum(
        2 * winograd_lib.tile_side(tile) ** 2 * cin * cout
        for name, tiles in vgg.winograd_tiles(
            running, [(height, width)]).items()
        for tile in tiles for cin, cout in [vgg.CONV_SHAPES[name]])
  return 4 * floats


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


def check_memory(settings, height, width, shards=1, winograd=False):
  needed = estimate_memory_bytes(height, width, settings.spec,
                                 settings.optimizer, shards,
                                 settings.lbfgs_memory, winograd)
  limit = (settings.max_memory_gb * 2**30 if settings.max_memory_gb
           else available_memory_bytes())
  if needed > limit:
    raise UserError(
        f'config.image_size: {width}x{height} needs about '
        f'{needed / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB '
        'available per device; use a smaller image_size (or remat, or '
        'shard_rows with more devices)')


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
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return folder


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` once, before any device is used.

  On Cloud TPU pods, SLURM, Open MPI and Kubernetes JAX finds the cluster
  itself. Elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  and NST_JAX_NUM_PROCESSES and NST_JAX_PROCESS_ID on every process.
  """
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  for name, key in (('NST_JAX_NUM_PROCESSES', 'num_processes'),
                    ('NST_JAX_PROCESS_ID', 'process_id')):
    if os.environ.get(name):
      try:
        kwargs[key] = int(os.environ[name])
      except ValueError:
        raise UserError(f'{name}: must be an integer, got '
                        f'{os.environ[name]!r}') from None
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error) else ''
    raise UserError('config.distributed: jax.distributed.initialize() '
                    f'failed: {first_line}') from None


def _writes_outputs() -> bool:
  """Process 0 writes images and manifests; the others only compute."""
  return jax.process_index() == 0


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
# Several members on several devices.

def _stack(trees):
  """Members' pytrees -> one pytree with a leading member axis, on the host
  (NumPy: no small XLA programs to compile before the real ones)."""
  return jax.tree_util.tree_map(
      lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _abstract(tree):
  """Shapes and dtypes only (a program cache key without placements)."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def member_devices(count: int, shard_rows: bool = False) -> list:
  """The devices a run of `count` members uses.

  Every device of every process after `jax.distributed.initialize()` (a
  single process sees only its own). Members are split over at most `count`
  of them; with `shard_rows` every device takes a share of each image.
  """
  devices = jax.devices()
  if shard_rows or jax.process_count() > 1:
    # Every process must take part in each program: across hosts all
    # devices are used (extra member slots repeat the last member and are
    # dropped).
    return devices
  return devices[:max(1, min(count, len(devices)))]


def _spatial_spec(x, shards: int,
                  image_shape=None) -> jax.sharding.PartitionSpec:
  """Member axis first; image-shaped leaves (..., H, W, C) split on H.

  Covers the pixels and optimiser moments (K, H, W, 3) and content features
  (K, h, w, c); with `image_shape` (H, W, 3) also L-BFGS's flat histories
  (K, m, H * W * 3), split on their last axis: in row-major order its equal
  blocks are the same row blocks. Grams (K, c, c) and scalars per member are
  only split by member. JAX arrays are split evenly only, so a leaf whose
  rows don't divide by `shards` stays whole (inside the compiled program XLA
  pads uneven splits itself).
  """
  if x.ndim >= 4 and x.shape[-3] % shards == 0:
    return jax.P('members', *([None] * (x.ndim - 4)), 'rows', None, None)
  if (image_shape is not None and x.ndim == 3
      and x.shape[-1] == np.prod(image_shape) and image_shape[0] % shards == 0):
    return jax.P('members', None, 'rows')
  return jax.P('members') if x.ndim else jax.P()


class MemberPrograms:
  """The batched init and chunk functions, spread over `devices`.

  Members (default): the member axis is split over a 1-D mesh of the
  devices (`shard_map`); each device runs its members with `mode` ('map':
  one after another, or 'vmap'). The VGG variables are replicated.

  Rows (`shard_rows=True`): every image-shaped array is split on its rows
  over all devices and XLA's partitioner does the rest: each convolution
  first exchanges the border rows it needs with its neighbours (halo), each
  Gram matrix is the sum of the shards' partial Grams (one all-reduce), and
  the optimiser's dot products are summed the same way. Per device, memory
  for activations and optimiser state falls with the device count.

  Call `place` on inputs before the functions.
  """

  def __init__(self, spec, optimizer, chunk_size, mode, devices,
               shard_rows=False, program_cache=None):
    self.shard_rows = shard_rows
    self.program_cache = program_cache
    self.static = (spec, optimizer, chunk_size, mode, shard_rows,
                   tuple(d.id for d in devices))
    replicated, members = jax.P(), jax.P('members')
    if shard_rows:
      auto = (jax.sharding.AxisType.Auto,) * 2
      self.mesh = jax.make_mesh((1, len(devices)), ('members', 'rows'),
                                devices=devices, axis_types=auto)
      self.member_slots = 1
    else:
      self.mesh = jax.make_mesh((len(devices),), ('members',),
                                devices=devices)
      self.member_slots = len(devices)

    def constrained(state):
      """Keeps the loop state split by rows, like the inputs."""
      if not shard_rows:
        return state
      image_shape = state.pixels.shape[1:]
      return jax.tree_util.tree_map(
          lambda x: jax.lax.with_sharding_constraint(
              x, jax.NamedSharding(self.mesh, _spatial_spec(
                  x, len(devices), image_shape))), state)

    def init_fn(variables, pixels, targets, weights, lr):
      # The same convolutions as the loop: L-BFGS's first curvature pair
      # subtracts this gradient from the next one after a tiny first step,
      # and would amplify the rounding differences of two algorithms.
      return constrained(optim.init_state_batched(
          pixels, optim.Problem(variables, targets, weights), spec, optimizer,
          lr, mode))

    def chunk_fn(variables, state, targets, weights, lr, criteria):
      state, values, terms = optim.run_chunk_batched(
          state, optim.Problem(variables, targets, weights), spec, optimizer,
          lr, criteria, chunk_size, mode)
      return constrained(state), values, terms

    options = optim.compiler_options(devices[0].platform)

    def sharded(fn, num_batched, donate=()):
      if shard_rows:  # The inputs' shardings drive XLA's partitioner.
        return jax.jit(fn, donate_argnums=donate, compiler_options=options)
      return jax.jit(jax.shard_map(
          fn, mesh=self.mesh, in_specs=(replicated,) + (members,) * num_batched,
          out_specs=members, check_vma=False), donate_argnums=donate,
                     compiler_options=options)

    # The loop state is donated: each chunk reuses its buffers in place, so
    # memory does not grow with iterations (the CPU backend ignores this).
    donate_state = () if devices[0].platform == 'cpu' else (1,)
    self._jitted = {'init': sharded(init_fn, 4),
                    'chunk': sharded(chunk_fn, 5, donate_state)}
    self._compiled = {}
    self.compilations = 0

  def key(self, name, key_args):
    """Program `name`'s key in the program cache, from `key_args`: host or
    device arrays (only their shapes and dtypes count; the placement
    follows from the static settings) that fix the program's arguments.
    'init' takes (variables, pixels, weights, learning_rate): the targets
    follow from the variables and the content's size, which the pixels
    share. 'chunk' takes those and the stop criteria: the loop state is
    init's output."""
    return self.program_cache.key(name, self.static, _abstract(key_args))

  def prefetch(self, name, key_args):
    """Starts loading program `name` from the program cache (if there)."""
    if self.program_cache:
      self.program_cache.prefetch(self.key(name, key_args),
                                  list(self.mesh.devices.flat))

  def compiled(self, name, key_args, *args):
    """The AOT-compiled program `name` for arguments shaped like `args`.

    Compiled once per argument shapes and dtypes: new weights, images of the
    same size or new loss weights reuse it. With a program cache, loaded
    from it when an earlier process compiled it (see `key`).
    """
    signature = (name, jax.tree_util.tree_structure(args), tuple(
        (x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(args)))
    if signature not in self._compiled:
      if self.program_cache:
        self._compiled[signature] = self.program_cache.compile(
            self.key(name, key_args), self._jitted[name], args,
            list(self.mesh.devices.flat))
      else:
        self._compiled[signature] = self._jitted[name].lower(
            *args).compile()
      self.compilations += 1
    return self._compiled[signature]

  def place(self, tree, batched=True):
    """Puts host arrays on the mesh: split by member (and rows), or
    replicated. Each process supplies the same whole arrays and keeps only
    the shards of its own devices."""
    def spec(x):
      if not batched:
        return jax.P()
      if self.shard_rows:
        return _spatial_spec(x, len(self.mesh.devices.flat))
      return jax.P('members')

    def put(x):
      sharding = jax.NamedSharding(self.mesh, spec(x))
      if jax.process_count() == 1:
        return jax.device_put(x, sharding)
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding,
                                          lambda index: x[index])
    return jax.tree_util.tree_map(put, tree)


_PROGRAMS = {}


def member_programs(spec, optimizer, chunk_size, mode, devices,
                    shard_rows=False, program_cache=None):
  """One `MemberPrograms` per static setting, kept for the process."""
  key = (spec, optimizer, chunk_size, mode, devices, shard_rows,
         program_cache.folder if program_cache else None)
  if key not in _PROGRAMS:
    _PROGRAMS[key] = MemberPrograms(spec, optimizer, chunk_size, mode,
                                    list(devices), shard_rows, program_cache)
  return _PROGRAMS[key]


def compilation_count() -> int:
  """How many programs `run` has compiled in this process."""
  return sum(programs.compilations for programs in _PROGRAMS.values())


def pad_members(trees, count: int):
  """Repeats the last member so every device gets as many (they're dropped)."""
  return [t for t in trees] + [trees[-1]] * (count - len(trees))


# ---------------------------------------------------------------------------
# The run.

def run(config, members=None) -> dict:
  """Runs style transfer as `config` says and writes the images and manifest.

  Without a sweep: `output` (e.g. out/result.png) and its manifest
  (out/result.json). With `config.sweep.*` lists: out/result_<k>.png per
  member, out/result_grid.png, and one out/result.json whose `runs` list
  holds each member.

  Args:
    config: an `ml_collections.ConfigDict` (see configs/default.py) or a dict
      with the same fields.
    members: optional list of per-member overrides for a sweep from Python,
      each a dict with any of 'content_weight', 'style_weight', 'tv_weight',
      'seed', 'styles' (tuple of paths), 'style_layer_weights' and
      'content_layer_weights' (one per configured layer; zeros switch layers
      off, as the paper's Figure 3 rows do) and 'label' (grid text). It
      replaces `config.sweep`.
  Returns:
    The manifest written beside the output image. `manifest['stop_reason']`
    (per run in a sweep) is 'iterations', 'stop_loss', 'tolerance' or
    'non_finite'.
  Raises:
    UserError: bad input (nothing has been written).
    Interrupted: SIGINT/SIGTERM; the partial images and manifest were saved.
  """
  # Signals are recorded from here on and acted on between compiled chunks.
  with _SignalCatcher() as catcher:
    return _run(config, members, catcher)


@contextlib.contextmanager
def _out_of_memory_is_user_error(width, height):
  """XLA's RESOURCE_EXHAUSTED becomes the one-line advice the estimate gives."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    text = str(error)
    if 'RESOURCE_EXHAUSTED' not in text and 'Out of memory' not in text:
      raise
    raise UserError(f'config.image_size: {width}x{height} ran out of device '
                    'memory; use a smaller image_size, --config.remat=True '
                    'or more devices') from None


def _read_inputs(settings, members, image_size):
  """Content and style images at `image_size`, checked against the layers."""
  content = read_image(settings.content, image_size, 'content image')
  check_image_size(content, settings.content, 'content image',
                   settings.spec.layers)
  style_size = max(1, round(image_size * settings.style_scale))
  style_images = {}
  for member in members:
    for path in member['styles']:
      if path not in style_images:
        style_images[path] = read_image(path, style_size, 'style image')
        check_image_size(style_images[path], path, 'style image',
                         settings.spec.style_layers or settings.spec.layers)
  return content, style_images


def resolve_conv_algorithm(conv_algorithm: str, platform: str, dtype: str,
                           shard_rows: bool = False) -> str:
  """'auto' -> 'winograd' on CPU in float32, else 'direct'.

  On CPU Winograd's algorithm cuts an evaluation's time by 36-44% at
  128-512 px (README, Performance). GPU libraries (cuDNN) pick Winograd kernels
  themselves and TPUs run convolutions on their matrix units, where the
  transforms would only add memory traffic; in bfloat16 the transforms lose
  too much precision; with rows split over devices the direct convolution's
  halo exchange is simpler.
  """
  if conv_algorithm != 'auto':
    return conv_algorithm
  if platform == 'cpu' and dtype == 'float32' and not shard_rows:
    return 'winograd'
  return 'direct'


def level_sizes(settings) -> list:
  """Image sizes, coarsest first: image_size / 2^k for k = coarse_to_fine..0."""
  return [max(1, settings.image_size // 2 ** k)
          for k in range(settings.coarse_to_fine, -1, -1)]


@dataclasses.dataclass
class _Level:
  """What one resolution level of the optimisation produced (on the host,
  one entry per member)."""
  pixels: np.ndarray
  steps: np.ndarray
  evaluations: np.ndarray
  stop_reasons: np.ndarray
  initial: list
  finals: list
  histories: list
  compile_s: float
  optimize_s: float
  loop_start_unix: float
  loop_evaluations: int
  interrupted: object


def _optimize(settings, spec, variables, members, content, style_images,
              starts, iterations, mode, devices, catcher, offsets,
              program_cache) -> _Level:
  """Optimises every member from `starts` at one image size."""
  count = len(members)
  chunk_size = (math.gcd(settings.log_every, settings.save_every)
                if settings.save_every else settings.log_every)
  chunk_size = min(chunk_size, max(iterations, 1))
  optimizer = optim.Optimizer(settings.optimizer, settings.lbfgs_memory)
  programs = member_programs(spec, optimizer, chunk_size, mode,
                             tuple(devices), settings.shard_rows,
                             program_cache)
  slots = programs.member_slots
  padded = -(-count // slots) * slots
  weights = _stack(pad_members([
      losses.loss_weights(spec, m['content_weight'], m['style_weight'],
                          m['tv_weight'], m['content_layer_weights'],
                          m['style_layer_weights']) for m in members],
                               padded))
  pixels = np.stack(pad_members(starts, padded)).astype(np.float32)
  learning_rate = np.full((padded,), settings.learning_rate, np.float32)
  criteria = _stack([optim.stop_criteria(
      iterations, settings.stop_loss, settings.tolerance)] * padded)
  init_key_args = (variables, pixels, weights, learning_rate)
  chunk_key_args = init_key_args + (criteria,)
  targets_by_styles = {}
  for member in members:
    if member['styles'] not in targets_by_styles:
      styles = member['styles']
      targets_by_styles[styles] = _targets(
          variables, content, [style_images[p] for p in styles],
          (settings.style_blend_weights if styles == settings.styles
           else (1.0,) * len(styles)), spec, program_cache)
  # Dispatched, not finished: the init and chunk programs load from the
  # program cache on worker threads while the targets compute.
  programs.prefetch('init', init_key_args)
  programs.prefetch('chunk', chunk_key_args)
  targets = _stack(pad_members(
      [targets_by_styles[m['styles']] for m in members], padded))
  step_offset, evaluation_offset = offsets
  height, width = content.shape[:2]

  with _out_of_memory_is_user_error(width, height):
    # Compile ahead of time, so compilation is timed apart from optimisation.
    variables = programs.place(variables, batched=False)
    pixels, targets, weights, learning_rate, criteria = programs.place(
        (pixels, targets, weights, learning_rate, criteria))
    compile_start = time.perf_counter()
    init_fn = programs.compiled('init', init_key_args, variables, pixels,
                                targets, weights, learning_rate)
    compile_s = time.perf_counter() - compile_start
    state = init_fn(variables, pixels, targets, weights, learning_rate)
    initial_terms = state.terms
    compile_start = time.perf_counter()
    chunk_fn = programs.compiled('chunk', chunk_key_args, variables, state,
                                 targets, weights, learning_rate, criteria)
    compile_s += time.perf_counter() - compile_start

    initial_terms = _to_host(initial_terms)
    initial = [terms_to_json(_member(initial_terms, k)) for k in range(count)]
    histories = [[_history_row(step_offset, evaluation_offset[k] + 1,
                               initial[k], width)] for k in range(count)]
    finals = list(initial)
    progress = _Progress(iterations)
    steps = _to_host(state.step)[:count]
    optimize_start = time.perf_counter()
    loop_start_unix = time.time()
    interrupted = None
    while True:
      if catcher.signum is not None:
        interrupted = catcher.signum
        break
      previous_steps = steps
      state, _, terms = chunk_fn(variables, state, targets, weights,
                                 learning_rate, criteria)
      # One transfer (a gather across hosts) per chunk.
      steps, evaluations, stop_reasons, terms = _to_host(
          (state.step, state.evaluations, state.stop_reason, terms))
      steps, evaluations = steps[:count], evaluations[:count]
      for k in np.nonzero(steps > previous_steps)[0]:
        finals[k] = terms_to_json(_member(terms, k))
        histories[k].append(_history_row(
            step_offset + int(steps[k]),
            evaluation_offset[k] + int(evaluations[k]), finals[k], width))
      if (steps > previous_steps).any():
        progress.update(int(steps.max()), int(evaluations.sum()),
                        finals[int(np.argmax(steps))]['total'] or math.nan)
        if settings.save_every and int(steps.max()) // settings.save_every > (
            int(previous_steps.max()) // settings.save_every):
          all_pixels = _to_host(state.pixels)
          for k in range(count if _writes_outputs() else 0):
            images.save_image(
                numbered_path(member_output(settings.output, k, count),
                              step_offset + int(steps[k])), all_pixels[k])
      if (stop_reasons[:count] != optim.RUNNING).all():
        break
  progress.close()
  steps, evaluations, stop_reasons, pixels = _to_host(
      (state.step, state.evaluations, state.stop_reason, state.pixels))
  return _Level(
      pixels=pixels[:count], steps=steps[:count],
      evaluations=evaluations[:count], stop_reasons=stop_reasons[:count],
      initial=initial, finals=finals, histories=histories,
      compile_s=compile_s, optimize_s=time.perf_counter() - optimize_start,
      loop_start_unix=loop_start_unix,
      loop_evaluations=int(evaluations[:count].sum()) - count,
      interrupted=interrupted)


def _run(config, overrides, catcher) -> dict:
  """`run`, with signals recorded by `catcher`."""
  started, started_unix = time.perf_counter(), time.time()
  settings = settings_lib.check(config)
  members = settings_lib.sweep_members(config, settings, overrides)
  if settings.distributed:
    initialize_distributed()
  cache_folder = enable_compilation_cache(settings.compilation_cache)
  program_cache = (program_cache_lib.ProgramCache(
      os.path.join(cache_folder, 'programs')) if cache_folder else None)
  # Single process only: every process of a cluster must trace alike.
  usable_cache = program_cache if jax.process_count() == 1 else None
  sizes = level_sizes(settings)
  inputs = [_read_inputs(settings, members, size) for size in sizes]
  content, style_images = inputs[-1]
  height, width = content.shape[:2]
  devices = member_devices(len(members), settings.shard_rows)
  conv_algorithm = resolve_conv_algorithm(
      settings.conv_algorithm, devices[0].platform, settings.spec.dtype,
      settings.shard_rows)
  check_memory(settings, height, width,
               shards=len(devices) if settings.shard_rows else 1,
               winograd=conv_algorithm == 'winograd')

  warnings = []
  if settings.shard_rows and height % len(devices):
    warnings.append(
        f'shard_rows: {height} rows do not divide evenly over {len(devices)} '
        'devices, so the image is not split (each device holds all of it); '
        f'use an image height that is a multiple of {len(devices)}')
    logging.warning('%s', warnings[-1])
  params, meta, weights_path = weights_lib.resolve_weights(
      settings.weights,
      allow_random_fallback=bool(config.get('allow_random_weights', False)),
      log=lambda message: (warnings.append(message),
                           logging.warning('%s', message)))
  if meta.get('random') and not any('RANDOM' in w for w in warnings):
    warning = ('RESULTS USE RANDOM, UNTRAINED VGG19 WEIGHTS (seed '
               f'{meta.get("seed")}), not pretrained ones: see weights/README.md')
    warnings.append(warning)
    logging.warning('%s', warning)
  spec = dataclasses.replace(settings.spec,
                             preprocessing=meta['preprocessing'],
                             conv_algorithm=conv_algorithm)
  network_sizes = {image.shape[:2] for level_content, level_styles in inputs
                   for image in [level_content, *level_styles.values()]}
  variables = _prepare_variables(
      params, tuple(sorted(network_sizes)) if conv_algorithm == 'winograd'
      else (), spec.layers, usable_cache)
  mode = settings.sweep_mode
  if mode == 'auto':
    mode = optim.default_sweep_mode(settings.optimizer, devices[0].platform)

  # Coarse to fine: each level starts from the previous one's result,
  # upsampled; the last level is the requested size.
  count = len(members)
  level_content, level_styles = inputs[0]
  starts = [initial_pixels(settings, member['seed'], level_content,
                           [level_styles[p] for p in member['styles']])
            for member in members]
  levels = []
  offsets = (0, [0] * count)
  for index, (level_content, level_styles) in enumerate(inputs):
    if levels:
      previous = levels[-1].pixels
      starts = [images.resize(previous[k], level_content.shape[:2])
                for k in range(count)]
    last = index == len(inputs) - 1
    last_step_offset = offsets[0]
    level = _optimize(settings, spec, variables, members, level_content,
                      level_styles, starts,
                      settings.iterations if last else
                      settings.coarse_iterations,
                      mode, devices, catcher, offsets, usable_cache)
    levels.append(level)
    offsets = (offsets[0] + int(level.steps.max()),
               [offsets[1][k] + int(level.evaluations[k])
                for k in range(count)])
    if level.interrupted is not None or (
        level.stop_reasons == optim.NON_FINITE
    ).any():
      break
  last_level = levels[-1]
  interrupted = levels[-1].interrupted
  finals = levels[-1].finals
  initial = levels[0].initial
  histories = [sum((level.histories[k] for level in levels), [])
               for k in range(count)]
  compile_s = sum(level.compile_s for level in levels)
  optimize_s = sum(level.optimize_s for level in levels)
  loop_evaluations = sum(level.loop_evaluations for level in levels)

  steps = last_step_offset + last_level.steps
  evaluations = np.asarray(offsets[1])
  reasons = ['interrupted' if interrupted is not None
             else optim.STOP_REASONS[r]
             for r in last_level.stop_reasons]
  runs = []
  final_pixels = last_level.pixels
  for k, member in enumerate(members):
    output = member_output(settings.output, k, count)
    if _writes_outputs():
      images.save_image(output, final_pixels[k])
    entry = {'values': member['varied'], 'output': output,
             'stop_reason': reasons[k], 'iterations_done': int(steps[k]),
             'initial': initial[k], 'final': finals[k],
             'history': histories[k], 'evaluations': int(evaluations[k]),
             'styles': list(member['styles']),
             'content_weight': member['content_weight'],
             'style_weight': member['style_weight'],
             'tv_weight': member['tv_weight'], 'seed': member['seed'],
             'content_layer_weights': member['content_layer_weights'],
             'style_layer_weights': member['style_layer_weights']}
    if reasons[k] == 'non_finite':
      entry['non_finite_at_iteration'] = int(steps[k])
    runs.append(entry)

  manifest = {
      'config': config_dict(config),
      'partial': interrupted is not None,
      'weights': {'path': weights_path,
                  'sha256': weights_lib.file_sha256(weights_path) if weights_path else None,
                  'source': meta.get('source'),
                  'source_sha256': meta.get('source_sha256'),
                  'preprocessing': meta.get('preprocessing'),
                  'normalized': bool(meta.get('normalized')),
                  'random': bool(meta.get('random'))},
      'warnings': warnings,
      'device': dict(device_info(), used=len(devices), sweep_mode=mode,
                     shard_rows=settings.shard_rows,
                     conv_algorithm=conv_algorithm),
      'versions': versions(),
      'image_size': {'content': [width, height],
                     'styles': {p: list(s.shape[1::-1])
                                for p, s in style_images.items()},
                     'levels': sizes},
      'compilation_cache': cache_folder or None,
  }
  if count == 1:
    manifest.update({key: runs[0][key] for key in (
        'output', 'stop_reason', 'iterations_done', 'initial', 'final',
        'history', 'evaluations')})
    if 'non_finite_at_iteration' in runs[0]:
      manifest['non_finite_at_iteration'] = runs[0]['non_finite_at_iteration']
  else:
    grid = os.path.splitext(settings.output)[0] + '_grid.png'
    if _writes_outputs():
      images.save_image(grid, images.make_grid(
          [final_pixels[k] for k in range(count)],
          labels=[m.get('label') or ', '.join(
              f'{f}={v}' for f, v in run_['values'].items())
                  for m, run_ in zip(members, runs)]))
    manifest.update({'output': settings.output, 'grid': grid, 'runs': runs,
                     'stop_reason': _overall_reason(reasons),
                     'evaluations': int(evaluations.sum())})
  manifest['timing'] = {
      'compile_s': compile_s,
      'per_evaluation_ms': (1000 * optimize_s / loop_evaluations
                            if loop_evaluations else None),
      'optimize_s': optimize_s,
      'total_s': time.perf_counter() - started,
      # From run() to the first optimisation step (reading inputs and
      # weights, targets, compiling, the initial evaluation).
      'start_to_loop_s': levels[0].loop_start_unix - started_unix,
      'loop_start_unix': levels[0].loop_start_unix}
  manifest['programs'] = {
      'cache': program_cache.folder if program_cache else None,
      'loaded': program_cache.loaded if program_cache else 0,
      'traced': program_cache.traced if program_cache else None}
  if _writes_outputs():
    write_json(settings.manifest, manifest)
  if interrupted is not None:
    raise Interrupted(interrupted, manifest)
  return manifest


_make_targets = jax.jit(losses.make_targets, static_argnames=('spec',))


def _run_cached(program_cache, name, static, jitted, args):
  """`jitted(*args)` on the default device, the program from
  `program_cache` (loaded, or compiled and written)."""
  key = program_cache.key(name, static, _abstract(args))
  return program_cache.compile(key, jitted, args, jax.devices()[:1])(*args)


def _prepare_variables(params, winograd_sizes, layers, program_cache):
  """`vgg.prepare_variables`, its programs from the program cache when
  there is one."""
  # device_put, not jnp.asarray: that compiles a tiny program per shape.
  params = jax.device_put(params)
  run_program = (functools.partial(_run_cached, program_cache)
                 if program_cache else None)
  return vgg.prepare_variables(params, winograd_sizes, layers, run_program)


def _targets(variables, content, style_list, blend_weights, spec,
             program_cache):
  """`losses.make_targets`, compiled (once per machine with a program
  cache).

  With direct convolutions whatever `spec.conv_algorithm`: the targets are
  computed once, and Winograd's transforms make a program's machine code
  several times larger and slower to load.
  """
  spec = dataclasses.replace(spec, conv_algorithm='direct')
  args = jax.device_put((variables, np.asarray(content, np.float32),
                         [np.asarray(s, np.float32) for s in style_list],
                         np.asarray(blend_weights, np.float32)))
  if program_cache is None:
    variables, content, style_list, blend_weights = args
    return _make_targets(variables, content, style_list, spec=spec,
                         blend_weights=blend_weights)
  jitted = jax.jit(lambda v, c, s, b: losses.make_targets(v, c, s, spec, b))
  return _run_cached(program_cache, 'targets', spec, jitted, args)


def _member(tree, k):
  """Member k of a batched pytree on the host."""
  return jax.tree_util.tree_map(lambda x: x[k], tree)


def _to_host(tree):
  """Whole NumPy arrays on this host, gathered from every process when the
  devices span several."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def _history_row(iteration, evaluations, terms, width):
  return {'iteration': iteration, 'evaluations': evaluations,
          'total': terms['total'], 'content': terms['content'],
          'style': terms['style'], 'width': width}


def _overall_reason(reasons):
  for reason in ('interrupted', 'non_finite'):
    if reason in reasons:
      return reason
  return reasons[0] if len(set(reasons)) == 1 else 'mixed'


def member_output(output: str, k: int, count: int) -> str:
  """out/result.png for a single run, out/result_<k>.png in a sweep."""
  if count == 1:
    return output
  stem, ext = os.path.splitext(output)
  return f'{stem}_{k}{ext}'
