"""Atomic file writes with ordinary permissions.

Every file nst_jax writes (images, manifests, converted weights, compiled
programs) goes to a temporary file in the target's folder that then replaces
the target in one step: readers see the old file or the complete new one,
and a failure leaves nothing half-written. The temporary file is created
with mode 0o666, so the umask gives it the permissions of any other new file
(`tempfile.mkstemp` would make it 0o600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Callable, IO


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> None:
  """Calls `write(file)` on a temporary file, then renames it to `path`.

  Args:
    path: the target (str or os.PathLike); its folder must exist.
    write: writes the content to the binary file object it is given.
  Raises:
    OSError: the folder is not writable, the disk is full, ...; nothing is
      left behind and an existing `path` is untouched.

  Example::

    atomic_write('out/result.json', lambda f: f.write(b'{}'))
  """
  path = os.fspath(path)
  folder, name = os.path.split(os.path.abspath(path))
  temp = os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp')
  # O_EXCL: never clobber anything.
  fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, 'wb') as file:
      write(file)
      file.flush()
      os.fsync(file.fileno())  # Data on disk before the name points to it.
    os.replace(temp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temp)
    raise
