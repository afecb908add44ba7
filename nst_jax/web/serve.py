"""A local web page for style transfer (needs `pip install 'nst_jax[web]'`).

  nst-jax serve --config=cpu --config.weights=random

(or `python -m nst_jax.main serve ...`), then open http://127.0.0.1:7860.
The --config flags set the values the page's controls start from; fields
that name files on the server or decide how it runs (weights, output,
compilation cache, ...) are the command line's alone. Runs queue, one at a
time on the device. The page is bound to 127.0.0.1 unless --host says
otherwise; it calls no one (no analytics, no fonts or updates from the
internet). Ctrl-C (or SIGTERM) stops the server and removes its uploads and
results; the exit status is then 130 (143).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import sys
import tempfile
import threading

from absl import flags
from absl import logging

from nst_jax import cli
from nst_jax.errors import UserError

flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on; anything '
                    'but a loopback address lets others use this machine.')
flags.DEFINE_integer('port', 7860, 'Port to listen on.')
flags.DEFINE_float('max_upload_mb', 50.0, 'Largest upload accepted, in MB.')
cli.define_debug_flag()

OWN_FLAGS = ['host', 'port', 'max_upload_mb', 'debug']
# Gradio's switches for a machine that may be offline and must not call home.
QUIET_GRADIO = {'GRADIO_ANALYTICS_ENABLED': 'False',
                'HF_HUB_DISABLE_TELEMETRY': '1', 'HF_HUB_OFFLINE': '1',
                'GRADIO_SSR_MODE': 'False'}


def is_loopback(host: str) -> bool:
  """Whether only this machine can reach `host`."""
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_config(config) -> None:
  """Refuses a server config no run from the page could use.

  Raises:
    UserError: the one line the command line prints for it.
  """
  from nst_jax.engine import settings  # pylint: disable=g-import-not-at-top
  for name in ('content', 'style', 'content_masks', 'style_masks',
               'init_image'):
    if config.get(name):
      raise UserError(f'--config.{name}: the page takes its images as '
                      'uploads; give none to nst-jax serve')
  for name, value in config.sweep.items():
    if name not in ('product', 'mode') and value:
      raise UserError(f'--config.sweep.{name}: the page has its own sweep '
                      'controls; give no sweep to nst-jax serve')
  trial = config.copy_and_resolve_references()
  trial.content, trial.style, trial.output = (
      'builtin:scene', 'builtin:painting', '')
  settings.check(trial, from_files=False)


def serve(config, host: str = '127.0.0.1', port: int = 7860,
          max_upload_mb: float = 50.0, block: bool = True):
  """Starts the page; with `block`, serves until Ctrl-C or SIGTERM, then
  removes its temporary folder.

  Returns:
    The signal's number; without `block`, (the gr.Blocks, its URL, the
    temporary folder) at once.
  Raises:
    UserError: Gradio missing, a bad config or a port in use.
  """
  if max_upload_mb <= 0:
    raise UserError(f'--max_upload_mb: must be > 0, got {max_upload_mb:g}')
  check_config(config)
  for key, value in QUIET_GRADIO.items():
    os.environ.setdefault(key, value)
  folder = tempfile.mkdtemp(prefix='nst-jax-serve-')
  os.environ['GRADIO_TEMP_DIR'] = os.path.join(folder, 'uploads')
  try:
    try:
      # pylint: disable-next=g-import-not-at-top
      from nst_jax.web import page as page_lib
    except ImportError as error:
      raise UserError("the web page needs Gradio: pip install "
                      f"'nst_jax[web]' ({error})") from None
    blocks = page_lib.build(config, folder)
    blocks.queue(default_concurrency_limit=1)
    if not is_loopback(host):
      print(f'warning: listening on {host}: anyone who can reach port {port} '
            'can use this machine', file=sys.stderr)
    try:
      _, url, _ = blocks.launch(
          server_name=host, server_port=port, share=False,
          inbrowser=False, prevent_thread_lock=True, quiet=True,
          max_file_size=int(max_upload_mb * 1e6), ssr_mode=False,
          show_error=False, css=page_lib.CSS)
    except OSError as error:
      raise UserError(f'--port={port}: cannot listen on {host} ({error})'
                      ) from None
  except BaseException:
    shutil.rmtree(folder, ignore_errors=True)
    raise
  shown = f'http://{"127.0.0.1" if host in ("0.0.0.0", "::") else host}:{port}'
  print(f'serving nst_jax on {shown} (Ctrl-C stops)', flush=True)
  if not block:
    return blocks, url, folder
  try:
    signum = _wait_for_a_signal()
  finally:
    blocks.close()
    shutil.rmtree(folder, ignore_errors=True)
  print('stopped; removed the uploads and results', file=sys.stderr)
  return signum


def _wait_for_a_signal() -> int:
  """Blocks until SIGINT or SIGTERM; returns its number."""
  caught = []
  stop = threading.Event()

  def handle(signum, frame):
    del frame
    caught.append(signum)
    stop.set()
  previous = {s: signal.signal(s, handle)
              for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    while not stop.wait(1.0):
      pass
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return caught[0]


def main(argv, flag_values=flags.FLAGS) -> int:
  """`nst-jax serve`: the parsed flags in, an exit status out (128 + the
  signal's number once Ctrl-C or SIGTERM stops it)."""
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    signum = serve(flag_values.config, flag_values.host, flag_values.port,
                   flag_values.max_upload_mb)
  except UserError as error:
    return cli.report(error, debug=flag_values.debug)
  return 128 + signum


def entry_point(prog: str) -> None:
  """Runs `<prog> serve ...` (sys.argv without the word 'serve')."""
  cli.run(main, prog=f'{prog} serve', about=__doc__, default_config='default',
          own_flags=OWN_FLAGS)
