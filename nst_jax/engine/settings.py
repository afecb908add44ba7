"""Checks a run's config once, in one place, and turns it into `Settings`.

Every problem raises `UserError` naming the field (`config.style_weight:
must be >= 0, got -1.0`), before any image is read or anything is written.
The image loader (`nst_jax.io.images`) checks the files themselves.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Optional, Sequence

import numpy as np

from nst_jax.core import color, losses, optim, vgg
from nst_jax.errors import UserError

INITS = ('noise', 'content', 'style', 'image')
# No float16: bfloat16 is the accelerators' native type with float32's range,
# while float16's (to 65504) would need loss scaling nst_jax does not do.
DTYPES = ('float32', 'bfloat16')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# A content with one of these suffixes (or a folder of frames) is a video.
VIDEO_SUFFIXES = ('.mp4', '.mov', '.mkv', '.webm', '.avi', '.gif')
VIDEO_OUTPUT_SUFFIXES = ('.mp4', '.mov', '.mkv', '.gif')
VIDEO_FLOWS = ('dis', 'farneback', 'none')
VIDEO_INITS = ('warped', 'content', 'noise')
VIDEO_MODES = ('sequential', 'joint')


def is_video(path: str) -> bool:
  """Whether a content path is a video: a folder of frames, or a file with
  a video suffix (an animated GIF included)."""
  return bool(path) and (os.path.isdir(path) or os.path.splitext(
      path)[1].lower() in VIDEO_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  """The checked `video.*` fields (see configs/default.py)."""
  temporal_weight: float
  flow: str
  init: str
  long_term: tuple
  first_iterations: int
  mode: str
  window: int
  fps: float



@dataclasses.dataclass(frozen=True)
class Settings:
  """A checked config: paths, the loss spec and the numeric settings."""
  content: str
  styles: tuple
  style_blend_weights: tuple
  output: str
  manifest: str
  weights: str
  image_size: int
  style_scale: float
  spec: losses.LossSpec
  content_layer_weights: Optional[tuple]
  style_layer_weights: Optional[tuple]
  content_weight: float
  style_weight: float
  tv_weight: float
  optimizer: str
  learning_rate: float
  iterations: int
  stop_loss: float
  tolerance: float
  init: str
  init_image: str
  seed: int
  save_every: int
  log_every: int
  compilation_cache: str
  max_memory_gb: float
  sweep_mode: str
  coarse_to_fine: int
  coarse_iterations: int
  shard_rows: bool
  lbfgs_memory: int
  distributed: bool
  # 'auto' (winograd on CPU with float32, else direct), 'direct', 'winograd'.
  conv_algorithm: str
  sweep_product: bool = False
  # Levels of L-BFGS's pyramid preconditioner (optim.pyramid_preconditioner);
  # 1 = none, torch.optim.LBFGS's algorithm.
  lbfgs_pyramid: int = optim.LBFGS_PYRAMID
  # lbfgs's first line-search trial, in pixel values (optim.Optimizer's
  # first_step); 0 = torch's.
  lbfgs_first_step: float = optim.LBFGS_FIRST_STEP
  # Colour control (nst_jax.core.color): 'none', 'luminance', 'histogram' or
  # 'original_colors'; luminance matching; the histogram transform.
  color_control: str = 'none'
  match_luminance: bool = True
  color_transform: str = 'pca'
  # Regions: one content mask per style (paths), optional style masks, and
  # one weight per region (summing to 1; equal by default).
  content_masks: tuple = ()
  style_masks: tuple = ()
  region_weights: tuple = ()
  sliced_redraw: bool = False
  # A video run (the content is a video or a folder of frames), or None.
  video: Optional[VideoSettings] = None
  # What the config asks that has no effect (e.g. init_image without
  # init='image'): logged and kept in the manifest.
  warnings: tuple = ()


def split(value) -> tuple:
  """'a,b' or ('a', 'b') -> ('a', 'b'); '' -> ()."""
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(part.strip() for part in value.split(',') if part.strip())
  return tuple(value)


def _floats(field, value) -> tuple:
  try:
    return tuple(float(v) for v in split(value))
  except (TypeError, ValueError):
    raise UserError(f'config.{field}: expected numbers separated by commas, '
                    f'got {value!r}') from None


def _number(config, field, minimum=None, positive=False, integer=False,
            default=None):
  value = config[field] if default is None else config.get(field, default)
  try:
    number = int(value) if integer else float(value)
    if integer and number != float(value):
      raise ValueError
  except (TypeError, ValueError):
    kind = 'an integer' if integer else 'a number'
    raise UserError(f'config.{field}: must be {kind}, got {value!r}') from None
  if not integer and math.isnan(number):
    raise UserError(f'config.{field}: must be a number, got nan')
  if positive and not number > 0:
    raise UserError(f'config.{field}: must be > 0, got {value!r}')
  if minimum is not None and number < minimum:
    raise UserError(f'config.{field}: must be >= {minimum}, got {value!r}')
  return number


def _finite(config, field, **kwargs):
  """`_number`, refusing infinity too."""
  number = _number(config, field, **kwargs)
  if math.isinf(number):
    raise UserError(f'config.{field}: must be finite, got {number!r}')
  return number


def _flag(config, field, name=None, default=False) -> bool:
  """A boolean field; refuses strings like 'yes' that bool() would accept."""
  value = config.get(field, default) if hasattr(config, 'get') else default
  if isinstance(value, (bool, np.bool_, int)) and value in (0, 1):
    return bool(value)
  raise UserError(f'{name or "config." + field}: must be True or False, got '
                  f'{value!r}')


def _choice(config, field, valid: Sequence[str], default=None) -> str:
  value = config[field] if default is None else config.get(field, default)
  if value not in valid:
    raise UserError(f'config.{field}: unknown {value!r}; valid are '
                    + ', '.join(valid))
  return value


def _layers(config, field) -> tuple:
  names = split(config[field])
  try:
    return tuple(vgg.canonical_layer(name) for name in names)
  except UserError as error:
    raise UserError(f'config.{field}: {error}') from None


def _layer_weights(config, field, layers_field, layers):
  weights = _floats(field, config[field])
  if not weights:
    return None
  if len(weights) != len(layers):
    raise UserError(f'config.{field}: {len(weights)} weights for '
                    f'{len(layers)} layers in config.{layers_field}')
  if any(w < 0 or math.isinf(w) for w in weights):
    raise UserError(f'config.{field}: weights must be finite and >= 0, got '
                    f'{config[field]!r}')
  return weights


def _regions(config, styles, style_loss):
  """(content_masks, style_masks, region_weights), checked against the
  styles: one content mask per style, style masks none or one per style,
  region weights none or one per region (normalised to sum 1)."""
  content_masks = split(config.get('content_masks', ''))
  style_masks = split(config.get('style_masks', ''))
  weights = _floats('region_weights', config.get('region_weights', ''))
  if not content_masks:
    for field, given in (('style_masks', style_masks),
                         ('region_weights', weights)):
      if given:
        raise UserError(f'config.{field}: needs config.content_masks (one '
                        'mask per style)')
    return (), (), ()
  if len(content_masks) != len(styles):
    raise UserError(f'config.content_masks: {len(content_masks)} masks for '
                    f'{len(styles)} style images (one region per style)')
  if style_masks and len(style_masks) != len(styles):
    raise UserError(f'config.style_masks: {len(style_masks)} masks for '
                    f'{len(styles)} style images')
  if weights and len(weights) != len(content_masks):
    raise UserError(f'config.region_weights: {len(weights)} weights for '
                    f'{len(content_masks)} regions')
  if weights and (any(w < 0 or math.isinf(w) for w in weights)
                  or sum(weights) <= 0):
    raise UserError('config.region_weights: must be finite and >= 0 with a '
                    f'positive sum, got {config["region_weights"]!r}')
  if style_loss == 'sliced_wasserstein':
    raise UserError("config.content_masks: not with style_loss="
                    "'sliced_wasserstein' (sorted projections have no "
                    'per-position weights); use gram, mean_std or mean_cov')
  sweep = config.get('sweep') or {}
  if hasattr(sweep, 'get') and sweep.get('style'):
    raise UserError('config.content_masks: not with config.sweep.style (each '
                    'region takes its own style)')
  weights = weights or (1.0,) * len(content_masks)
  return (content_masks, style_masks,
          tuple(w / sum(weights) for w in weights))


def manifest_path(output: str) -> str:
  """out/result.png -> out/result.json."""
  return os.path.splitext(output)[0] + '.json'


def check_output(output: str, inputs: Sequence[str],
                 video: bool = False) -> None:
  """Output folder exists or can be made, is writable, and no input is hit."""
  if not output:
    raise UserError('config.output: empty; give a path like out/result.png')
  suffix = os.path.splitext(output)[1].lower()
  if video and suffix not in VIDEO_OUTPUT_SUFFIXES:
    raise UserError(f'config.output: {output!r}: the content is a video, so '
                    'the output needs a video extension ('
                    + ', '.join(VIDEO_OUTPUT_SUFFIXES) + ')')
  if not video and suffix not in IMAGE_SUFFIXES:
    raise UserError(f'config.output: {output!r} needs an image extension '
                    '(.png, .jpg, ...)')
  if os.path.isdir(output):
    raise UserError(f'config.output: {output!r} is a directory')
  targets = {os.path.realpath(output), os.path.realpath(manifest_path(output))}
  for path in inputs:
    if path and os.path.realpath(path) in targets:
      raise UserError(f'config.output: {output!r} would overwrite the input '
                      f'{path!r}')
  folder = os.path.dirname(os.path.abspath(output))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    raise UserError(f'config.output: cannot create folder {folder!r}: '
                    f'{error.strerror}') from None
  if not os.access(folder, os.W_OK | os.X_OK):
    raise UserError(f'config.output: folder {folder!r} is not writable')


def check(config, from_files: bool = True) -> Settings:
  """Validates a config (ml_collections.ConfigDict or dict) into `Settings`.

  Args:
    config: the run's fields (see configs/default.py).
    from_files: the command line's case: `content`, `style` and `output`
      are required paths, and the output folder must be writable. False
      when the images come as arrays (`nst_jax.stylize`), which writes
      nothing: those fields may be empty.
  Raises:
    UserError: naming the first bad field.
  """
  required = ('content', 'style', 'output') if from_files else ()
  missing = [f for f in required if not config.get(f)]
  if missing:
    raise UserError(f'config.{missing[0]}: required (e.g. '
                    f'--config.{missing[0]}=path)')
  styles = split(config.get('style', ''))
  blend = _floats('style_blend_weights', config.get('style_blend_weights', ''))
  if blend and styles and len(blend) != len(styles):
    raise UserError(f'config.style_blend_weights: {len(blend)} weights for '
                    f'{len(styles)} style images')
  if blend and (any(w < 0 for w in blend) or sum(blend) <= 0):
    raise UserError('config.style_blend_weights: must be >= 0 with a '
                    f'positive sum, got {config["style_blend_weights"]!r}')

  content_layers = _layers(config, 'content_layers')
  style_layers = _layers(config, 'style_layers')
  if not content_layers and not style_layers:
    raise UserError('config.style_layers: no content or style layers given')
  normalization = _choice(config, 'loss_normalization', losses.NORMALIZATIONS)
  pooling = _choice(config, 'pooling', vgg.POOLINGS)
  dtype = _choice(config, 'dtype', DTYPES)
  conv_algorithm = _choice(config, 'conv_algorithm',
                           ('auto',) + vgg.CONV_ALGORITHMS, default='auto')
  optimizer = _choice(config, 'optimizer', optim.OPTIMIZERS)
  init = _choice(config, 'init', INITS)
  if init == 'image' and not config.get('init_image'):
    raise UserError("config.init_image: required when config.init='image'")
  warnings = []
  if config.get('init_image') and init != 'image':
    warnings.append(f'config.init_image is ignored: config.init is '
                    f"{init!r} (set config.init='image' to start from it)")

  output = str(config.get('output', ''))
  video = None
  if from_files and is_video(str(config['content'])):
    video = _video(config)
  if from_files:
    inputs = list(styles) + [config['content'], config.get('init_image', '')]
    inputs += split(config.get('content_masks', ''))
    inputs += split(config.get('style_masks', ''))
    check_output(output, inputs, video=video is not None)

  style_loss = _choice(config, 'style_loss', losses.STYLE_LOSSES,
                       default='gram')
  padding = _choice(config, 'padding', vgg.PADDINGS, default='zeros')
  color_control = _choice(config, 'color_control', color.COLOR_CONTROLS,
                          default='none')
  color_transform = _choice(config, 'color_transform', color.COLOR_TRANSFORMS,
                            default='pca')
  content_masks, style_masks, region_weights = _regions(
      config, styles, style_loss)
  row_strips = _number(config, 'row_strips', integer=True, minimum=0,
                       default=0)
  sliced_redraw = _flag(config, 'sliced_redraw')
  if sliced_redraw and style_loss != 'sliced_wasserstein':
    raise UserError("config.sliced_redraw: only with "
                    "config.style_loss='sliced_wasserstein'")
  if sliced_redraw and optimizer not in ('adam', 'sgd'):
    raise UserError('config.sliced_redraw: needs optimizer adam or sgd (a '
                    'line search and L-BFGS\'s curvature pairs need the same '
                    'objective at every step)')

  sweep = config.get('sweep') or {}
  sweep_mode = sweep.get('mode', 'auto') if hasattr(sweep, 'get') else 'auto'
  if sweep_mode not in ('auto',) + optim.SWEEP_MODES:
    raise UserError(f'config.sweep.mode: unknown {sweep_mode!r}; valid are '
                    + ', '.join(('auto',) + optim.SWEEP_MODES))
  sweep_product = _flag(sweep, 'product', 'config.sweep.product')
  shard_rows = _flag(config, 'shard_rows')
  if row_strips > 1 and shard_rows:
    raise UserError('config.row_strips: not with shard_rows (rows are split '
                    'over the devices instead); use one or the other')
  stop_loss = float(config.get('stop_loss', float('-inf')))
  if math.isnan(stop_loss):
    raise UserError('config.stop_loss: must be a number, got nan')
  learning_rate = _number(config, 'learning_rate', minimum=0, default=0.0)
  return Settings(
      content=str(config.get('content', '')), styles=styles,
      style_blend_weights=blend or (1.0,) * len(styles),
      output=output, manifest=manifest_path(output) if output else '',
      weights=str(config['weights']),
      image_size=_number(config, 'image_size', integer=True, positive=True),
      style_scale=_number(config, 'style_scale', positive=True),
      spec=losses.LossSpec(content_layers=content_layers,
                           style_layers=style_layers,
                           normalization=normalization, pooling=pooling,
                           dtype=dtype, remat=_flag(config, 'remat'),
                           padding=padding, style_loss=style_loss,
                           regions=len(content_masks),
                           sliced_redraw=sliced_redraw,
                           row_strips=row_strips),
      conv_algorithm=conv_algorithm,
      content_layer_weights=None,
      style_layer_weights=_layer_weights(config, 'style_layer_weights',
                                         'style_layers', style_layers),
      content_weight=_number(config, 'content_weight', minimum=0),
      style_weight=_number(config, 'style_weight', minimum=0),
      tv_weight=_number(config, 'tv_weight', minimum=0),
      optimizer=optimizer,
      # 0: the optimiser's own default step.
      learning_rate=learning_rate or optim.DEFAULT_LEARNING_RATES[optimizer],
      iterations=_number(config, 'iterations', integer=True, minimum=0),
      stop_loss=stop_loss,
      tolerance=_number(config, 'tolerance', minimum=0, default=0.0),
      init=init, init_image=str(config.get('init_image', '')),
      seed=_number(config, 'seed', integer=True),
      save_every=_number(config, 'save_every', integer=True, minimum=0),
      log_every=_number(config, 'log_every', integer=True, positive=True),
      compilation_cache=str(config.get('compilation_cache', '')),
      max_memory_gb=_number(config, 'max_memory_gb', minimum=0, default=0.0),
      sweep_mode=sweep_mode,
      coarse_to_fine=_number(config, 'coarse_to_fine', integer=True,
                             minimum=0, default=0),
      coarse_iterations=_number(config, 'coarse_iterations', integer=True,
                                minimum=0, default=100),
      shard_rows=shard_rows,
      lbfgs_memory=_number(config, 'lbfgs_memory', integer=True,
                           positive=True, default=optim.LBFGS_MEMORY),
      lbfgs_pyramid=_number(config, 'lbfgs_pyramid', integer=True,
                            positive=True, default=optim.LBFGS_PYRAMID),
      lbfgs_first_step=_finite(config, 'lbfgs_first_step', minimum=0,
                               default=optim.LBFGS_FIRST_STEP),
      distributed=_flag(config, 'distributed'),
      sweep_product=sweep_product, color_control=color_control,
      match_luminance=_flag(config, 'match_luminance', default=True),
      color_transform=color_transform, content_masks=content_masks,
      style_masks=style_masks, region_weights=region_weights,
      sliced_redraw=sliced_redraw, video=video, warnings=tuple(warnings))


def _video(config) -> VideoSettings:
  """`config.video`, checked; and what a video run cannot combine."""
  video = config.get('video') or {}
  field = lambda name, default: video.get(name, default)

  def choice(name, valid, default):
    value = field(name, default)
    if value not in valid:
      raise UserError(f'config.video.{name}: unknown {value!r}; valid are '
                      + ', '.join(valid))
    return value

  def number(name, default, integer=False, minimum=0):
    value = field(name, default)
    try:
      result = int(value) if integer else float(value)
      if (integer and result != float(value)) or math.isnan(result):
        raise ValueError
    except (TypeError, ValueError):
      raise UserError(f'config.video.{name}: must be '
                      f'{"an integer" if integer else "a number"}, got '
                      f'{value!r}') from None
    if result < minimum:
      raise UserError(f'config.video.{name}: must be >= {minimum}, got '
                      f'{value!r}')
    return result

  long_term = field('long_term', (1,))
  if isinstance(long_term, str):
    long_term = split(long_term.strip('()[] '))
  try:
    offsets = tuple(sorted({int(v) for v in long_term}))
  except (TypeError, ValueError):
    raise UserError('config.video.long_term: frame offsets like (1, 10, 20), '
                    f'got {long_term!r}') from None
  if not offsets or offsets[0] < 1:
    raise UserError('config.video.long_term: offsets must be >= 1, got '
                    f'{long_term!r}')
  if offsets[0] != 1:
    raise UserError('config.video.long_term: must include 1 (the previous '
                    f'frame, which the start and flicker use), got '
                    f'{long_term!r}')
  settings = VideoSettings(
      temporal_weight=number('temporal_weight', 0.3),
      flow=choice('flow', VIDEO_FLOWS, 'dis'),
      init=choice('init', VIDEO_INITS, 'warped'),
      long_term=offsets,
      first_iterations=number('first_iterations', 0, integer=True),
      mode=choice('mode', VIDEO_MODES, 'sequential'),
      window=number('window', 4, integer=True, minimum=2),
      fps=number('fps', 0.0))
  sweep = config.get('sweep') or {}
  if any(sweep.get(name) for name in SWEEP_FIELDS):
    raise UserError('config.sweep: a video run stylises one setting; sweep '
                    'on a still frame first')
  if int(config.get('coarse_to_fine', 0) or 0):
    raise UserError('config.coarse_to_fine: not with a video content (each '
                    'frame starts from the previous one)')
  if config.get('shard_rows'):
    raise UserError('config.shard_rows: not with a video content; '
                    "video.mode='joint' splits a window's frames over the "
                    'devices')
  if settings.mode == 'joint' and offsets != (1,):
    raise UserError("config.video.long_term: video.mode='joint' couples "
                    'neighbouring frames only; use long_term=(1,)')
  return settings


SWEEP_FIELDS = ('content_weight', 'style_weight', 'tv_weight', 'seed',
                'style')


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep (a run without a sweep has one member).

  Attributes:
    content_weight, style_weight, tv_weight: alpha, beta and the TV weight.
    seed: seeds the noise start.
    styles: the style images this member matches (their keys: paths, or
      names given to in-memory images), blended by `style_blend_weights`
      when they are the config's own styles, else equally.
    content_layer_weights, style_layer_weights: one weight per configured
      layer, or None for 1/|L| each.
    label: the grid's text under this member's panel ('' for none).
    varied: ((field, value), ...) what this member changes from the config.
  """
  content_weight: float
  style_weight: float
  tv_weight: float
  seed: int
  styles: tuple
  content_layer_weights: Optional[tuple] = None
  style_layer_weights: Optional[tuple] = None
  label: str = ''
  varied: tuple = ()

  @property
  def values(self) -> dict:
    """`varied` as a dict (the manifest's `values`)."""
    return dict(self.varied)


