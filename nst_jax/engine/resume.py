"""Checkpoints of a running optimisation, and resuming from them.

The loop (`nst_jax.engine.loop`) saves its whole state every
`checkpoint_every` steps and when interrupted: the pixels, the optimiser's
state (Adam's moments; L-BFGS's pairs and step count), the loop's counters
and stop window, for every member, plus the host-side record of the run so
far (each level's histories and counts, the level reached). A rerun of the
same command with `resume='auto'` restores it and continues at the same
step: on the same devices the result, losses and evaluation count are
those of the uninterrupted run, bit for bit.

What decides that a checkpoint belongs to this run (`fingerprint`):
  - the config, except the fields that cannot change the result
    (`IGNORED_FIELDS`);
  - the inputs as the network sees them (a SHA-256 of the content, styles
    and masks at every level, or of a video frame and its temporal
    references);
  - the weights (their file's SHA-256, or the seeded random weights);
  - the devices: the process and device counts, how members or rows are
    split, the memory fit (row strips, L-BFGS pairs).
Another config, inputs or weights: the run starts over and says why in one
line (the old checkpoint is replaced only once the new run writes one).
Other devices: refused (`UserError`), since the arrays are laid out for
them; `resume='never'` starts over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from nst_jax.engine import devices as devices_lib
from nst_jax.errors import UserError
from nst_jax.io import checkpoints as checkpoint_files
from nst_jax.io import manifest as manifest_lib

# Periodic checkpoints take at most this share of a run's time; before the
# first one is timed, writing is assumed to go at this speed.
MAX_SHARE = 0.02
ASSUMED_BYTES_PER_S = 200e6

# Config fields that do not change what a run computes ('distributed':
# the devices it runs on are compared apart).
IGNORED_FIELDS = ('resume', 'checkpoint_every', 'compilation_cache',
                  'distributed')


def digest(arrays) -> str:
  """SHA-256 over arrays (their shapes, dtypes and bytes), in order; None
  entries count as absent."""
  sha = hashlib.sha256()
  for array in arrays:
    if array is None:
      sha.update(b'none;')
      continue
    array = np.ascontiguousarray(array)
    sha.update(f'{array.shape}{array.dtype};'.encode())
    sha.update(array.tobytes())
  return sha.hexdigest()


def level_arrays(level) -> list:
  """The arrays of an `inputs.Level` that fix its targets."""
  arrays = [level.content, level.colour_content, level.content_masks]
  arrays += [level.styles[key] for key in sorted(level.styles)]
  arrays += list(level.style_masks or [])
  return arrays


def resumed_step(progress: dict) -> int:
  """The step a checkpoint's `progress` reached, counted over levels (its
  members' furthest)."""
  return max(rows[-1]['iteration']
             for rows in progress['current']['histories'])


def config_for_match(config) -> dict:
  """The config as compared: JSON-normalised, `IGNORED_FIELDS` left out."""
  normalised = json.loads(json.dumps(manifest_lib.json_safe(
      manifest_lib.config_dict(config))))
  for field in IGNORED_FIELDS:
    normalised.pop(field, None)
  return normalised


def fingerprint(config, inputs_sha: str, weights: dict, prepared,
                members: int) -> dict:
  """What a checkpoint must share with the run that resumes it.

  Args:
    config: the run's config.
    inputs_sha: `digest` of the inputs.
    weights: the manifest's `weights` entry.
    prepared: `prepare.Prepared`.
    members: the sweep's member count.
  """
  settings = prepared.settings
  return {
      'config': config_for_match(config),
      'inputs': inputs_sha,
      'weights': {key: weights.get(key) for key in (
          'sha256', 'random', 'preprocessing', 'normalized')},
      'devices': {'processes': jax.process_count(),
                  'devices': len(prepared.devices),
                  'platform': prepared.devices[0].platform,
                  'members': members, 'sweep_mode': prepared.mode,
                  'shard_rows': settings.shard_rows,
                  'row_strips': settings.spec.row_strips,
                  'lbfgs_memory': settings.lbfgs_memory}}


def _config_difference(saved: dict, current: dict) -> list:
  def flat(tree, prefix=''):
    items = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        items.update(flat(value, f'{prefix}{key}.'))
      else:
        items[prefix + key] = value
    return items
  saved, current = flat(saved), flat(current)
  return sorted(k for k in set(saved) | set(current)
                if saved.get(k) != current.get(k))


