"""Programs traced once are read back from disk by later processes."""

import os
import subprocess
import sys

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import run as run_lib
from nst_jax.engine import program_cache, programs as programs_lib
from nst_jax.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@flax.struct.dataclass
class Pair:
  left: jax.Array
  right: jax.Array


@jax.jit
def combine(pair, scale):
  return {'sum': pair.left + scale, 'both': Pair(pair.left * pair.right,
                                                 pair.right - scale)}


def _args(n=3):
  return (Pair(jnp.arange(n, dtype=jnp.float32), jnp.ones(n)),
          jnp.float32(2.0))


def test_second_cache_loads_instead_of_tracing(tmp_path):
  first = program_cache.ProgramCache(str(tmp_path))
  key = first.key('combine', 'v1', _args())
  expected = first.compile(key, combine, _args(), jax.devices()[:1])(*_args())
  assert (first.traced, first.loaded) == (1, 0)

  second = program_cache.ProgramCache(str(tmp_path))
  second.prefetch(key, jax.devices()[:1])
  got = second.compile(key, combine, _args(), jax.devices()[:1])(*_args())
  assert (second.traced, second.loaded) == (0, 1)
  assert (jax.tree_util.tree_structure(got)
          == jax.tree_util.tree_structure(expected))
  for a, b in zip(jax.tree_util.tree_leaves(got),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_new_shapes_or_settings_are_new_programs(tmp_path):
  cache = program_cache.ProgramCache(str(tmp_path))
  keys = {cache.key('combine', 'v1', _args(3)),
          cache.key('combine', 'v1', _args(4)),
          cache.key('combine', 'v2', _args(3)),
          cache.key('other', 'v1', _args(3))}
  assert len(keys) == 4


def test_damaged_file_is_traced_again(tmp_path):
  cache = program_cache.ProgramCache(str(tmp_path))
  key = cache.key('combine', 'v1', _args())
  cache.compile(key, combine, _args(), jax.devices()[:1])
  (name,) = os.listdir(tmp_path)
  (tmp_path / name).write_bytes(b'not a program')
  again = program_cache.ProgramCache(str(tmp_path))
  result = again.compile(key, combine, _args(), jax.devices()[:1])(*_args())
  assert (again.traced, again.loaded) == (1, 0)
  np.testing.assert_array_equal(result['sum'], [2.0, 3.0, 4.0])


def test_run_reads_its_programs_back(tmp_path):
  """A second run (its in-memory programs dropped, as in a new process)
  traces nothing and computes the same result."""
  config = default.get_config()
  config.update(dict(content='builtin:scene', style='builtin:painting',
                     weights='random', image_size=32, iterations=3,
                     log_every=3, optimizer='lbfgs_nols', init='content',
                     content_layers='conv2_1', style_layers='conv1_1,conv2_1',
                     compilation_cache=str(tmp_path / 'cache'),
                     output=str(tmp_path / 'a' / 'r.png')))
  cache = str(tmp_path / 'cache' / 'programs')
  first = run_lib.run(config, programs=programs_lib.Programs(
      program_cache.ProgramCache(cache)))
  # Flipped kernels, Winograd transforms, targets, init, chunk.
  assert first['programs']['traced'] == 5
  config.output = str(tmp_path / 'b' / 'r.png')
  # New Programs, as in a new process: only the cache on disk is shared.
  second = run_lib.run(config, programs=programs_lib.Programs(
      program_cache.ProgramCache(cache)))
  assert second['programs'] == dict(first['programs'], loaded=5, traced=0)
  assert second['final'] == first['final']
  assert second['evaluations'] == first['evaluations']


LEGACY_SCRIPT = '''
import sys
import jax
import jax.numpy as jnp
jax.config.update('jax_compilation_cache_dir', sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
from nst_jax.engine import program_cache

@jax.jit
def spread(x):
  return jnp.cumsum(jnp.broadcast_to(x, (4, 8)) * 2.0, axis=1)

args = (jnp.arange(8, dtype=jnp.float32),)
if sys.argv[3] == 'plain':  # as JAX alone (or an older nst_jax) compiles
  spread.lower(*args).compile()
else:
  cache = program_cache.ProgramCache(sys.argv[2])
  key = cache.key('spread', 'v1', args)
  out = cache.compile(key, spread, args, jax.devices()[:1])(*args)
  print(cache.traced, cache.loaded, float(out.sum()))
'''


def _legacy(tmp_path, mode):
  out = subprocess.run(
      [sys.executable, '-c', LEGACY_SCRIPT, str(tmp_path / 'xla'),
       str(tmp_path / 'programs'), mode], cwd=REPO, capture_output=True,
      text=True, check=True)
  return out.stdout.split()


def test_program_from_jax_cache_is_not_written(tmp_path):
  """XLA:CPU cannot serialise an executable read from JAX's persistent
  cache (the copy misses functions and fails when run), so such a program
  is not written; the next process compiles it again and runs correctly."""
  expected = float(np.cumsum(np.broadcast_to(np.arange(8.0), (4, 8)) * 2,
                             axis=1).sum())
  _legacy(tmp_path, 'plain')
  for _ in range(2):
    traced, loaded, total = _legacy(tmp_path, 'cache')
    assert (traced, loaded) == ('1', '0')
    assert float(total) == expected
  assert not (tmp_path / 'programs').exists() or not os.listdir(
      tmp_path / 'programs')


def test_programs_are_written_and_read_beside_jax_cache(tmp_path):
  """With JAX's persistent cache on, a program compiled through the program
  cache is written there (not to JAX's cache) and the next process loads
  and runs it."""
  expected = float(np.cumsum(np.broadcast_to(np.arange(8.0), (4, 8)) * 2,
                             axis=1).sum())
  assert _legacy(tmp_path, 'cache')[:2] == ['1', '0']
  traced, loaded, total = _legacy(tmp_path, 'cache')
  assert (traced, loaded) == ('0', '1')
  assert float(total) == expected


def test_key_depends_on_compiler_flags_and_jax_settings(tmp_path,
                                                         monkeypatch):
  cache = program_cache.ProgramCache(str(tmp_path))
  key = lambda: cache.key('combine', 'v1', _args())
  plain = key()
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=true')
  flagged = key()
  monkeypatch.setenv('LIBTPU_INIT_ARGS', '--xla_tpu_some_flag=true')
  tpu_flagged = key()
  monkeypatch.delenv('XLA_FLAGS')
  monkeypatch.delenv('LIBTPU_INIT_ARGS')
  assert key() == plain
  with jax.default_matmul_precision('highest'):
    precise = key()
  assert len({plain, flagged, tpu_flagged, precise}) == 4