def short_value(value) -> str:
  """A sweep value as a grid label: 3 significant digits, a file's stem."""
  if isinstance(value, str):
    return os.path.splitext(os.path.basename(value))[0] or value
  if isinstance(value, float):
    return f'{value:.3g}'
  return str(value)


def _label(varied) -> str:
  return ', '.join(f'{field}={short_value(value)}' for field, value in varied)


def sweep_members(config, settings: Settings, overrides=None) -> list:
  """The runs of a sweep, as `Member`s (one member without a sweep).

  `config.sweep.FIELD` (FIELD in `SWEEP_FIELDS`) lists values. By default
  fields given together vary together and must have equal lengths; with
  `config.sweep.product=True` every combination runs, the first field (in
  `SWEEP_FIELDS` order) varying slowest: a grid of its values as rows and
  the others' combinations as columns. `sweep.style` lists style images
  separated by commas (one per member, all of one size).

  `overrides` (from Python, see `run.run`) replaces the sweep fields: one
  dict of member settings each, with any of the `Member` fields but
  `varied` (which the overrides themselves become).

  Returns:
    A list of `Member`.
  """
  if overrides is not None:
    return [_member_from_overrides(settings, o) for o in overrides]
  lists = sweep_lists(config)
  if settings.sweep_product:
    combinations = list(itertools.product(*lists.values()))
  else:
    lengths = {len(v) for v in lists.values()}
    if len(lengths) > 1:
      raise UserError('config.sweep: fields that vary together need equal '
                      'lengths (or set config.sweep.product=True), got '
                      + ', '.join(f'{f}={len(v)}' for f, v in lists.items()))
    combinations = list(zip(*lists.values())) or [()]
  members = []
  base = _base_member(settings)
  for combination in combinations:
    changes, varied = {}, []
    for field, value in zip(lists, combination):
      if field == 'style':
        changes['styles'] = (str(value),)
        value = str(value)
      elif field == 'seed':
        value = changes['seed'] = _number(
            {f'sweep.{field}': value}, f'sweep.{field}', integer=True)
      else:
        value = changes[field] = _number(
            {f'sweep.{field}': value}, f'sweep.{field}', minimum=0)
      varied.append((field, value))
    members.append(dataclasses.replace(base, **changes, varied=tuple(varied),
                                       label=_label(varied)))
  if len(members) > 1 and 'style' in lists:
    check_output(settings.output, list(lists['style']))
  return members


