"""What a run from the web page does, without Gradio: settings, uploads,
live updates and files.

A run's settings are the server's config (its `--config` flags) with the
page's controls applied (`config_for`); the controls besides the main ones
are generated from configs/default.py's documented fields
(`advanced_fields`), so the page and `--help` describe the same fields.
Uploads are copied into a per-run temporary folder (`RunFolder`) and
checked by the same readers the command line uses; the folder is removed
with the run. A run goes through `nst_jax.stylize` or
`nst_jax.stylize_video` in a worker thread (`Job`), so that the page can
show its progress while it runs and stop it between compiled chunks. Each
finished run's files go to the browser tab's own folder
(`ResultStore`).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from ml_collections import config_dict

from nst_jax import cli
from nst_jax.errors import UserError

# The controls shown on the page itself, in this order; the other documented
# fields are in its "advanced" panel.
MAIN_FIELDS = ('image_size', 'style_weight', 'iterations', 'optimizer',
               'init', 'color_control', 'style_loss', 'padding',
               'style_scale', 'coarse_to_fine', 'seed')
# Set by the server's command line only: they name files on the server or
# decide how the server runs, which a browser must not choose.
SERVER_FIELDS = ('content', 'style', 'output', 'weights',
                 'allow_random_weights', 'compilation_cache', 'distributed',
                 'checkpoint_every', 'resume', 'max_memory_gb', 'save_every')
# Images the page takes as uploads rather than as text.
UPLOAD_FIELDS = ('content_masks', 'style_masks', 'init_image')


def _sweep_fields() -> tuple:
  """The fields a sweep from the page can vary: config.sweep's numbers
  (a sweep over styles takes the uploaded styles, one per member)."""
  from nst_jax.engine import sweeps  # pylint: disable=g-import-not-at-top
  return tuple(name for name in sweeps.SWEEP_FIELDS if name != 'style')


SWEEP_FIELDS = _sweep_fields()


def _choices() -> dict:
  """The allowed values of the fields that take one of a few names."""
  # pylint: disable=g-import-not-at-top
  from nst_jax.core import color, descent, losses, optimizers, vgg
  from nst_jax.engine import settings
  return {
      'optimizer': optimizers.OPTIMIZERS, 'init': settings.INITS,
      'color_control': color.COLOR_CONTROLS,
      'color_transform': color.COLOR_TRANSFORMS,
      'style_loss': losses.STYLE_LOSSES, 'padding': vgg.PADDINGS,
      'pooling': vgg.POOLINGS, 'loss_normalization': losses.NORMALIZATIONS,
      'dtype': settings.DTYPES,
      'conv_algorithm': ('auto',) + vgg.CONV_ALGORITHMS,
      'video.flow': settings.VIDEO_FLOWS, 'video.init': settings.VIDEO_INITS,
      'video.mode': settings.VIDEO_MODES, 'video.warp': settings.VIDEO_WARPS,
      'video.fill': settings.VIDEO_FILLS,
      'sweep.mode': ('auto',) + descent.SWEEP_MODES}


# ---------------------------------------------------------------------------
# Fields and settings.

@dataclasses.dataclass(frozen=True)
class Field:
  """One config field as a control.

  Attributes:
    path: its dotted name ('video.temporal_weight').
    kind: 'bool', 'int', 'float', 'str', 'tuple' or 'choice'.
    default: its value in the server's config.
    meaning: what configs/default.py says of it.
    section: the heading it is under there.
    choices: the allowed values of a 'choice'.
  """
  path: str
  kind: str
  default: object
  meaning: str = ''
  section: str = ''
  choices: tuple = ()


def field(config: config_dict.ConfigDict, path: str,
          docs: Optional[dict] = None) -> Field:
  """The control for `path`, with its value in `config`."""
  docs = cli.documented_fields() if docs is None else docs
  value = cli.field_value(config, path)
  doc = docs.get(path, cli.FieldDoc('', ''))
  choices = tuple(_choices().get(path, ()))
  if choices:
    kind = 'choice'
  elif isinstance(value, bool):
    kind = 'bool'
  else:
    kind = {int: 'int', float: 'float', tuple: 'tuple'}.get(type(value),
                                                           'str')
  return Field(path, kind, value, doc.meaning, doc.section, choices)


def advanced_fields(config: config_dict.ConfigDict, *,
                    video: bool = False) -> list:
  """The documented fields of the "advanced" panel, in the documentation's
  order: every field but the main controls, the server's, the uploads and
  the sweep's (the page has its own sweep controls); with `video`, only the
  video fields (`video.*`), which the video panel shows."""
  docs = cli.documented_fields()
  out = []
  for path in docs:
    if not cli._has(config, path):  # pylint: disable=protected-access
      continue
    if isinstance(cli.field_value(config, path), config_dict.ConfigDict):
      continue
    top = path.split('.', 1)[0]
    if top in MAIN_FIELDS + SERVER_FIELDS + UPLOAD_FIELDS or top == 'sweep':
      continue
    if (top == 'video') != video:
      continue
    out.append(field(config, path, docs))
  return out


def parse_value(spec: Field, raw):
  """The control's value as the field's type.

  Raises:
    UserError: 'iterations: expected an integer, got 'ten''.
  """
  name = spec.path
  try:
    if spec.kind == 'bool':
      return bool(raw)
    if spec.kind == 'int':
      number = float(raw)
      if number != int(number):
        raise ValueError
      return int(number)
    if spec.kind == 'float':
      return float(raw)
    if spec.kind == 'tuple':
      value = ast.literal_eval(raw) if isinstance(raw, str) else raw
      value = value if isinstance(value, (tuple, list)) else (value,)
      return tuple(value)
    if spec.kind == 'choice' and raw not in spec.choices:
      raise UserError(f'{name}: expected one of {", ".join(spec.choices)}, '
                      f'got {raw!r}')
    return '' if raw is None else str(raw)
  except (TypeError, ValueError, SyntaxError, OverflowError):
    expected = {'int': 'an integer', 'float': 'a number',
                'tuple': "a tuple, e.g. '(1, 2)'"}[spec.kind]
    raise UserError(f'{name}: expected {expected}, got {raw!r}') from None


def config_for(base: config_dict.ConfigDict, values: dict
               ) -> config_dict.ConfigDict:
  """The server's config with the page's controls applied.

  Args:
    base: the server's config (not changed).
    values: {dotted field path: the control's value}; paths of
      SERVER_FIELDS are refused.
  Raises:
    UserError: a server field, an unknown field or a value of the wrong type.
  """
  config = config_dict.ConfigDict(base.to_dict())
  docs = cli.documented_fields()
  for path, raw in values.items():
    if path.split('.', 1)[0] in SERVER_FIELDS:
      raise UserError(f'{path}: set by the server\'s command line, not the '
                      'page')
    try:
      spec = field(base, path, docs)
    except KeyError:
      raise UserError(f'{path}: no such field') from None
    parent = config
    *groups, leaf = path.split('.')
    for group in groups:
      parent = parent[group]
    parent[leaf] = parse_value(spec, raw)
  return config


def refuse_video_fields(config: config_dict.ConfigDict,
                        base: config_dict.ConfigDict) -> None:
  """Refuses video fields changed from the server's for a still image,
  which cannot honour them.

  Raises:
    UserError: 'video.temporal_weight: only for a clip (upload one under
      Video) ...'.
  """
  for name, value in config.video.items():
    if value != base.video[name]:
      raise UserError(f'video.{name}: only for a clip (upload one under '
                      'Video), or set it back to '
                      f'{base.video[name]!r} for an image')


def sweep_values(field_name: str, text: str) -> tuple:
  """'1e-4, 1e-3' -> (0.0001, 0.001) for a sweep over `field_name`.

  Raises:
    UserError: an unknown field, fewer than two values or a bad number.
  """
  if field_name not in SWEEP_FIELDS:
    raise UserError(f'sweep: {field_name!r} cannot be swept from the page '
                    f'(one of {", ".join(SWEEP_FIELDS)})')
  parts = [p for p in re.split(r'[,\s]+', text.strip()) if p]
  kind = int if field_name == 'seed' else float
  try:
    values = tuple(kind(p) for p in parts)
  except ValueError:
    raise UserError(f'sweep.{field_name}: expected numbers separated by '
                    f'commas, got {text!r}') from None
  if len(values) < 2:
    raise UserError(f'sweep.{field_name}: give two values or more, e.g. '
                    "'1e-4, 1e-3, 1e-2'")
  return values


def describe_settings(config: config_dict.ConfigDict,
                      base: config_dict.ConfigDict) -> str:
  """The fields a run changed from the server's config, 'a=1, b=2'."""
  changed = []
  for path in cli.field_paths(config):
    value = cli.field_value(config, path)
    if isinstance(value, config_dict.ConfigDict) or path.split(
        '.', 1)[0] in ('content', 'style', 'output'):
      continue
    try:
      before = cli.field_value(base, path)
    except KeyError:
      before = None
    if value != before:
      changed.append(f'{path}={value:g}' if isinstance(value, float)
                     else f'{path}={value}')
  return ', '.join(changed) or 'the server\'s settings'


