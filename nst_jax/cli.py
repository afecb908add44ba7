"""The command line shared by `nst-jax` and scripts/reproduce_figures.py.

Both take the same config flags:

  --config=NAME           a shipped config (configs/ in the repository,
                          installed as the package `nst_jax.configs`)
  --config=PATH[:ARG]     a config file; ARG goes to its get_config(ARG)
  --config.FIELD=VALUE    sets one field

`--help` lists every config field with its value and its meaning, read from
the comments in configs/default.py. Bad input (an unknown config or field, a
value of the wrong type, a config file that does not load) is one line on
stderr and exit status 2, never a traceback unless `--debug` is given.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import io
import os
import re
import shutil
import sys
import textwrap
import tokenize
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

from nst_jax.engine import config_files
from nst_jax.errors import UserError

# The config whose comments document every field.
DOCUMENTED_CONFIG = 'default'
HELP_FLAGS = ('-h', '-?', '--help', '-help', '--helpshort', '-helpshort')
LEFT_COLUMN = 31  # help: where the meanings start

_CONFIG_VALUE = re.compile(r'--?config=(.*)', re.S)
_OVERRIDE = re.compile(r'--?(?:no)?config\.([^=\s]+)')
_DEBUG = re.compile(r'--?debug(=(true|1|yes))?', re.I)
# absl reports a value its parser refused as "flag --NAME=VALUE: reason".
_ILLEGAL_VALUE = re.compile(r'flag --config\.([^=\s]+)=')
_TYPE_NAMES = {bool: 'true or false', int: 'an integer', float: 'a number',
               str: 'a string', tuple: "a tuple, e.g. '(1, 2)'"}


# ---------------------------------------------------------------------------
# Field paths and overrides.

def field_paths(config: config_dict.ConfigDict, prefix: str = '') -> list:
  """Every field's dotted path, nested ConfigDicts' fields included."""
  paths = []
  for key, value in config.items():
    paths.append(prefix + key)
    if isinstance(value, config_dict.ConfigDict):
      paths += field_paths(value, f'{prefix}{key}.')
  return paths


def field_value(config: config_dict.ConfigDict, path: str):
  """The value at a dotted path.

  Raises:
    KeyError: no such field.
  """
  value = config
  for part in path.split('.'):
    part = part.split('[', 1)[0]  # 'field[0]' indexes a field's sequence
    if not isinstance(value, config_dict.ConfigDict) or part not in value:
      raise KeyError(path)
    value = value[part]
  return value


def override_paths(argv: Sequence[str]) -> list:
  """The fields that `--config.FIELD=VALUE` (or `--noconfig.FIELD`) name."""
  paths = []
  for arg in argv:
    if arg == '--':
      break
    match = _OVERRIDE.match(arg)
    if match:
      paths.append(match.group(1))
  return paths


def check_overrides(config: config_dict.ConfigDict,
                    argv: Sequence[str]) -> None:
  """Refuses an override of a field the config does not have.

  Raises:
    UserError: '--config.stlye_weight: no such field; did you mean
      --config.style_weight? (see --help)'.
  """
  for path in override_paths(argv):
    try:
      field_value(config, path)
    except KeyError:
      leaves = [p for p in field_paths(config)
                if not isinstance(field_value(config, p),
                                  config_dict.ConfigDict)]
      close = difflib.get_close_matches(path, leaves, n=1)
      hint = f'; did you mean --config.{close[0]}?' if close else ''
      raise UserError(f'--config.{path}: no such field{hint} (see --help)'
                      ) from None


def _bad_value(error: flags.Error, config: config_dict.ConfigDict,
               argv: Sequence[str]) -> str:
  """One line for a `--config.FIELD=VALUE` whose VALUE has the wrong type."""
  line = str(error).strip().split('\n', 1)[0]
  match = _ILLEGAL_VALUE.match(line)
  if not match:
    return line
  path = match.group(1)
  value = None
  for i, arg in enumerate(argv):  # the last one given wins, as in absl
    if arg.startswith(f'--config.{path}=') or arg.startswith(
        f'-config.{path}='):
      value = arg.split('=', 1)[1]
    elif arg in (f'--config.{path}', f'-config.{path}') and i + 1 < len(
        argv):
      value = argv[i + 1]
  try:
    kind = type(field_value(config, path))
  except KeyError:
    return line
  expected = _TYPE_NAMES.get(kind, f'a {kind.__name__}')
  return f'--config.{path}: expected {expected}, got {value!r} (see --help)'


# ---------------------------------------------------------------------------
# The fields' documentation, from the comments in configs/default.py.

@dataclasses.dataclass(frozen=True)
class FieldDoc:
  """What the documented config's comments say about one field.

  Attributes:
    meaning: what the field is for ('' when the source does not say).
    section: the heading of the section the field is in ('' before the
      first heading).
  """
  meaning: str
  section: str


def field_docs(source: str) -> dict:
  """Reads each `config.FIELD = value  # meaning` of a config's source.

  A field's meaning is the comment on its line, continued by the comment
  lines under it that start in the same column. A block of comment lines
  just above a field heads a section when the field has a comment of its
  own or the block follows a blank line; otherwise it is the field's
  meaning.

  Args:
    source: Python source that assigns `config.FIELD = ...` (nested fields
      as `config.sweep.FIELD`).
  Returns:
    {dotted field path: FieldDoc}, in the order of the source.
  """
  lines = source.splitlines()
  comments = {}  # line number -> (column, text)
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = (token.start[1],
                                  token.string.lstrip('#').strip())

  def comment_only(number):
    return number in comments and lines[number - 1].lstrip().startswith('#')

  assignments = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      path = _dotted(node.targets[0])
      if path and path.startswith('config.'):
        assignments.append((node.lineno, node.end_lineno, path[7:]))
  docs = {}
  section = ''
  field_lines = set()  # the fields' lines and their comments' continuations
  for first, last, path in sorted(assignments):
    above = []
    number = first - 1
    while comment_only(number) and number not in field_lines:
      above.insert(0, comments[number][1])
      number -= 1
    heads_section = number not in field_lines  # a blank line or no field
    field_lines.update(range(first, last + 1))
    own = [comments[n] for n in range(first, last + 1) if n in comments]
    meaning = ''
    if own:
      column, text = own[0]
      parts = [text]
      number = last + 1
      while comment_only(number) and comments[number][0] == column:
        parts.append(comments[number][1])
        field_lines.add(number)
        number += 1
      meaning = ' '.join(parts)
    if above and (own or heads_section):
      section = ' '.join(above)
    elif above:
      meaning = ' '.join(above)
    docs[path] = FieldDoc(meaning, section)
  return docs


def _dotted(node) -> Optional[str]:
  """'config.sweep.seed' for that attribute chain, else None."""
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    base = _dotted(node.value)
    return f'{base}.{node.attr}' if base else None
  return None


def documented_fields() -> dict:
  """field_docs of configs/default.py, the config that documents them all."""
  with open(os.path.join(config_files.configs_folder(), f'{DOCUMENTED_CONFIG}.py'),
            encoding='utf-8') as file:
    return field_docs(file.read())


# ---------------------------------------------------------------------------
# --help.

def _columns(rows, width: int) -> list:
  """Two columns: the left text, then the right one wrapped beside it."""
  lines = []
  for left, right in rows:
    left = f'  {left}'
    wrapped = textwrap.wrap(right, max(width - LEFT_COLUMN, 20))
    if wrapped and len(left) < LEFT_COLUMN - 1:
      lines.append(f'{left:<{LEFT_COLUMN}}{wrapped[0]}'.rstrip())
      wrapped = wrapped[1:]
    else:
      lines.append(left)
    lines += [' ' * LEFT_COLUMN + part for part in wrapped]
  return lines


def fields_help(config: config_dict.ConfigDict, width: int = 80) -> list:
  """Lines listing each field as 'FIELD = VALUE   meaning', by section.

  Args:
    config: the values to show (the selected config's).
    width: the line width to wrap the meanings at.
  """
  docs = documented_fields()
  paths = [p for p in docs if _has(config, p)]
  paths += [p for p in field_paths(config) if p not in docs]
  lines, rows, section = [], [], None

  def flush():
    lines.extend(_columns(rows, width))
    rows.clear()

  for path in paths:
    doc = docs.get(path, FieldDoc('', 'Other fields (not in the default '
                                      'config)'))
    if doc.section != section:
      flush()
      section = doc.section
      if section:
        lines += [''] + _heading(section, width)
    value = field_value(config, path)
    if isinstance(value, config_dict.ConfigDict):
      if doc.meaning:  # else its section heading says what it holds
        rows.append((f'{path}.*', doc.meaning))
    else:
      rows.append((f'{path} = {value!r}', doc.meaning))
  flush()
  return lines


def _heading(text: str, width: int) -> list:
  """A section heading: 'Sizes.' -> 'Sizes:'; longer ones wrapped as is."""
  if text.endswith('.') and '. ' not in text and len(text) < width:
    return [text[:-1] + ':']
  return textwrap.wrap(text, width)


def _has(config, path) -> bool:
  try:
    field_value(config, path)
    return True
  except KeyError:
    return False


def help_text(prog: str, about: str, config_spec: str,
              config: config_dict.ConfigDict, own_flags: Sequence[flags.Flag],
              width: Optional[int] = None) -> str:
  """The text of `--help`.

  Args:
    prog: the command, for the usage line.
    about: what the program does (its docstring).
    config_spec: the --config value in effect (given or default).
    config: that config, whose values are shown.
    own_flags: the program's flags besides --config.
    width: line width; default the terminal's, 60 to 100.
  Returns:
    The text, ending with a newline.
  """
  if width is None:
    width = min(max(shutil.get_terminal_size((80, 24)).columns, 60), 100)
  usage = [prog, '[--config=NAME|PATH[:ARG]]', '[--config.FIELD=VALUE ...]']
  usage += [f'[--{flag.name}]' if flag.boolean else f'[--{flag.name}=VALUE]'
            for flag in own_flags]
  # Each item stays on one line: its spaces are no-break ones while wrapping.
  lines = [line.replace('\xa0', ' ') for line in textwrap.wrap(
      'usage: ' + ' '.join(item.replace(' ', '\xa0') for item in usage),
      width, subsequent_indent=' ' * 8, break_on_hyphens=False)]
  lines += ['', textwrap.dedent(about).strip(), '', 'Flags:']
  rows = [('--config=NAME|PATH[:ARG]',
           'the settings: a shipped config by NAME (below) or a config '
           "file's PATH; ':ARG' is passed to its get_config(ARG) (now: "
           f'{config_spec})'),
          ('--config.FIELD=VALUE', 'sets one config field (below)')]
  for flag in own_flags:
    name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}=VALUE'
    default = '' if flag.default is None else f' (default: {flag.default!r})'
    rows.append((name, f'{flag.help}{default}'))
  rows += [('--help', 'this text'),
           ('--helpfull', "every flag, with absl's logging flags")]
  lines += _columns(rows, width)
  lines += ['', 'Shipped configs (--config=NAME):']
  lines += _columns([(name, config_files.config_summary(name))
                     for name in config_files.config_names()],
                    width)
  lines += [''] + textwrap.wrap(
      'Config fields (--config.FIELD=VALUE), with their values in '
      f'--config={config_spec}:', width)
  lines += fields_help(config, width)
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------
# Parsing and errors.

def define_debug_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--debug` (tracebacks of errors) once, for every program that
  shares `flag_values`."""
  if 'debug' not in flag_values:
    flags.DEFINE_bool('debug', False, 'Show tracebacks of errors.',
                      flag_values=flag_values)


def _take_config(argv: Sequence[str]):
  """Splits `--config=SPEC` (or `--config SPEC`) off the arguments.

  Returns:
    (the last SPEC given or None, the other arguments).
  Raises:
    UserError: --config without a value.
  """
  spec, rest = None, [argv[0]]
  args = iter(enumerate(argv[1:], start=1))
  for i, arg in args:
    if arg == '--':  # absl: what follows is positional
      rest += argv[i:]
      break
    match = _CONFIG_VALUE.fullmatch(arg)
    if match:
      spec = match.group(1)
    elif arg in ('--config', '-config'):
      if i + 1 >= len(argv):
        raise UserError('--config: needs a value, e.g. --config=cpu')
      spec = next(args)[1]
    else:
      rest.append(arg)
  if spec == '':
    raise UserError('--config: needs a value, e.g. --config=cpu')
  return spec, rest


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues, *,
                default_config: str, prog: str, about: str,
                own_flags: Sequence[str]) -> list:
  """Parses a command line into `flag_values`, `--config` included.

  Loads the config first and checks that every overridden field exists, then
  defines `flag_values.config` (ml_collections applies the overrides) and
  parses. `--help` prints help_text and exits with status 0.

  Args:
    argv: the command line, program name first.
    flag_values: where the program's flags are defined; gets `config`.
    default_config: the --config used when none is given.
    prog, about: the command and its description, for --help.
    own_flags: names of the program's flags besides --config, for --help.
  Returns:
    [argv[0]]: positional arguments are refused.
  Raises:
    UserError: anything wrong with the command line.
  """
  spec, argv = _take_config(argv)
  spec = spec or default_config
  config = config_files.load(spec)
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    sys.stdout.write(help_text(prog, about, spec, config,
                               [flag_values[name] for name in own_flags]))
    sys.exit(0)
  check_overrides(config, argv[1:])
  config_flags.DEFINE_config_dict(
      'config', config, 'The settings (see --help).', flag_values=flag_values,
      lock_config=False, sys_argv=list(argv))
  try:
    remaining = flag_values(argv)
  except flags.IllegalFlagValueError as error:
    raise UserError(_bad_value(error, config, argv)) from error
  except flags.UnrecognizedFlagError as error:
    raise UserError(f'{_first_line(error)} (see --help)') from error
  except flags.Error as error:
    raise UserError(_first_line(error)) from error
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    # ml_collections' own checks of an override.
    raise UserError(f'bad --config override: {_first_line(error)}'
                    ) from error
  if len(remaining) > 1:
    raise UserError(f'unexpected arguments: {" ".join(remaining[1:])} '
                    '(flags take the form --NAME=VALUE; see --help)')
  return remaining