@dataclasses.dataclass
class Checkpoints:
  """A run's checkpointing: where, how often, and what it resumes from.

  Attributes:
    folder: `checkpoints.CheckpointFolder`.
    every: steps between periodic checkpoints (0: only when interrupted).
    fingerprint: `fingerprint(...)` of this run (None until `match`).
    resumed: the matching checkpoint's JSON, once `match` found one.
    log: where the one-line notes go.
  """
  folder: checkpoint_files.CheckpointFolder
  every: int
  fingerprint: Optional[dict] = None
  resumed: Optional[dict] = None
  log: Callable[[str], None] = print
  written: int = 0          # checkpoints written by this process
  write_s: float = 0.0      # the time they took
  bytes: int = 0            # the size of the last one
  restore_s: Optional[float] = None  # reading the resumed one
  _since: float = dataclasses.field(default_factory=time.perf_counter)
  _write_estimate: Optional[float] = None  # the last write's time

  @classmethod
  def beside(cls, output: str, every: int, log) -> 'Checkpoints':
    return cls(checkpoint_files.CheckpointFolder(
        checkpoint_files.checkpoint_folder(output)), every, log=log)

  def match(self, fingerprint_: dict, resume: str, what: str = '') -> \
      Optional[dict]:
    """Looks for a checkpoint of this run.

    Args:
      fingerprint_: this run's `fingerprint`.
      resume: 'auto' (use a matching checkpoint) or 'never'.
      what: extra text that must match (a video frame's place).
    Returns:
      The matching checkpoint's JSON, or None (none, another run's, or
      `resume='never'`).
    Raises:
      UserError: an unreadable or foreign folder, or a checkpoint made on
        other devices.
    """
    if not devices_lib.same_on_every_process(self.folder.path):
      # orbax's hosts write one checkpoint together; apart, they would wait
      # for each other's files for ever.
      raise UserError(
          f'{self.folder.path}: the processes would checkpoint into '
          'different folders; give them one output folder on a file system '
          'they all share')
    self.begin(fingerprint_, what)
    if resume == 'never':
      return None
    meta = self.folder.latest_meta()
    if meta is None:
      return None
    saved = meta.get('fingerprint', {})
    path = self.folder.path
    if saved.get('config') != self.fingerprint['config']:
      fields = _config_difference(saved.get('config', {}),
                                  self.fingerprint['config'])
      self.log(f'{path}: made with another config ({", ".join(fields[:4])}'
               f'{", ..." if len(fields) > 4 else ""} differ); starting over')
      return None
    for key, name in (('inputs', 'other inputs'),
                      ('weights', 'other weights')):
      if saved.get(key) != self.fingerprint[key]:
        self.log(f'{path}: made with {name}; starting over')
        return None
    if saved.get('devices') != self.fingerprint['devices']:
      theirs, ours = saved.get('devices', {}), self.fingerprint['devices']
      fields = sorted(k for k in set(theirs) | set(ours)
                      if theirs.get(k) != ours.get(k))
      raise UserError(
          f'{path}: made on other devices ('
          + ', '.join(f'{k} {theirs.get(k)} there, {ours.get(k)} here'
                      for k in fields)
          + '); resume it where it was made, or set resume=never to start '
          'over')
    if saved.get('place', '') != what:
      return None
    self.resumed = meta
    return meta

  def begin(self, fingerprint_: dict, what: str = '') -> None:
    """Sets what the next checkpoints are of, without looking for one to
    resume (a video's later frames)."""
    self.fingerprint = dict(fingerprint_, place=what)
    self.resumed = None

  def due(self, previous_step: int, step: int, state: Any) -> bool:
    """Whether to write a periodic checkpoint of `state` after a chunk
    that went from `previous_step` to `step`: when it passed a multiple of
    `every`, unless the writes would then take more than `MAX_SHARE` of
    the run's time (a fast device and a large L-BFGS history: the write,
    measured, or before the first at `ASSUMED_BYTES_PER_S`, must be at most
    that share of the time since the last write or the start). The same
    answer on every process."""
    if not (self.every and step // self.every > previous_step // self.every):
      return False
    write_s = self._write_estimate or sum(
        x.nbytes for x in jax.tree_util.tree_leaves(state)) / (
            ASSUMED_BYTES_PER_S)
    since = time.perf_counter() - self._since
    return devices_lib.any_process(write_s <= MAX_SHARE * since)

  def started(self) -> None:
    """The optimisation starts: the writes' share counts from here."""
    self._since = time.perf_counter()

  def save(self, state: Any, progress: dict) -> None:
    """Writes `state` (device arrays) with `progress` (JSON) and this run's
    fingerprint."""
    start = time.perf_counter()
    self.folder.save(state, {'fingerprint': self.fingerprint,
                             'progress': manifest_lib.json_safe(progress)})
    self._since = time.perf_counter()
    self._write_estimate = self._since - start
    self.write_s += self._write_estimate
    self.written += 1
    self.bytes = self.folder.size()

  def manifest(self) -> dict:
    """The manifest's `checkpoints` entry: how many this run wrote, what
    they cost."""
    return {'folder': self.folder.path, 'every': self.every,
            'written': self.written, 'write_s': self.write_s,
            'bytes': self.bytes, 'restore_s': self.restore_s}

  def restore(self, abstract: Any) -> Any:
    """The matched checkpoint's state, placed like `abstract`."""
    start = time.perf_counter()
    state = self.folder.restore_state(jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=x.sharding), abstract))
    jax.block_until_ready(state)
    self.restore_s = time.perf_counter() - start
    return state

  def remove(self) -> None:
    """The run completed: its checkpoints go."""
    self.folder.remove()

  def close(self) -> None:
    self.folder.close()