# ---------------------------------------------------------------------------
# Uploads.

@dataclasses.dataclass(frozen=True)
class Upload:
  """A file the page received.

  Attributes:
    path: where the server holds it (in the page's upload folder).
    name: its name in the browser, used in messages.
  """
  path: str
  name: str


def _safe_name(name: str) -> str:
  name = os.path.basename(name or '') or 'upload'
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name)[-80:].lstrip('.') or 'upload'


class RunFolder:
  """A run's own temporary folder: its uploads and working files, removed
  with the run. Messages about its files name them as the browser did."""

  def __init__(self, parent: str, upload_roots: Sequence[str]):
    os.makedirs(parent, exist_ok=True)
    self.path = tempfile.mkdtemp(prefix='run-', dir=parent)
    self._roots = [os.path.realpath(root) for root in upload_roots]
    self._names = {}

  def take(self, upload: Upload, what: str) -> str:
    """Copies an upload in; returns its path here.

    Raises:
      UserError: a path outside the page's upload folders (no path from a
        browser may name another file of the server).
    """
    real = os.path.realpath(upload.path)
    if not any(os.path.commonpath([real, root]) == root
               for root in self._roots) or not os.path.isfile(real):
      raise UserError(f'{what}: not a file this page received')
    name = _safe_name(upload.name)
    target = os.path.join(self.path, f'{len(self._names)}_{name}')
    shutil.copyfile(real, target)
    self._names[target] = name
    return target

  def message(self, error: BaseException) -> str:
    """The error's line, naming uploads as the browser did."""
    text = str(error)
    for path, name in self._names.items():
      text = text.replace(path, name)
    return text.replace(self.path + os.sep, '')

  def remove(self) -> None:
    shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------------------
