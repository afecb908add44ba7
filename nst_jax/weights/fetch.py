"""Download the Keras VGG19 notop weights, check the MD5, convert.

The download shows its progress: in place on a terminal, a few log lines
elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
import time
from typing import Optional, TextIO
import urllib.error
import urllib.request

from nst_jax.errors import UserError
from nst_jax.weights.fileformat import save_weights
from nst_jax.weights.keras import convert_keras

KERAS_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/'
             'vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')
KERAS_MD5 = '253f8cb515780f3b799900260a226db6'
DEFAULT_OUTPUT = os.path.join('weights', 'vgg19_keras.npz')


def format_size(count: float) -> str:
  """Bytes in decimal units: 950 B, 12.3 kB, 80.1 MB, 1.2 GB."""
  if count < 1000:
    return f'{count:.0f} B'
  for unit in ('kB', 'MB', 'GB'):
    count /= 1000
    if count < 1000 or unit == 'GB':
      return f'{count:.1f} {unit}'
  raise AssertionError('unreachable')


def format_duration(seconds: float) -> str:
  """7 s, 3 min 05 s, 2 h 04 min."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def format_progress(done: int, total: Optional[int], elapsed: float) -> str:
  """One progress line: '34.2 MB / 80.1 MB (43%), 5.1 MB/s, 9 s left'.

  Args:
    done: bytes received so far.
    total: the whole download's size (the Content-Length), or None when the
      server did not say.
    elapsed: seconds since the download started.
  Returns:
    Bytes done (and of the total, with the percentage), the mean rate and,
    with a total, the time left at that rate; the rate and time left only
    once they can be measured.
  """
  parts = [format_size(done)]
  if total:
    parts[0] += f' / {format_size(total)} ({100 * done // total}%)'
  if done > 0 and elapsed > 0:
    rate = done / elapsed
    parts.append(f'{format_size(rate)}/s')
    if total and done < total:
      # Rounded up: '0 s left' would read as done.
      parts.append(f'{format_duration(math.ceil((total - done) / rate))} '
                   'left')
  return ', '.join(parts)


class Progress:
  """Shows how far a download has got.

  On a terminal, one line rewritten in place, at most every `interval`
  seconds. Elsewhere (a log file, a pipe), plain lines through `log` only at
  each quarter of a known size, so that logs stay short.
  """

  def __init__(self, total: Optional[int], stream: TextIO, log=print,
               interval: float = 0.25, clock=time.monotonic):
    """Starts the clock.

    Args:
      total: the download's size in bytes, or None if unknown.
      stream: where a terminal's in-place line goes (stderr).
      log: where the plain lines go when `stream` is not a terminal.
      interval: the least seconds between two in-place updates.
      clock: seconds, monotonic (tests pass their own).
    """
    self.total, self.stream, self.log = total, stream, log
    self.interval, self.clock = interval, clock
    self.tty = bool(getattr(stream, 'isatty', lambda: False)())
    self.start = clock()
    self.shown_at = None  # when the in-place line was last written
    self.width = 0  # the in-place line's length, to blank it when shorter
    self.quarters = 0  # quarters of the total logged so far

  def update(self, done: int) -> None:
    """Reports `done` bytes received (cheap when nothing is shown)."""
    now = self.clock()
    if self.tty:
      if self.shown_at is None or now - self.shown_at >= self.interval:
        self._show(format_progress(done, self.total, now - self.start))
        self.shown_at = now
    elif self.total:
      quarters = min(4 * done // self.total, 3)
      if quarters > self.quarters:
        self.quarters = quarters
        self.log('downloaded '
                 + format_progress(done, self.total, now - self.start))

  def finish(self, done: int) -> None:
    """Reports the end: the size, time and mean rate, on a line of its own."""
    elapsed = self.clock() - self.start
    line = f'downloaded {format_size(done)} in {format_duration(elapsed)}'
    if elapsed > 0:
      line += f' ({format_size(done / elapsed)}/s)'
    if self.tty:
      self._show(line)
      self.end()
    else:
      self.log(line)

  def end(self) -> None:
    """Ends the in-place line, so that what follows starts on its own."""
    if self.tty and self.width:
      self.stream.write('\n')
      self.stream.flush()
      self.width = 0

  def _show(self, line: str) -> None:
    self.stream.write('\r' + line.ljust(self.width))
    self.stream.flush()
    self.width = len(line)


def fetch(out_path: str = DEFAULT_OUTPUT, url: str = KERAS_URL,
          md5: str = KERAS_MD5, timeout: float = 60.0, log=print,
          stream: Optional[TextIO] = None) -> str:
  """Downloads, verifies and converts the Keras weights to `out_path`.

  Nothing half-written is ever left: the download goes to a temporary file
  beside the output, which is removed on any failure (including Ctrl-C), and
  the converted file is renamed into place only when complete.

  Args:
    out_path: the converted `.npz` to write.
    url: where to download from.
    md5: expected MD5 of the downloaded file.
    timeout: seconds for the connection.
    log: messages (and, off a terminal, a few progress lines).
    stream: where a terminal shows the progress in place; default stderr.
  Returns:
    out_path.
  Raises:
    UserError: network failure, HTTP error, or checksum mismatch.
  """
  folder = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(folder, exist_ok=True)
  # The download itself is never kept, so a private (0600) file is right.
  handle, tmp = tempfile.mkstemp(dir=folder, prefix='.download-',
                                 suffix='.h5')
  try:
    digest = hashlib.md5()
    log(f'downloading {url}')
    try:
      with urllib.request.urlopen(url, timeout=timeout) as response, \
          os.fdopen(handle, 'wb') as f:
        length = response.headers.get('Content-Length', '')
        progress = Progress(int(length) if length.isdigit() else None,
                            sys.stderr if stream is None else stream, log)
        done = 0
        try:
          for block in iter(lambda: response.read(1 << 16), b''):
            digest.update(block)
            f.write(block)
            done += len(block)
            progress.update(done)
          progress.finish(done)
        finally:
          progress.end()
    except urllib.error.HTTPError as error:
      raise UserError(f'download {url}: HTTP {error.code} {error.reason}'
                      ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as error:
      reason = getattr(error, 'reason', error)
      raise UserError(f'download {url}: {reason}') from None
    if digest.hexdigest() != md5:
      raise UserError(f'download {url}: MD5 {digest.hexdigest()} does not '
                      f'match the expected {md5}')
    try:
      params, meta = convert_keras(tmp)
    except UserError as error:  # named by the URL: the download is deleted
      raise UserError(f'download {url}: ' + str(error).replace(
          f'Keras weights file {tmp}: ', '')) from None
    meta['source_file'] = os.path.basename(url)
    save_weights(out_path, params, meta)
    log(f'wrote {out_path}')
    return out_path
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