def sweep_lists(config) -> dict:
  """{field: values} of the sweep fields given, in `SWEEP_FIELDS` order."""
  sweep = config.get('sweep') or {}
  lists = {}
  for field in SWEEP_FIELDS:
    values = sweep.get(field) if hasattr(sweep, 'get') else None
    values = split(values) if isinstance(values, str) else tuple(
        values or ())
    if values:
      lists[field] = values
  return lists


def grid_columns(config, settings: Settings) -> Optional[int]:
  """Columns of a sweep's grid: with `sweep.product`, the combinations of
  all fields but the first (its values are the rows); else automatic."""
  lists = sweep_lists(config)
  if not settings.sweep_product or len(lists) < 2:
    return None
  return math.prod(len(values) for values in list(lists.values())[1:])


def _base_member(settings: Settings) -> Member:
  """A member with the config's own settings (what a sweep varies from)."""
  return Member(content_weight=settings.content_weight,
                style_weight=settings.style_weight,
                tv_weight=settings.tv_weight, seed=settings.seed,
                styles=settings.styles,
                style_layer_weights=settings.style_layer_weights,
                content_layer_weights=settings.content_layer_weights)


_MEMBER_KEYS = ('content_weight', 'style_weight', 'tv_weight', 'seed',
                'styles', 'content_layer_weights', 'style_layer_weights',
                'label')


def _member_from_overrides(settings: Settings, override: dict) -> Member:
  unknown = set(override) - set(_MEMBER_KEYS)
  if unknown:
    raise UserError(f'members: unknown keys {sorted(unknown)}; valid are '
                    + ', '.join(_MEMBER_KEYS))
  changes = {}
  for key, value in override.items():
    if key in ('content_layer_weights', 'style_layer_weights'):
      layers = (settings.spec.content_layers if key.startswith('content')
                else settings.spec.style_layers)
      if value is not None and len(value) != len(layers):
        raise UserError(f'members: {key} has {len(value)} weights for '
                        f'{len(layers)} layers')
      value = None if value is None else tuple(float(v) for v in value)
    elif key == 'styles':
      value = tuple(value)
    elif key == 'label':
      value = value or ''
    changes[key] = value
  varied = tuple((k, v) for k, v in changes.items() if k != 'label')
  changes['label'] = changes.get('label') or _label(varied)
  return dataclasses.replace(_base_member(settings), **changes,
                             varied=varied)