# Running.

@dataclasses.dataclass
class Update:
  """A live update of a running job.

  Attributes:
    step: the step reached (a clip: the frame finished).
    total: the steps (frames) the run will take.
    terms: the loss terms (floats) of each member.
    images: each member's current uint8 image.
    rate: steps (frames) per second since the first update (None at it).
    seconds_left: the time left at that rate (None without a rate).
  """
  step: int
  total: int
  terms: list
  images: list
  rate: Optional[float] = None
  seconds_left: Optional[float] = None


@dataclasses.dataclass
class Done:
  """How a job ended: its value, or the error that ended it."""
  value: object = None
  error: Optional[BaseException] = None


class Job:
  """Runs `work(on_update, should_stop)` in a worker thread; `updates()`
  yields its `Update`s as they come and then one `Done`.

  Args:
    work: the run; it calls `on_update(step, terms, images)` (terms and
      images are lists, one entry per member) and polls `should_stop()`.
    total: the steps it will take, for the rate and time left.
    cancel: set to stop the run at its next chunk boundary.
  """

  def __init__(self, work: Callable, total: int, cancel: threading.Event):
    self._work = work
    self._total = total
    self._cancel = cancel
    self._queue = queue.Queue()
    self._first = None  # (time, step) at the first update

  def _on_update(self, step, terms, images):
    now = time.perf_counter()
    rate = left = None
    if self._first is None:
      self._first = (now, step)
    elif step > self._first[1] and now > self._first[0]:
      rate = (step - self._first[1]) / (now - self._first[0])
      left = max(self._total - step, 0) / rate
    self._queue.put(Update(int(step), self._total, list(terms), list(images),
                           rate, left))

  def _run(self):
    try:
      value = self._work(self._on_update, self._cancel.is_set)
      self._queue.put(Done(value=value))
    except BaseException as error:  # pylint: disable=broad-except
      self._queue.put(Done(error=error))

  def updates(self) -> Iterator:
    """`Update`s while the run goes, then its `Done`; only the newest of
    the updates waiting is yielded, so a slow page never falls behind."""
    thread = threading.Thread(target=self._run, daemon=True)
    thread.start()
    try:
      while True:
        item = self._queue.get()
        while isinstance(item, Update) and not self._queue.empty():
          newer = self._queue.get()
          if isinstance(newer, Done):
            yield item
          item = newer
        yield item
        if isinstance(item, Done):
          return
    finally:
      # Closed early (the page went away): the run stops at its next chunk,
      # and the device is free before the next job starts.
      if thread.is_alive():
        self._cancel.set()
      thread.join()


