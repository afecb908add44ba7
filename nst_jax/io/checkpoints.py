"""Checkpoint folders: an optimisation's arrays and a JSON description.

A checkpoint folder (for out/result.png: out/result.ckpt/) holds numbered
checkpoints written by orbax-checkpoint's `CheckpointManager`; each is a
folder `<n>/` with `state/` (the arrays, in OCDBT/Zarr files: with several
processes each writes the shards of its own devices) and `meta/` (JSON).
Orbax writes a checkpoint into a temporary folder and renames it once every
process has written its part, and removes the previous one only after
that, so a write that fails (a full disk) leaves the previous checkpoint
as it was. `<n>` counts writes; the step reached is in the JSON.

Every function here is collective across processes: all of them call it
with the same folder (a file system they share) at the same point.

Example::

  folder = checkpoints.CheckpointFolder('out/result.ckpt')
  folder.save(state, {'step': 20})
  meta = folder.latest_meta()
  state = folder.restore_state(abstract_state)
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

from nst_jax.errors import UserError

# Bumped when what a checkpoint holds changes meaning; an older one is
# refused, not misread.
FORMAT_VERSION = 1


def checkpoint_folder(output: str) -> str:
  """out/result.png -> out/result.ckpt (beside the output)."""
  return os.path.splitext(output)[0] + '.ckpt'


def _orbax():
  # orbax-checkpoint takes seconds to import; only runs that write or read a
  # checkpoint pay for it.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def _first_line(error: BaseException) -> str:
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error).strip().split('\n', 1)[0]
  return text[:300] or type(error).__name__


class CheckpointFolder:
  """The checkpoints of one run (see the module docstring).

  Args:
    path: the folder (created by the first `save`).
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._manager = None

  def _open(self):
    if self._manager is None:
      if os.path.exists(self.path) and not os.path.isdir(self.path):
        raise UserError(f'{self.path}: exists and is not a checkpoint folder '
                        '(a file); move it away')
      ocp = _orbax()
      try:
        self._manager = ocp.CheckpointManager(
            self.path, options=ocp.CheckpointManagerOptions(
                max_to_keep=1, enable_async_checkpointing=False,
                create=False))
      except (OSError, ValueError) as error:
        raise UserError(f'{self.path}: cannot be read as a checkpoint '
                        f'folder: {_first_line(error)}') from None
    return self._manager

  def exists(self) -> bool:
    """Whether the folder holds anything at all."""
    return os.path.isdir(self.path) and bool(os.listdir(self.path))

  def latest(self) -> Optional[int]:
    """The newest complete checkpoint's number, or None."""
    if not os.path.isdir(self.path):
      if os.path.exists(self.path):
        self._open()  # refuses a file in the folder's place
      return None
    return self._open().latest_step()

  def latest_meta(self) -> Optional[dict]:
    """The newest checkpoint's JSON, or None when there is none.

    Raises:
      UserError: the folder holds something that is not a checkpoint of
        this format (named), or its JSON is unreadable.
    """
    number = self.latest()
    if number is None:
      if self.exists():
        raise UserError(f'{self.path}: not a checkpoint folder (no complete '
                        'checkpoint in it); move it away or remove it')
      return None
    meta_folder = os.path.join(self.path, str(number), 'meta')
    ocp = _orbax()
    try:
      meta = self._open().restore(
          number, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as error:  # pylint: disable=broad-except
      raise UserError(f'{meta_folder}: unreadable checkpoint description '
                      f'({_first_line(error)}); remove {self.path} or set '
                      'resume=never') from None
    if not isinstance(meta, dict) or 'format_version' not in meta:
      raise UserError(f'{meta_folder}: not an nst_jax checkpoint (no '
                      'format_version); remove it or set resume=never')
    if meta['format_version'] != FORMAT_VERSION:
      raise UserError(
          f'{meta_folder}: checkpoint format version '
          f'{meta["format_version"]}, this nst_jax reads version '
          f'{FORMAT_VERSION}; set resume=never to start over')
    return meta

  def restore_state(self, abstract: Any) -> Any:
    """The newest checkpoint's arrays, placed as `abstract` says.

    Args:
      abstract: a pytree of `jax.ShapeDtypeStruct` with shardings, shaped
        as what was saved.
    Raises:
      UserError: a truncated or corrupted file (named).
    """
    number = self.latest()
    ocp = _orbax()
    try:
      return self._open().restore(number, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))['state']
    except Exception as error:  # pylint: disable=broad-except
      raise UserError(
          f'{os.path.join(self.path, str(number), "state")}: truncated or '
          f'corrupted checkpoint ({_first_line(error)}); remove '
          f'{self.path} or set resume=never to start over') from None

  def save(self, state: Any, meta: dict) -> None:
    """Writes a new checkpoint of `state` (arrays) and `meta` (JSON), then
    removes the previous one.

    Raises:
      UserError: the write failed (the disk is full, the folder is not
        writable); the previous checkpoint is still there and valid.
    """
    ocp = _orbax()
    meta = dict(meta, format_version=FORMAT_VERSION)
    try:
      os.makedirs(self.path, exist_ok=True)
      manager = self._open()
      number = (manager.latest_step() or 0) + 1
      manager.save(number, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
      manager.wait_until_finished()
    except UserError:
      raise
    except Exception as error:  # pylint: disable=broad-except
      raise UserError(f'{self.path}: writing a checkpoint failed '
                      f'({_first_line(error)}); the previous checkpoint, if '
                      'any, is kept') from None

  def size(self) -> int:
    """Bytes on disk in the folder."""
    total = 0
    for root, _, names in os.walk(self.path):
      for name in names:
        try:
          total += os.path.getsize(os.path.join(root, name))
        except OSError:
          pass
    return total

  def remove(self) -> None:
    """Removes the folder (the run it belongs to is complete)."""
    self.close()
    shutil.rmtree(self.path, ignore_errors=True)

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
      self._manager = None
