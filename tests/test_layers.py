"""The package's layers: a lower layer never imports a higher one.

core (pure JAX) < io < engine < front ends (api, video, run, main, cli,
web).
The core also raises no `UserError`: the engine's settings check refuses
bad input before it reaches the core.
"""

import ast
import pathlib

import pytest

import nst_jax

PACKAGE = pathlib.Path(nst_jax.__file__).parent
# What each layer may import from nst_jax (besides itself).
ALLOWED = {'core': set(), 'io': {'core', 'errors', 'files', '__init__'},
           'weights': {'core', 'io', 'errors', '__init__'},
           'engine': {'core', 'io', 'weights', 'errors', '__init__'}}


def _nst_jax_imports(path: pathlib.Path) -> set:
  """The top-level parts of nst_jax a module imports ('core', 'engine',
  'api', ...), wherever in the file the import is."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == 'nst_jax' or node.module.startswith('nst_jax.')):
      parts = node.module.split('.')
      if len(parts) > 1:
        found.add(parts[1])
      else:
        found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split('.')
        if parts[0] == 'nst_jax':
          found.add(parts[1] if len(parts) > 1 else '__init__')
  return found


@pytest.mark.parametrize('layer', sorted(ALLOWED))
def test_a_layer_imports_nothing_above_it(layer):
  modules = sorted((PACKAGE / layer).glob('*.py'))
  assert modules
  for path in modules:
    above = _nst_jax_imports(path) - ALLOWED[layer] - {layer}
    assert not above, f'{path.relative_to(PACKAGE)} imports {sorted(above)}'


def test_the_core_raises_no_user_error_and_opens_no_files():
  for path in sorted((PACKAGE / 'core').glob('*.py')):
    tree = ast.parse(path.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree)
              if isinstance(node, ast.Attribute)}
    assert 'UserError' not in names, path.name
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert 'open' not in calls, path.name


def test_the_checker_sees_imports_inside_functions(tmp_path):
  module = tmp_path / 'm.py'
  module.write_text('def f():\n  from nst_jax.engine import loop\n'
                    'import nst_jax.api\n')
  assert _nst_jax_imports(module) == {'engine', 'api'}