def still_steps(config) -> int:
  """The steps a still run takes over its coarse-to-fine levels."""
  return int(config.iterations) + int(config.coarse_to_fine) * int(
      config.coarse_iterations)


def clip_frames(path: str) -> int:
  """The frames of an uploaded clip (0 when its header does not say)."""
  from nst_jax.io import video_read  # pylint: disable=g-import-not-at-top
  return int(video_read.probe(path).frame_count or 0)


def format_terms(terms: dict) -> str:
  """'total 1.23e+04 · content 4.5e+03 · style 7.8e+03'."""
  return ' · '.join(f'{name} {value:.3g}' for name, value in terms.items()
                    if isinstance(value, (int, float)) and math.isfinite(
                        value))


def format_progress(update: Update, unit: str = 'step') -> str:
  """'step 40 of 100 · 3.2 steps/s · 19 s left'."""
  text = f'{unit} {update.step} of {update.total}'
  if update.rate:
    text += f' · {update.rate:.3g} {unit}s/s'
  if update.seconds_left is not None:
    text += f' · {update.seconds_left:.0f} s left'
  return text


PLOT_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
               (148, 103, 189), (140, 86, 75), (227, 119, 194),
               (127, 127, 127))


def loss_plot(history: Sequence, width: int = 480, height: int = 150
              ) -> np.ndarray:
  """A small plot of the total loss against the step, log scale, one line
  per member, as a uint8 image.

  Args:
    history: (step, total loss, member label) rows, in step order.
  Returns:
    (height, width, 3) uint8: white, the lines, and the loss range and last
    step written in the corners.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  canvas = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(canvas)
  rows = [(s, v, m) for s, v, m in history
          if v is not None and math.isfinite(v) and v > 0]
  left, right, top, bottom = 8, width - 8, 18, height - 18
  draw.rectangle((left, top, right, bottom), outline=(200, 200, 200))
  if rows:
    steps = [s for s, _, _ in rows]
    logs = [math.log10(v) for _, v, _ in rows]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    v0, v1 = min(logs), max(max(logs), min(logs) + 1e-9)
    members = list(dict.fromkeys(m for _, _, m in rows))
    for k, member in enumerate(members):
      points = [(left + (s - s0) / (s1 - s0) * (right - left),
                 bottom - (math.log10(v) - v0) / (v1 - v0) * (bottom - top))
                for s, v, m in rows if m == member]
      color = PLOT_COLORS[k % len(PLOT_COLORS)]
      if len(points) > 1:
        draw.line(points, fill=color, width=2)
      else:
        x, y = points[0]
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
    draw.text((left, 2), f'total loss {10 ** v1:.3g}', fill=(60, 60, 60))
    draw.text((left, bottom + 3), f'{10 ** v0:.3g} (log scale)',
              fill=(60, 60, 60))
    draw.text((right - 70, bottom + 3), f'step {max(steps)}',
              fill=(60, 60, 60))
  return np.asarray(canvas)


# ---------------------------------------------------------------------------
# Results.

RANDOM_NOTE = 'RANDOM, UNTRAINED VGG19 weights (not pretrained ones)'


def uses_random_weights(manifest: dict) -> bool:
  """Whether a result was made with seeded random weights."""
  return bool((manifest.get('weights') or {}).get('random'))


@dataclasses.dataclass
class Entry:
  """One finished run in a tab's gallery.

  Attributes:
    image: the picture shown for it (a sweep's grid, a clip's last frame).
    files: its downloads (the PNG or MP4 and the manifest).
    caption: its settings, and whether it is partial or used random weights.
    video: the clip, for a video run.
  """
  image: str
  files: list
  caption: str
  video: Optional[str] = None


class ResultStore:
  """Each browser tab's finished runs, in its own folder under `root`,
  removed with the server."""

  def __init__(self, root: str):
    self.root = root
    self._counts = {}
    self._lock = threading.Lock()

  def folder(self, tab: str) -> str:
    """A new folder for one run of `tab`."""
    with self._lock:
      count = self._counts.get(tab, 0) + 1
      self._counts[tab] = count
    path = os.path.join(self.root, _safe_name(tab), f'{count:03d}')
    os.makedirs(path, exist_ok=True)
    return path

  def save_still(self, tab: str, result, caption: str) -> Entry:
    """Writes a `stylize` result (a sweep: each member and the grid) and
    its manifest, as `Result.save` does."""
    folder = self.folder(tab)
    path = os.path.join(folder, 'result.png')
    manifest = result.save(path)
    outputs = manifest['outputs']
    image = outputs.get('grid') or outputs['image']
    files = ([image] + [r['output'] for r in manifest.get('runs', [])]
             if 'grid' in outputs else [image])
    return Entry(image, files + [outputs['manifest']],
                 _caption(caption, manifest))

  def save_clip(self, tab: str, result, caption: str) -> Entry:
    """Copies a `stylize_video` result's clip (or, when partial, its last
    frame) and its manifest here."""
    folder = self.folder(tab)
    manifest = result.manifest
    files = []
    video = None
    if result.video:
      video = os.path.join(folder, 'clip' + os.path.splitext(result.video)[1])
      shutil.copyfile(result.video, video)
      files.append(video)
    frames = result.frames
    image = None
    if frames:
      image = os.path.join(folder, 'last_frame.png')
      shutil.copyfile(frames[-1], image)
      if not video:
        files.append(image)
    manifest_path = os.path.join(folder, 'clip.json')
    from nst_jax.io import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
    manifest_lib.write_json(manifest_path, manifest)
    files.append(manifest_path)
    return Entry(image, files, _caption(caption, manifest), video)


def _caption(settings_text: str, manifest: dict) -> str:
  notes = []
  if manifest.get('partial'):
    notes.append('partial (cancelled)')
  if uses_random_weights(manifest):
    notes.append(RANDOM_NOTE)
  return ' · '.join([settings_text] + notes)
