"""Programs traced once are read back from disk by later processes."""

import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from nst_jax import program_cache, run as run_lib


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
  expected = first.compile('combine', 'v1', combine, _args())(*_args())
  assert (first.exported, first.loaded) == (1, 0)

  second = program_cache.ProgramCache(str(tmp_path))
  got = second.compile('combine', 'v1', combine, _args())(*_args())
  assert (second.exported, second.loaded) == (0, 1)
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
  cache.compile('combine', 'v1', combine, _args())
  (name,) = os.listdir(tmp_path)
  (tmp_path / name).write_bytes(b'not a program')
  again = program_cache.ProgramCache(str(tmp_path))
  result = again.compile('combine', 'v1', combine, _args())(*_args())
  assert (again.exported, again.loaded) == (1, 0)
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
  run_lib._PROGRAMS.clear()  # pylint: disable=protected-access
  first = run_lib.run(config)
  assert first['programs']['traced'] == 3  # targets, init, chunk
  run_lib._PROGRAMS.clear()  # pylint: disable=protected-access
  config.output = str(tmp_path / 'b' / 'r.png')
  second = run_lib.run(config)
  assert second['programs'] == dict(first['programs'], loaded=3, traced=0)
  assert second['final'] == first['final']
  assert second['evaluations'] == first['evaluations']
