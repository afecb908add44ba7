"""Compiled programs kept on disk, so a new process neither traces nor
compiles, and loads them while it does other work.

JAX's persistent compilation cache skips XLA compilation in a new process,
but every program must still be traced (Python runs the whole network, the
losses and the optimiser) and lowered before that cache is even consulted:
seconds for nst_jax's programs on a 2-core CPU. This module instead stores
each compiled executable itself (`jax.experimental.serialize_executable`)
under a key computed from what shapes the program, so a later process goes
from the key straight to a loaded executable. Loading runs outside Python's
lock, so `prefetch` loads several programs on worker threads while the
caller reads images, prepares weights and runs the earlier programs.

A key covers everything that can change a program: its name and static
settings, the argument tree, shapes and dtypes (and shardings when the
arguments are placed arrays), the devices, the versions of jax and jaxlib, a
hash of nst_jax's own source, and the host's CPU (machine code is specific
to it). Anything unreadable is ignored and replaced.

Example::

  cache = ProgramCache('~/.cache/nst_jax/jax/programs')
  key = cache.key('chunk', static, args)
  cache.prefetch(key, devices)             # starts loading in the background
  ...
  compiled = cache.compile(key, jitted_chunk, args, devices)  # or compiled
  state, values, terms = compiled(*args)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import os
import pickle
import platform
import threading
import zlib
from typing import Any, Callable, Sequence

import jax
from jax.experimental import serialize_executable
import jaxlib

from nst_jax.io import files


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
  """SHA-256 of nst_jax's Python files (a changed function = new programs)."""
  digest = hashlib.sha256()
  package = os.path.dirname(os.path.abspath(__file__))
  for folder, dirs, files in sorted(os.walk(package)):
    dirs.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        with open(os.path.join(folder, name), 'rb') as f:
          digest.update(name.encode() + b'\0' + f.read())
  return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def host_signature() -> str:
  """The devices and this host's CPU: a cache folder shared between
  machines (a network home) must not hand one CPU's code to another."""
  device = jax.devices()[0]
  cpu_flags = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith(('flags', 'Features', 'model name')):
          cpu_flags += line
  except OSError:
    pass
  return '\n'.join([device.platform, device.device_kind,
                    device.client.platform_version, platform.machine(),
                    platform.processor(), cpu_flags])


# Environment variables that change what XLA compiles.
COMPILER_ENVIRONMENT = ('XLA_FLAGS', 'LIBTPU_INIT_ARGS')
# JAX settings that change the compiled code of the same Python program.
COMPILER_JAX_SETTINGS = ('jax_default_matmul_precision', 'jax_enable_x64',
                         'jax_default_prng_impl',
                         'jax_disable_most_optimizations',
                         'jax_numpy_rank_promotion')


def compiler_settings() -> str:
  """The environment and JAX settings a program's machine code depends on
  besides its source and arguments: a tuned run (XLA_FLAGS, a matmul
  precision) must not reuse another's programs."""
  parts = [f'{name}={os.environ.get(name, "")}'
           for name in COMPILER_ENVIRONMENT]
  parts += [f'{name}={getattr(jax.config, name, None)}'
            for name in COMPILER_JAX_SETTINGS]
  return ';'.join(parts)


@contextlib.contextmanager
def _fresh_compilation():
  """Keeps a compilation out of JAX's persistent compilation cache.

  XLA:CPU cannot serialise an executable it deserialised: the copy lacks
  functions ('Function wrapped_broadcast.3 not found' when it runs). So the
  programs this module writes must be compiled afresh, never read from that
  cache, and are not written to it either (this module's copy replaces it).
  Yields a list that holds an entry if that cache was hit anyway (entries
  written by an earlier version of nst_jax): such a program is not written.
  """
  hits = []

  def listener(event, **unused_kwargs):
    if event == '/jax/compilation_cache/cache_hits':
      hits.append(event)

  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float('inf'))
  jax.monitoring.register_event_listener(listener)
  try:
    yield hits
  finally:
    jax.monitoring.unregister_event_listener(listener)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_time)


