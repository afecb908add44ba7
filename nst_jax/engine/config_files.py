"""The shipped configs and config files: finding and loading them.

`--config=NAME` names a shipped config: a file of the repository's
configs/ folder, installed as the package `nst_jax.configs` (setup.cfg maps
it; one copy of each file). `--config=PATH[:ARG]` names any config file.
Both end in a `get_config()` returning an `ml_collections.ConfigDict`.

Example::

  config = config_files.load('cpu')          # or 'configs/cpu.py', 'mine.py:32'
  config_files.config_names()                # ['cpu', 'default', ...]
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys

from ml_collections import config_dict

import nst_jax
from nst_jax.errors import UserError

CONFIGS_PACKAGE = 'nst_jax.configs'
_NAME = re.compile(r'[A-Za-z_]\w*')


def configs_package():
  """The shipped configs' package, `nst_jax.configs`.

  Installed (editable or not), setup.cfg maps it to the repository's
  configs/ folder. When nst_jax is imported from a checkout's working tree
  but that checkout is not what is installed, nothing maps the name: the
  checkout's own configs/ is registered under it, so that configs, which
  import their base as `nst_jax.configs.default`, load either way.

  Returns:
    The package module.
  """
  try:
    return importlib.import_module(CONFIGS_PACKAGE)
  except ModuleNotFoundError as error:
    if error.name != CONFIGS_PACKAGE:
      raise
  folder = os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(nst_jax.__file__))),
      'configs')
  spec = importlib.util.spec_from_file_location(
      CONFIGS_PACKAGE, os.path.join(folder, '__init__.py'),
      submodule_search_locations=[folder])
  if spec is None or not os.path.isdir(folder):
    raise UserError(f'{CONFIGS_PACKAGE}: not installed and no configs/ '
                    f'beside {os.path.dirname(nst_jax.__file__)}')
  package = importlib.util.module_from_spec(spec)
  sys.modules[CONFIGS_PACKAGE] = package
  spec.loader.exec_module(package)
  return package


def configs_folder() -> str:
  """The folder of the shipped configs."""
  return list(configs_package().__path__)[0]


def config_names() -> list:
  """The shipped configs' names, sorted: 'cpu', 'default', ..."""
  return sorted(name[:-3] for name in os.listdir(configs_folder())
                if name.endswith('.py') and not name.startswith('_'))


def config_summary(name: str) -> str:
  """The first line of a shipped config's docstring ('' if it has none)."""
  with open(os.path.join(configs_folder(), f'{name}.py'),
            encoding='utf-8') as file:
    docstring = ast.get_docstring(ast.parse(file.read())) or ''
  return docstring.strip().split('\n', 1)[0]


def load(spec: str) -> config_dict.ConfigDict:
  """The config that `--config=SPEC` names.

  Args:
    spec: a shipped config's name ('cpu') or a config file's path
      ('configs/cpu.py', relative to the current folder, or absolute),
      either one optionally followed by ':ARG', which is passed to the
      config's get_config(ARG) (as ml_collections' config files allow).
  Returns:
    What get_config returned, a ConfigDict.
  Raises:
    UserError: an unknown name, a missing file, a file that fails to import,
      a get_config that fails or does not return a ConfigDict.
  """
  target, colon, arg = spec.partition(':')
  configs_package()  # config files import their base from it
  if _NAME.fullmatch(target):
    module = _import_shipped(target)
  else:
    module = _import_file(target)
  where = f'--config={spec}'
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise UserError(f'{where}: the config file has no get_config()')
  try:
    config = get_config(arg) if colon else get_config()
  except Exception as error:  # pylint: disable=broad-except
    raise UserError(f'{where}: get_config() failed ({reason(error)})'
                    ) from error
  if not isinstance(config, config_dict.ConfigDict):
    raise UserError(f'{where}: get_config() returned a '
                    f'{type(config).__name__}, not an '
                    'ml_collections.ConfigDict')
  return config


def _import_shipped(name: str):
  """Imports the shipped config `name` as nst_jax.configs.<name>."""
  names = config_names()
  if name not in names:
    raise UserError(f'--config={name}: no shipped config of that name; '
                    f'valid are {", ".join(names)}, or a config file\'s path')
  try:
    return importlib.import_module(f'{CONFIGS_PACKAGE}.{name}')
  except Exception as error:  # pylint: disable=broad-except
    raise UserError(f'--config: cannot load the shipped config {name} '
                    f'({reason(error)})') from error


def _import_file(path: str):
  """Imports a config file from its path."""
  where = f'--config: cannot load the config file {path}'
  if not os.path.exists(path):
    raise UserError(f'{where} (file not found)')
  if os.path.isdir(path):
    raise UserError(f'{where} (a folder, not a .py file)')
  # A module name of its own: a config's dataclasses and pickles look their
  # module up in sys.modules.
  name = '_nst_jax_config_' + re.sub(r'\W', '_', os.path.splitext(
      os.path.basename(path))[0])
  try:
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.SourceFileLoader(name, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  except Exception as error:  # pylint: disable=broad-except
    sys.modules.pop(name, None)
    hint = ''
    if isinstance(error, ModuleNotFoundError) and (
        error.name or '').split('.')[0] == 'configs':
      hint = ('; a config imports the shipped ones as '
              '"from nst_jax.configs import default"')
    raise UserError(f'{where} ({reason(error)}{hint})') from error
  return module


def reason(error: BaseException) -> str:
  """'Type: first line of the message', for one-line errors."""
  message = str(error).strip().split('\n', 1)[0]
  return f'{type(error).__name__}: {message}' if message else (
      type(error).__name__)


def make_config(config=None, fields=None) -> config_dict.ConfigDict:
  """The default config (or `config`, a ConfigDict or a dict), with
  `fields` set by name (nested dicts set a group's fields).

  Raises:
    UserError: an unknown field or a value of the wrong type.
  """
  if config is None:
    config = load('default')
  else:
    config = config_dict.ConfigDict(
        config.to_dict() if hasattr(config, 'to_dict') else dict(config))
  for name, value in (fields or {}).items():
    _set_field(config, name, value, 'config.')
  return config


def _set_field(config, name, value, where):
  if name not in config:
    raise UserError(f'{where}{name}: no such field (see configs/default.py)')
  if isinstance(config[name], config_dict.ConfigDict):
    if not isinstance(value, dict):
      raise UserError(f'{where}{name}: expected a dict of its fields, got '
                      f'{value!r}')
    for key, item in value.items():
      _set_field(config[name], key, item, f'{where}{name}.')
    return
  try:
    config[name] = value
  except (TypeError, ValueError) as error:
    raise UserError(f'{where}{name}: {str(error).splitlines()[0]}') from None
