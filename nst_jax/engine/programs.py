"""The compiled programs, built, compiled and kept in one place.

A run needs four kinds of program: the kernels' preparation (flips and
Winograd transforms, once per weights), the targets (once per style), and
the optimisation loop's `init` and `chunk` (`descent.init_state` and
`descent.run_chunk`, batched over the members and placed on a mesh). All are
compiled ahead of time, so compilation is timed apart from optimisation,
with the platform's XLA options (`compiler_options`), and each is compiled
once per argument shapes: new weights, images of the same size or new loss
weights reuse it.

`Programs` keeps them for its owner (a process, a notebook, a test) and,
given an on-disk `program_cache.ProgramCache`, loads them from there in a
new process instead of tracing and compiling.

Example::

  programs = Programs()
  loop = programs.loop(spec, optimizers.Optimizer('lbfgs'), chunk_size=10,
                       mode='map', devices=jax.devices()[:1])
  init = loop.compiled('init', key_args, *args)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

from nst_jax.core import descent, losses, objective, optimizers, vgg
from nst_jax.engine import devices as devices_lib
from nst_jax.engine import program_cache as program_cache_lib

# XLA:CPU options for the optimisation programs (`compiler_options`).
CPU_COMPILER_OPTIONS = {
    # Orders the operations to keep fewer buffers live instead of running
    # independent ones side by side. Results are bit-identical; stand-alone
    # evaluations run faster and steadier with it (`scripts/benchmark.py`
    # times both schedulers).
    'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED',
    # No YNNPACK fusions: the matrix products (most of them the Winograd
    # tiles' batched products) run on XLA's own Eigen kernels, faster on
    # these shapes (the benchmark's "XLA's default options" column).
    'xla_cpu_experimental_ynn_fusion_type': '',
}


@functools.lru_cache(maxsize=None)
def _accepted(name: str, value: str) -> bool:
  """Whether this jaxlib's XLA knows the option (an unknown one fails every
  compilation); checked on a trivial program, once per process."""
  try:
    jax.jit(lambda x: x).lower(np.float32(0)).compile({name: value})
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def compiler_options(platform: str) -> dict:
  """XLA options for the optimisation programs on `platform`.

  On CPU, those of `CPU_COMPILER_OPTIONS` that this jaxlib accepts (the
  YNNPACK one is experimental and older jaxlibs lack it). Other platforms
  keep XLA's defaults.

  Example::

    jitted = jax.jit(fn, compiler_options=programs.compiler_options('cpu'))
  """
  if platform != 'cpu':
    return {}
  return {name: value for name, value in CPU_COMPILER_OPTIONS.items()
          if _accepted(name, value)}


def abstract(tree):
  """Shapes and dtypes only (a program cache key without placements)."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def open_cache(folder: str) -> tuple[str, Optional[program_cache_lib.ProgramCache]]:
  """Turns on JAX's persistent compilation cache in `folder` ('auto':
  ~/.cache/nst_jax/jax; '': off) and opens the program cache beside it.

  Returns:
    (the folder used or '', a `ProgramCache` or None). The program cache is
    for a single process only: every process of a cluster must trace alike.
  """
  if not folder:
    return '', None
  if folder == 'auto':
    base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    folder = os.path.join(base, 'nst_jax', 'jax')
  os.makedirs(folder, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  if jax.process_count() > 1:
    return folder, None
  return folder, program_cache_lib.ProgramCache(
      os.path.join(folder, 'programs'))


@dataclasses.dataclass(frozen=True)
class LoopSetting:
  """What fixes a loop program besides its arguments' shapes (hashable)."""
  spec: losses.LossSpec
  optimizer: optimizers.Optimizer
  chunk_size: int
  mode: str                # how a device runs its members: 'map' | 'vmap'
  device_ids: tuple
  shard_rows: bool = False
  # A joint video window (spec.frames): its frames split over the devices.
  shard_frames: bool = False


class LoopPrograms:
  """The batched `init` and `chunk` programs of one `LoopSetting`.

  Members (default): the member axis is split over a 1-D mesh of the
  devices (`shard_map`); each device runs its members with `mode` ('map':
  one after another, or 'vmap'; one member per device runs unbatched). The
  VGG variables are replicated.

  Rows (`shard_rows=True`): every image-shaped array is split on its rows
  over all devices and XLA's partitioner does the rest (see
  `nst_jax.engine.devices`). Per device, memory for activations and optimiser state
  falls with the device count.

  Frames (`shard_frames=True`, a joint video window): the same, split on
  the window's frame axis (`devices.spatial_spec`).

  'init' is `(variables, pixels, targets, loss_weights, learning_rate) ->
  LoopState`; 'chunk' is `(variables, state, targets, loss_weights,
  learning_rate, criteria) -> (state, values, terms)`. Call `place` on
  inputs before the programs.
  """

  def __init__(self, setting: LoopSetting, devices: list, program_cache=None):
    self.setting = setting
    self.program_cache = program_cache
    split = setting.shard_rows or setting.shard_frames
    self.mesh = devices_lib.make_mesh(devices, split)
    self.member_slots = 1 if split else len(devices)
    self._compiled = {}
    self._ready = set()  # (name, signature of key_args) compiled here
    self.compilations = 0
    spec, optimizer = setting.spec, setting.optimizer
    mode, chunk_size = setting.mode, setting.chunk_size

    def constrained(state):
      """Keeps the loop state split by rows, like the inputs."""
      if not split:
        return state
      image_shape = state.pixels.shape[1:]
      return jax.tree_util.tree_map(
          lambda x: jax.lax.with_sharding_constraint(
              x, jax.NamedSharding(self.mesh, devices_lib.spatial_spec(
                  x, len(devices), image_shape, setting.shard_frames))),
          state)

    def init_fn(variables, pixels, targets, loss_weights, lr):
      return constrained(descent.init_state_batched(
          pixels, descent.Problem(variables, targets, loss_weights), spec,
          optimizer, lr, mode))

    def chunk_fn(variables, state, targets, loss_weights, lr, criteria):
      state, values, terms = descent.run_chunk_batched(
          state, descent.Problem(variables, targets, loss_weights), spec,
          optimizer, lr, criteria, chunk_size, mode)
      return constrained(state), values, terms

    options = compiler_options(devices[0].platform)

    def sharded(fn, num_batched, donate=()):
      if split:  # The inputs' shardings drive the partitioner.
        return jax.jit(fn, donate_argnums=donate, compiler_options=options)
      return jax.jit(jax.shard_map(
          fn, mesh=self.mesh,
          in_specs=(jax.P(),) + (jax.P('members'),) * num_batched,
          out_specs=jax.P('members'), check_vma=False),
                     donate_argnums=donate, compiler_options=options)

    # The loop state is donated: each chunk reuses its buffers in place, so
    # memory does not grow with iterations (the CPU backend ignores this).
    donate_state = () if devices[0].platform == 'cpu' else (1,)
    self._jitted = {'init': sharded(init_fn, 4),
                    'chunk': sharded(chunk_fn, 5, donate_state)}

  def key(self, name, key_args):
    """Program `name`'s key in the program cache, from `key_args`: host or
    device arrays (only their shapes and dtypes count; the placement
    follows from the setting) that fix the program's arguments. 'init'
    takes (variables, pixels, loss_weights, learning_rate): the targets
    follow from the variables and the content's size, which the pixels
    share. 'chunk' takes those and the stop criteria: the loop state is
    init's output."""
    return self.program_cache.key(name, self.setting, abstract(key_args))

  def is_ready(self, name, key_args) -> bool:
    """Whether `compiled(name, key_args, ...)` will neither trace nor
    compile: held here, or in the program cache on disk."""
    if self._signature(name, key_args) in self._ready:
      return True
    return bool(self.program_cache) and self.program_cache.has(
        self.key(name, key_args))

  def prefetch(self, name, key_args):
    """Starts loading program `name` from the program cache (if there)."""
    if self.program_cache:
      self.program_cache.prefetch(self.key(name, key_args),
                                  list(self.mesh.devices.flat))

  @staticmethod
  def _signature(name, args):
    return (name, jax.tree_util.tree_structure(args), tuple(
        (x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(args)))

  def compiled(self, name, key_args, *args):
    """The AOT-compiled program `name` for arguments shaped like `args`
    (loaded from the program cache when an earlier process compiled it)."""
    signature = self._signature(name, args)
    if signature not in self._compiled:
      if self.program_cache:
        self._compiled[signature] = self.program_cache.compile(
            self.key(name, key_args), self._jitted[name], args,
            list(self.mesh.devices.flat))
      else:
        self._compiled[signature] = self._jitted[name].lower(
            *args).compile()
      self._ready.add(self._signature(name, key_args))
      self.compilations += 1
    return self._compiled[signature]

  def place(self, tree, batched=True):
    """`devices.place` on this program's mesh."""
    return devices_lib.place(tree, self.mesh, self.setting.shard_rows,
                             batched, self.setting.shard_frames)


class Programs:
  """Compiled programs kept for reuse, optionally backed by a program cache.

  One instance serves any number of runs: a run whose settings and sizes an
  earlier one had compiles nothing. `nst_jax.stylize` and `run` use a
  `Programs` of the process unless given one.

  Attributes:
    program_cache: the on-disk `ProgramCache`, or None.
  """

  def __init__(self, program_cache=None):
    self.program_cache = program_cache
    self._loops = {}

  def loop(self, spec, optimizer, chunk_size: int, mode: str, devices,
           shard_rows: bool = False,
           shard_frames: bool = False) -> LoopPrograms:
    """The `LoopPrograms` of these settings (made once, then kept)."""
    setting = LoopSetting(spec, optimizers.as_optimizer(optimizer), chunk_size,
                          mode, tuple(d.id for d in devices), shard_rows,
                          shard_frames)
    if setting not in self._loops:
      self._loops[setting] = LoopPrograms(setting, list(devices),
                                          self.program_cache)
    return self._loops[setting]

  @property
  def compilations(self) -> int:
    """Loop programs compiled or loaded so far (each once)."""
    return sum(loop.compilations for loop in self._loops.values())

  def executables(self, name: str) -> list:
    """The compiled loop programs called `name` ('init', 'chunk'), e.g. for
    their `memory_analysis()`."""
    return [compiled for loop in self._loops.values()
            for (program, *_), compiled in loop._compiled.items()  # pylint: disable=protected-access
            if program == name]

  def _run_cached(self, name, static, jitted, args):
    """`jitted(*args)` on the default device, its program from the program
    cache (loaded, or compiled and written)."""
    key = self.program_cache.key(name, static, abstract(args))
    return self.program_cache.compile(key, jitted, args,
                                      jax.devices()[:1])(*args)

  def prepare_variables(self, params, winograd_sizes, layers) -> dict:
    """`vgg.prepare_variables`, its two programs from the program cache
    when there is one."""
    # device_put, not jnp.asarray: that compiles a tiny program per shape.
    params = jax.device_put(params)
    if self.program_cache is None:
      return vgg.prepare_variables(params, winograd_sizes, layers)
    kernels = vgg.running_kernels(params, layers)
    flipped = self._run_cached('flipped', (), vgg.flip_all, (kernels,))
    tiles = vgg.winograd_tiles(params, winograd_sizes, layers)
    transforms = self._run_cached(
        'winograd', tiles, vgg.transform_program(tiles),
        ({name: kernels[name] for name, _ in tiles},
         {name: flipped[name] for name, _ in tiles})) if tiles else None
    return vgg.assemble_variables(params, flipped, transforms)

  def targets(self, variables, content, style_list, blend_weights, spec,
              content_masks=None, style_masks=None,
              seed=0) -> objective.Targets:
    """`objective.make_targets`, compiled (once per machine with a program
    cache); `seed` draws the sliced loss's directions.

    With direct convolutions whatever `spec.conv_algorithm`: the targets are
    computed once, and Winograd's transforms make a program's machine code
    several times larger and slower to load.
    """
    spec = dataclasses.replace(spec, conv_algorithm='direct')
    as_arrays = lambda xs: None if xs is None else [
        np.asarray(x, np.float32) for x in xs]
    args = jax.device_put((
        variables, np.asarray(content, np.float32), as_arrays(style_list),
        np.asarray(blend_weights, np.float32), as_arrays(content_masks),
        as_arrays(style_masks), np.asarray(seed, np.uint32)))
    if self.program_cache is None:
      return _targets_program(spec)(*args)
    return self._run_cached('targets', spec, _targets_program(spec), args)


@functools.lru_cache(maxsize=None)
def _targets_program(spec):
  """`objective.make_targets` jitted for `spec` (arguments as `targets` puts
  them), with `compiler_options`: the memory-optimised scheduler keeps the
  forward passes of large images in less memory (a 4096 px style in 3 row
  strips: 4.7 instead of 7.3 GiB of XLA's buffers)."""
  return jax.jit(lambda variables, content, styles, blend, content_masks,
                 style_masks, seed: objective.make_targets(
                     variables, content, styles, spec, blend, content_masks,
                     style_masks, seed),
                 compiler_options=compiler_options(jax.devices()[0].platform))


_SHARED = {}


def shared(program_cache=None) -> Programs:
  """The process's `Programs` for `program_cache` (one per cache folder),
  what `stylize` and `run` use unless given their own."""
  key = program_cache.folder if program_cache else None
  if key not in _SHARED:
    _SHARED[key] = Programs(program_cache)
  return _SHARED[key]