@functools.lru_cache(maxsize=1)
def _loader_pool() -> concurrent.futures.ThreadPoolExecutor:
  """The threads that load programs, shared by every cache of the process
  (two: loading is CPU-bound, so more would only contend)."""
  return concurrent.futures.ThreadPoolExecutor(
      max_workers=2, thread_name_prefix='nst_jax_programs')


def _leaf_signature(x) -> str:
  sharding = getattr(x, 'sharding', None)
  spec = getattr(sharding, 'spec', None)
  devices = (tuple(d.id for d in sharding.device_set)
             if sharding is not None else ())
  return f'{tuple(x.shape)}:{x.dtype}:{spec}:{sorted(devices)}'


class ProgramCache:
  """Compiled programs in `folder` (see module docstring).

  Attributes:
    loaded: programs read from disk (neither traced nor compiled).
    traced: programs traced and compiled by this process (and written).
  """

  def __init__(self, folder: str):
    self.folder = os.path.expanduser(folder)
    self.loaded = 0
    self.traced = 0
    self._lock = threading.Lock()
    self._pending = {}  # key -> Future of a loaded program or None

  def key(self, name: str, static: Any, args: Sequence) -> str:
    """The key of program `name` for arguments like `args`.

    Args:
      name: the program's name.
      static: everything static that shapes the program; its repr must be
        stable across processes.
      args: arguments, or anything with `.shape` and `.dtype` that fixes them
        (host arrays, `jax.ShapeDtypeStruct`); placed arrays add their
        shardings.
    """
    leaves, tree = jax.tree_util.tree_flatten(args)
    text = '\n'.join([
        name, repr(static), str(tree), jax.__version__, jaxlib.__version__,
        source_hash(), host_signature(), compiler_settings(),
        *(_leaf_signature(x) for x in leaves)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]

  def has(self, key: str) -> bool:
    """Whether program `key` is on disk (it may still prove unreadable)."""
    return os.path.exists(self._path(key))

  def prefetch(self, key: str, devices: Sequence) -> None:
    """Starts loading program `key` for `devices` on a worker thread (see
    `compile`)."""
    with self._lock:
      if key not in self._pending:
        self._pending[key] = _loader_pool().submit(self._read, key, devices)

  def compile(self, key: str, jitted: Callable, args: Sequence,
              devices: Sequence):
    """The compiled `jitted(*args)`, loaded from disk when key `key` is there.

    Args:
      key: from `key(...)`; the caller vouches that it fixes the program for
        `args`.
      jitted: a `jax.jit`-wrapped function of the pytrees `args` (donation
        and shardings included).
      args: example arguments (placed arrays).
      devices: the devices the program runs on, in its device assignment's
        order (a mesh's `devices.flat`).
    Returns:
      A `jax.stages.Compiled`: call it with pytrees like `args`.
    """
    self.prefetch(key, devices)
    with self._lock:
      loading = self._pending.pop(key)
    compiled = loading.result()
    if compiled is None:
      with _fresh_compilation() as hits:
        compiled = jitted.lower(*args).compile()
      with self._lock:
        self.traced += 1
      if not hits:
        self._write(key, compiled)
    return compiled

  def _path(self, key: str) -> str:
    return os.path.join(self.folder, key)

  def _read(self, key: str, devices: Sequence):
    try:
      with open(self._path(key), 'rb') as f:
        # Our own cache folder, written by _write below.
        program, in_tree, out_tree = pickle.loads(zlib.decompress(f.read()))
      compiled = serialize_executable.deserialize_and_load(
          program, in_tree, out_tree, execution_devices=list(devices))
    except Exception:  # pylint: disable=broad-except
      return None  # Missing, stale or damaged: compile again.
    with self._lock:
      self.loaded += 1
    return compiled

  def _write(self, key: str, compiled) -> None:
    try:
      blob = zlib.compress(pickle.dumps(serialize_executable.serialize(
          compiled)), 1)
    except (ValueError, NotImplementedError, pickle.PicklingError):
      return  # This backend cannot serialise: the next process compiles.
    try:
      os.makedirs(self.folder, exist_ok=True)
      files.atomic_write(self._path(key), lambda f: f.write(blob))
    except OSError:  # A read-only cache costs the next process a compile.
      pass
