"""Traced programs kept on disk, so a new process skips tracing.

JAX's persistent compilation cache skips XLA compilation in a new process,
but every program must still be traced (Python runs the whole network, the
losses and the optimiser) and lowered before the cache is even consulted:
about 3 s for nst_jax's programs on a 2-core CPU. This module stores each
program's lowered form with `jax.export` (StableHLO, versioned and
serialisable) next to the compilation cache; a later process with the same
program deserialises it and compiles it (from the compilation cache) without
tracing anything.

A program is identified by everything that can change it: its name and
static settings, the argument tree, shapes, dtypes and shardings, the
versions of jax and jaxlib, and a hash of nst_jax's own source. Anything
unreadable is ignored and replaced.

Example::

  cache = ProgramCache('~/.cache/nst_jax/jax/programs')
  compiled = cache.compile('chunk', static_key, jitted_chunk, args)
  state, values, terms = compiled(*args)
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from typing import Any, Callable, Sequence

import jax
import jaxlib


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
def serialization_available() -> bool:
  """jax.export's serialisation needs the `flatbuffers` package."""
  try:
    import flatbuffers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _leaf_signature(x) -> str:
  sharding = getattr(x, 'sharding', None)
  spec = getattr(sharding, 'spec', None)
  devices = (tuple(d.id for d in sharding.device_set)
             if sharding is not None else ())
  return f'{tuple(x.shape)}:{x.dtype}:{spec}:{sorted(devices)}'


class ProgramCache:
  """Exported programs in `folder` (see module docstring)."""

  def __init__(self, folder: str):
    self.folder = os.path.expanduser(folder)
    self.loaded = 0   # programs read from disk (no tracing)
    self.exported = 0  # programs traced and written

  def key(self, name: str, static: Any, args: Sequence) -> str:
    leaves, tree = jax.tree_util.tree_flatten(args)
    text = '\n'.join([
        name, repr(static), str(tree), jax.__version__, jaxlib.__version__,
        source_hash(), jax.devices()[0].platform,
        *(_leaf_signature(x) for x in leaves)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]

  def compile(self, name: str, static: Any, jitted: Callable, args: Sequence,
              donate_argnums: Sequence[int] = ()):
    """The compiled `jitted(*args)` for arguments like `args`.

    Args:
      name: the program's name (part of its key).
      static: everything static that shapes the program (part of its key;
        its repr must be stable across processes).
      jitted: a `jax.jit`-wrapped function of the pytrees `args`.
      args: example arguments (placed arrays: their shardings count).
      donate_argnums: positions in `args` whose buffers may be reused.
    Returns:
      A function of pytrees like `args` returning `jitted`'s pytree.
    """
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    if not serialization_available():
      return jitted.lower(*args).compile()
    path = os.path.join(self.folder, self.key(name, static, args))
    exported, out_tree = self._read(path)
    if exported is None:
      exported, out_tree = self._export(jitted, in_tree, leaves)
      self._write(path, exported, out_tree)
    donated = _leaf_positions(args, donate_argnums)
    compiled = jax.jit(exported.call, donate_argnums=donated).lower(
        *leaves).compile()

    def call(*call_args):
      return jax.tree_util.tree_unflatten(
          out_tree, compiled(*jax.tree_util.tree_leaves(call_args)))
    call.compiled = compiled
    return call

  def _export(self, jitted, in_tree, leaves):
    out_trees = []

    def flat(*flat_leaves):
      out = jitted(*jax.tree_util.tree_unflatten(in_tree, flat_leaves))
      out_leaves, out_tree = jax.tree_util.tree_flatten(out)
      out_trees.append(out_tree)
      return out_leaves

    exported = jax.export.export(jax.jit(flat))(*leaves)
    self.exported += 1
    return exported, out_trees[0]

  def _read(self, path):
    try:
      with open(path, 'rb') as f:
        blob = f.read()
      # Our own cache folder, written by _write below (a tree definition
      # is pickled; the program itself is jax.export's serialisation).
      tree_bytes, program = pickle.loads(blob)
      exported = jax.export.deserialize(bytearray(program))
      out_tree = pickle.loads(tree_bytes)
    except Exception:  # pylint: disable=broad-except
      return None, None  # Missing, stale or damaged: trace again.
    self.loaded += 1
    return exported, out_tree

  def _write(self, path, exported, out_tree):
    blob = pickle.dumps((pickle.dumps(out_tree), bytes(exported.serialize())))
    tmp = None
    try:
      os.makedirs(self.folder, exist_ok=True)
      handle, tmp = tempfile.mkstemp(dir=self.folder, prefix='.tmp-')
      with os.fdopen(handle, 'wb') as f:
        f.write(blob)
      os.replace(tmp, path)
    except OSError:  # A read-only cache costs the next process the tracing.
      if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def _leaf_positions(args, argnums) -> tuple:
  """Flat leaf indices of the arguments at positions `argnums`."""
  positions, start = [], 0
  for index, arg in enumerate(args):
    count = len(jax.tree_util.tree_leaves(arg))
    if index in argnums:
      positions.extend(range(start, start + count))
    start += count
  return tuple(positions)
