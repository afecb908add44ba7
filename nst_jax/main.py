"""Neural style transfer (Gatys, Ecker, Bethge) from the command line.

  nst-jax --config=cpu --config.content=photo.jpg \\
      --config.style=painting.jpg --config.output=out/result.png

(or `python -m nst_jax.main ...`). Without --config the default config is
used. Writes the image and, beside it, its manifest (.json).

`nst-jax serve [--config...]` starts the web page instead (see
`nst-jax serve --help`).

Exit status: 0 done, 1 the loss became non-finite (the last finite image is
kept), 2 bad input (one line on stderr), 128+signal when interrupted (the
partial image and manifest are saved).
"""

import os
import sys

from absl import flags
from absl import logging

from nst_jax import cli
from nst_jax.errors import UserError

DEFAULT_CONFIG = 'default'
cli.define_debug_flag()


def main(argv, flag_values=flags.FLAGS) -> int:
  """Runs the parsed config; prints what it wrote.

  Args:
    argv: what the flags parser left: the program name only.
    flag_values: the parsed flags: `config` and `debug`.
  Returns:
    The exit status.
  """
  del argv  # cli.parse_flags refuses positional arguments
  # Imported here so that --help and flag errors don't start JAX.
  import jax  # pylint: disable=g-import-not-at-top
  from nst_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from nst_jax.io import manifest as manifest_lib
  logging.set_verbosity(logging.INFO)
  try:
    manifest = run_lib.run(flag_values.config)
  except (UserError, run_lib.Interrupted) as error:
    return cli.report(error, debug=flag_values.debug)
  if manifest['kind'] == 'video':
    if jax.process_index() != 0:
      return 0
    flicker = manifest['flicker']
    print(f'wrote {", ".join(manifest_lib.output_lines(manifest))} (flicker '
          + (f'{flicker["output_mean"]:.3g}, the input\'s '
             f'{flicker["input_mean"]:.3g}'
             if flicker['output_mean'] is not None else 'n/a') + ')')
    return 0
  runs = (manifest['runs'] if manifest['kind'] == 'sweep'
          else [dict(manifest, output=manifest['outputs']['image'])])
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
  if manifest['kind'] == 'sweep':
    print(f'wrote {manifest["outputs"]["grid"]} and '
          f'{manifest["outputs"]["manifest"]}')
  return 0


def _prog() -> str:
  """How this program was started, for the usage line."""
  if os.path.basename(sys.argv[0]) == 'nst-jax':
    return 'nst-jax'
  return 'python -m nst_jax.main'


def entry_point():
  """The `nst-jax` console script (also `python -m nst_jax.main`)."""
  if len(sys.argv) > 1 and sys.argv[1] == 'serve':
    del sys.argv[1]
    from nst_jax.web import serve  # pylint: disable=g-import-not-at-top
    serve.entry_point(_prog())
    return
  cli.run(main, prog=_prog(), about=__doc__, default_config=DEFAULT_CONFIG,
          own_flags=['debug'])


if __name__ == '__main__':
  entry_point()