def _first_line(error: BaseException) -> str:
  return str(error).strip().split('\n', 1)[0]


def flags_parser(flag_values: flags.FlagValues = flags.FLAGS,
                 **kwargs) -> Callable[[list], list]:
  """absl's `app.run(..., flags_parser=)`: parse_flags, errors in one line.

  Args:
    flag_values: as parse_flags.
    **kwargs: parse_flags' keyword arguments.
  Returns:
    parse(argv), which prints 'error: ...' on stderr and exits with status 2
    on bad input (with --debug, raises instead).
  """
  def parse(argv):
    try:
      return parse_flags(argv, flag_values, **kwargs)
    except UserError as error:
      if any(_DEBUG.fullmatch(arg) for arg in argv):
        raise
      print(f'error: {error}', file=sys.stderr)
      sys.exit(error.exit_code)
  return parse


def report(error: Exception, debug: bool = False) -> int:
  """Prints the line for an error that stopped a run; returns exit status.

  Args:
    error: a UserError (bad input), or `nst_jax.run.Interrupted` (a signal
      stopped the run; its partial result was saved).
    debug: re-raise a UserError, to show its traceback.
  Returns:
    The UserError's exit_code (2), or 128 + the signal's number.
  """
  if isinstance(error, UserError):
    if debug:
      raise error
    print(f'error: {error}', file=sys.stderr)
    return error.exit_code
  # Imported here: the manifest module starts JAX, which --help avoids.
  # pylint: disable-next=g-import-not-at-top
  from nst_jax.io import manifest as manifest_lib
  checkpoint = error.manifest.get('checkpoint')
  print('interrupted: partial result saved to '
        + ', '.join(manifest_lib.output_lines(error.manifest))
        + (f'; the same command again resumes from {checkpoint}'
           if checkpoint else ''), file=sys.stderr)
  return 128 + error.signum


def run(main: Callable[[list], int], *, prog: str, about: str,
        default_config: str, own_flags: Sequence[str],
        flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Runs `main(argv)` as a program with the config flags; exits with its
  return value.

  Args:
    main: the program; returns an exit status.
    prog, about, default_config, own_flags: as parse_flags.
    flag_values: as parse_flags.
  """
  app.run(lambda argv: sys.exit(main(argv)),
          flags_parser=flags_parser(
              flag_values, default_config=default_config, prog=prog,
              about=about, own_flags=own_flags))
