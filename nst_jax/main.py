"""Command line: `python -m nst_jax.main --config=configs/default.py ...`.

Parses flags and calls `nst_jax.run.run(config)`. Exit status: 0 done,
1 the loss became non-finite (the last finite image is kept), 2 bad input,
128+signal when interrupted (the partial image and manifest are saved).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nst_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (see configs/).', lock_config=False)
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks of errors.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that --help and flag errors don't start JAX.
  import jax  # pylint: disable=g-import-not-at-top
  from nst_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  config = _CONFIG.value
  try:
    config.keys()  # a config file that failed to load fails here
  except Exception as error:  # pylint: disable=broad-except
    if _DEBUG.value:
      raise
    print(f'error: --config: {error}'.splitlines()[0].rstrip(),
          file=sys.stderr)
    return 2
  try:
    manifest = run_lib.run(config)
  except UserError as error:
    if _DEBUG.value:
      raise
    print(f'error: {error}', file=sys.stderr)
    return error.exit_code
  except run_lib.Interrupted as interrupted:
    print(f'interrupted: partial result saved to '
          f'{interrupted.manifest["output"]}', file=sys.stderr)
    return 128 + interrupted.signum
  runs = manifest.get('runs', [manifest])  # a sweep lists its members
  failed = [run for run in runs if run['stop_reason'] == 'non_finite']
  for run in failed:
    print(f'error: the loss became non-finite at iteration '
          f'{run["non_finite_at_iteration"]}; kept the last finite image in '
          f'{run["output"]}', file=sys.stderr)
  if failed:
    return 1
  if jax.process_index() != 0:  # Several hosts: process 0 writes.
    print(f'process {jax.process_index()} done; process 0 wrote the outputs')
    return 0
  for run in runs:
    final = run['final']['total']
    print(f'wrote {run["output"]} (final loss '
          f'{"nan" if final is None else f"{final:.6g}"}, '
          f'{run["evaluations"]} evaluations)')
  if 'grid' in manifest:
    print(f'wrote {manifest["grid"]} and '
          f'{os.path.splitext(manifest["output"])[0]}.json')
  return 0


def _flags_parser(argv):
  """absl's parser, but a bad flag or config file is one line and exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    print(f'error: {error}'.splitlines()[0], file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    # ml_collections reports an unknown --config.FIELD or a value of the
    # wrong type this way.
    print(f'error: bad --config override: {error}'.splitlines()[0],
          file=sys.stderr)
  sys.exit(2)


def entry_point():
  """The `nst-jax` console script."""
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=_flags_parser)


if __name__ == '__main__':
  entry_point()
