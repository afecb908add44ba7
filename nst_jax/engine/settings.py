"""Checks a run's config once, in one place, and turns it into `Settings`.

Every problem raises `UserError` naming the field (`config.style_weight:
must be >= 0, got -1.0`), before any image is read or anything is written.
The image loader (`nst_jax.io.images`) checks the files themselves.

`check` reads every field it needs from the config, and a config without
one is refused by name: the defaults live in configs/default.py alone,
whose config (`config_files.load('default')`, `config_files.make_config`)
every shipped config and config file starts from. The sweep's values are
checked here too (`Settings.sweep`); `nst_jax.engine.sweeps` turns them
into the run's members.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional, Sequence

import numpy as np

from nst_jax.core import color, descent, losses, optimizers, strips, vgg
from nst_jax.engine import sweeps
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
VIDEO_WARPS = ('bicubic', 'bilinear')
VIDEO_FILLS = ('noise', 'warped', 'content')
RESUME_MODES = ('auto', 'never')


def is_video(path: str) -> bool:
  """Whether a content path is a video: a folder of frames, or a file with
  a video suffix (an animated GIF included)."""
  return bool(path) and (os.path.isdir(path) or os.path.splitext(
      path)[1].lower() in VIDEO_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  """The checked `video.*` fields (see configs/default.py)."""
  temporal_weight: float
  temporal_blur: float
  flow: str
  init: str
  long_term: tuple
  first_iterations: int
  warp: str
  fill: str
  mode: str
  window: int
  fps: float


@dataclasses.dataclass(frozen=True)
class Settings:
  """A checked config: paths, the loss spec and the numeric settings.

  Made by `check` alone, so no field has a default here: each takes the
  config's field of the same name (configs/default.py documents them and
  holds their defaults), checked and converted.
  """
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
  # Checkpoints (nst_jax.engine.resume): every this many steps (0: only
  # when interrupted), and 'auto' (continue a matching one) or 'never'.
  checkpoint_every: int
  resume: str
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
  # The sweep: ((field, values), ...) for the `sweeps.SWEEP_FIELDS` given,
  # in that order, each value checked (numbers, or a style image's path);
  # () without a sweep. `sweeps.sweep_members` makes the members.
  sweep: tuple
  sweep_product: bool
  # Levels of L-BFGS's pyramid preconditioner (lbfgs.pyramid_preconditioner);
  # 1 = none, torch.optim.LBFGS's algorithm.
  lbfgs_pyramid: int
  # lbfgs's first line-search trial, in pixel values (optimizers.Optimizer's
  # first_step); 0 = torch's.
  lbfgs_first_step: float
  # Colour control (nst_jax.core.color): 'none', 'luminance', 'histogram' or
  # 'original_colors'; luminance matching; the histogram transform.
  color_control: str
  match_luminance: bool
  color_transform: str
  # Regions: one content mask per style (paths), optional style masks, and
  # one weight per region (summing to 1; equal by default).
  content_masks: tuple
  style_masks: tuple
  region_weights: tuple
  sliced_redraw: bool
  # weights='auto' without converted weights: random ones (loudly).
  allow_random_weights: bool
  # A video run (the content is a video or a folder of frames), or None.
  video: Optional[VideoSettings]
  # What the config asks that has no effect (e.g. init_image without
  # init='image'): logged and kept in the manifest.
  warnings: tuple


def split(value) -> tuple:
  """'a,b' or ('a', 'b') -> ('a', 'b'); '' -> ()."""
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(part.strip() for part in value.split(',') if part.strip())
  return tuple(value)


def _value(config, field):
  """`config.<field>`; a dotted field ('video.window') is a sub-config's.

  Raises:
    UserError: the config lacks the field (configs/default.py has each).
  """
  value = config
  names = field.split('.')
  for k, name in enumerate(names):
    if not (hasattr(value, 'keys') and hasattr(value, '__getitem__')):
      where = '.'.join(['config'] + names[:k])
      raise UserError(f'{where}: expected a dict of fields (see '
                      f'configs/default.py), got {value!r}')
    if name not in value:
      raise UserError(f'config.{field}: missing; a config needs every field '
                      'of configs/default.py')
    value = value[name]
  return value


def _floats(config, field) -> tuple:
  value = _value(config, field)
  try:
    return tuple(float(v) for v in split(value))
  except (TypeError, ValueError):
    raise UserError(f'config.{field}: expected numbers separated by commas, '
                    f'got {value!r}') from None


def _checked_number(value, field, minimum=None, positive=False,
                    integer=False):
  """`value` as the number `config.<field>` must be (never nan)."""
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


def _number(config, field, **kwargs):
  """`config.<field>`, checked by `_checked_number`."""
  return _checked_number(_value(config, field), field, **kwargs)


def _finite(config, field, **kwargs):
  """`_number`, refusing infinity too."""
  number = _number(config, field, **kwargs)
  if math.isinf(number):
    raise UserError(f'config.{field}: must be finite, got {number!r}')
  return number


def _flag(config, field) -> bool:
  """A boolean field; refuses strings like 'yes' that bool() would accept."""
  value = _value(config, field)
  if isinstance(value, (bool, np.bool_, int)) and value in (0, 1):
    return bool(value)
  raise UserError(f'config.{field}: must be True or False, got {value!r}')


def _choice(config, field, valid: Sequence[str]) -> str:
  value = _value(config, field)
  if value not in valid:
    raise UserError(f'config.{field}: unknown {value!r}; valid are '
                    + ', '.join(valid))
  return value


def _layers(config, field) -> tuple:
  names = split(_value(config, field))
  try:
    return tuple(vgg.canonical_layer(name) for name in names)
  except ValueError as error:
    raise UserError(f'config.{field}: {error}') from None


def _layer_weights(config, field, layers_field, layers):
  weights = _floats(config, field)
  if not weights:
    return None
  if len(weights) != len(layers):
    raise UserError(f'config.{field}: {len(weights)} weights for '
                    f'{len(layers)} layers in config.{layers_field}')
  if any(w < 0 or math.isinf(w) for w in weights):
    raise UserError(f'config.{field}: weights must be finite and >= 0, got '
                    f'{_value(config, field)!r}')
  return weights


def _regions(config, styles, style_loss, sweep_lists):
  """(content_masks, style_masks, region_weights), checked against the
  styles: one content mask per style, style masks none or one per style,
  region weights none or one per region (normalised to sum 1)."""
  content_masks = split(_value(config, 'content_masks'))
  style_masks = split(_value(config, 'style_masks'))
  weights = _floats(config, 'region_weights')
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
                    f'positive sum, got {_value(config, "region_weights")!r}')
  if style_loss == 'sliced_wasserstein':
    raise UserError("config.content_masks: not with style_loss="
                    "'sliced_wasserstein' (sorted projections have no "
                    'per-position weights); use gram, mean_std or mean_cov')
  if 'style' in sweep_lists:
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
  Returns:
    `Settings`.
  Raises:
    UserError: naming the first bad field, or one the config lacks (a
      config needs every field of configs/default.py).
  """
  required = ('content', 'style', 'output') if from_files else ()
  missing = [f for f in required if not _value(config, f)]
  if missing:
    raise UserError(f'config.{missing[0]}: required (e.g. '
                    f'--config.{missing[0]}=path)')
  content = str(_value(config, 'content'))
  styles = split(_value(config, 'style'))
  blend = _floats(config, 'style_blend_weights')
  if blend and styles and len(blend) != len(styles):
    raise UserError(f'config.style_blend_weights: {len(blend)} weights for '
                    f'{len(styles)} style images')
  if blend and (any(w < 0 for w in blend) or sum(blend) <= 0):
    raise UserError('config.style_blend_weights: must be >= 0 with a '
                    f'positive sum, got '
                    f'{_value(config, "style_blend_weights")!r}')

  content_layers = _layers(config, 'content_layers')
  style_layers = _layers(config, 'style_layers')
  if not content_layers and not style_layers:
    raise UserError('config.style_layers: no content or style layers given')
  normalization = _choice(config, 'loss_normalization', losses.NORMALIZATIONS)
  pooling = _choice(config, 'pooling', vgg.POOLINGS)
  dtype = _choice(config, 'dtype', DTYPES)
  conv_algorithm = _choice(config, 'conv_algorithm',
                           ('auto',) + vgg.CONV_ALGORITHMS)
  optimizer = _choice(config, 'optimizer', optimizers.OPTIMIZERS)
  init = _choice(config, 'init', INITS)
  init_image = _value(config, 'init_image')
  if init == 'image' and not init_image:
    raise UserError("config.init_image: required when config.init='image'")
  warnings = []
  if init_image and init != 'image':
    warnings.append(f'config.init_image is ignored: config.init is '
                    f"{init!r} (set config.init='image' to start from it)")

  output = str(_value(config, 'output'))
  style_loss = _choice(config, 'style_loss', losses.STYLE_LOSSES)
  padding = _choice(config, 'padding', vgg.PADDINGS)
  color_control = _choice(config, 'color_control', color.COLOR_CONTROLS)
  color_transform = _choice(config, 'color_transform', color.COLOR_TRANSFORMS)
  sweep_lists = _sweep_lists(config)
  content_masks, style_masks, region_weights = _regions(
      config, styles, style_loss, sweep_lists)
  row_strips = _number(config, 'row_strips', integer=True, minimum=0)
  sliced_redraw = _flag(config, 'sliced_redraw')
  if sliced_redraw and style_loss != 'sliced_wasserstein':
    raise UserError("config.sliced_redraw: only with "
                    "config.style_loss='sliced_wasserstein'")
  if sliced_redraw and optimizer not in ('adam', 'sgd'):
    raise UserError('config.sliced_redraw: needs optimizer adam or sgd (a '
                    'line search and L-BFGS\'s curvature pairs need the same '
                    'objective at every step)')

  sweep_mode = _choice(config, 'sweep.mode', ('auto',) + descent.SWEEP_MODES)
  sweep_product = _flag(config, 'sweep.product')
  shard_rows = _flag(config, 'shard_rows')
  if row_strips > 1 and shard_rows:
    raise UserError('config.row_strips: not with shard_rows (rows are split '
                    'over the devices instead); use one or the other')
  stop_loss = _number(config, 'stop_loss')
  learning_rate = _number(config, 'learning_rate', minimum=0)
  cannot_strip = strips.unsupported(
      losses.LossSpec(style_loss=style_loss, regions=len(content_masks)))
  if row_strips > 1 and cannot_strip:
    raise UserError(f'config.row_strips: {cannot_strip}; set row_strips=0 '
                    'or 1')
  coarse_to_fine = _number(config, 'coarse_to_fine', integer=True, minimum=0)
  video = None
  if from_files and is_video(content):
    video = _video(config, sweep_lists, coarse_to_fine, shard_rows)
  sweep = _sweep(sweep_lists, sweep_product)
  settings = Settings(
      content=content, styles=styles,
      style_blend_weights=blend or (1.0,) * len(styles),
      output=output, manifest=manifest_path(output) if output else '',
      weights=str(_value(config, 'weights')),
      image_size=_number(config, 'image_size', integer=True, positive=True),
      style_scale=_number(config, 'style_scale', positive=True),
      spec=losses.LossSpec(content_layers=content_layers,
                           style_layers=style_layers,
                           normalization=normalization, pooling=pooling,
                           dtype=dtype, padding=padding, style_loss=style_loss,
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
      learning_rate=(learning_rate
                     or optimizers.DEFAULT_LEARNING_RATES[optimizer]),
      iterations=_number(config, 'iterations', integer=True, minimum=0),
      stop_loss=stop_loss,
      tolerance=_number(config, 'tolerance', minimum=0),
      init=init, init_image=str(init_image),
      seed=_number(config, 'seed', integer=True),
      save_every=_number(config, 'save_every', integer=True, minimum=0),
      log_every=_number(config, 'log_every', integer=True, positive=True),
      checkpoint_every=_number(config, 'checkpoint_every', integer=True,
                               minimum=0),
      resume=_choice(config, 'resume', RESUME_MODES),
      compilation_cache=str(_value(config, 'compilation_cache')),
      max_memory_gb=_number(config, 'max_memory_gb', minimum=0),
      sweep_mode=sweep_mode,
      coarse_to_fine=coarse_to_fine,
      coarse_iterations=_number(config, 'coarse_iterations', integer=True,
                                minimum=0),
      shard_rows=shard_rows,
      lbfgs_memory=_number(config, 'lbfgs_memory', integer=True,
                           positive=True),
      lbfgs_pyramid=_number(config, 'lbfgs_pyramid', integer=True,
                            positive=True),
      lbfgs_first_step=_finite(config, 'lbfgs_first_step', minimum=0),
      distributed=_flag(config, 'distributed'),
      sweep=sweep, sweep_product=sweep_product, color_control=color_control,
      match_luminance=_flag(config, 'match_luminance'),
      color_transform=color_transform, content_masks=content_masks,
      style_masks=style_masks, region_weights=region_weights,
      sliced_redraw=sliced_redraw,
      allow_random_weights=_flag(config, 'allow_random_weights'),
      video=video, warnings=tuple(warnings))
  # The file system last: a refused config leaves no folder behind.
  if from_files:
    check_output(output, list(styles) + [content, init_image]
                 + list(content_masks) + list(style_masks),
                 video=video is not None)
  if 'style' in sweep_lists and _member_count(sweep, sweep_product) > 1:
    check_output(output, list(sweep_lists['style']))
  return settings


def _video(config, sweep_lists, coarse_to_fine, shard_rows) -> VideoSettings:
  """`config.video`, checked; and what a video run cannot combine."""
  long_term = _value(config, 'video.long_term')
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
      temporal_weight=_number(config, 'video.temporal_weight', minimum=0),
      temporal_blur=_number(config, 'video.temporal_blur', minimum=0),
      flow=_choice(config, 'video.flow', VIDEO_FLOWS),
      init=_choice(config, 'video.init', VIDEO_INITS),
      long_term=offsets,
      first_iterations=_number(config, 'video.first_iterations',
                               integer=True, minimum=0),
      warp=_choice(config, 'video.warp', VIDEO_WARPS),
      fill=_choice(config, 'video.fill', VIDEO_FILLS),
      mode=_choice(config, 'video.mode', VIDEO_MODES),
      window=_number(config, 'video.window', integer=True, minimum=2),
      fps=_number(config, 'video.fps', minimum=0))
  if sweep_lists:
    raise UserError('config.sweep: a video run stylises one setting; sweep '
                    'on a still frame first')
  if coarse_to_fine:
    raise UserError('config.coarse_to_fine: not with a video content (each '
                    'frame starts from the previous one)')
  if shard_rows:
    raise UserError('config.shard_rows: not with a video content; '
                    "video.mode='joint' splits a window's frames over the "
                    'devices')
  if _value(config, 'save_every'):
    raise UserError('config.save_every: not with a video content (each '
                    'frame is written as it finishes); set save_every=0')
  if settings.mode == 'joint' and offsets != (1,):
    raise UserError("config.video.long_term: video.mode='joint' couples "
                    'neighbouring frames only; use long_term=(1,)')
  return settings


def _sweep_lists(config) -> dict:
  """{field: values} of the sweep fields given, in `sweeps.SWEEP_FIELDS`
  order, as the config gives them (a string: values separated by commas)."""
  lists = {}
  for field in sweeps.SWEEP_FIELDS:
    values = _value(config, f'sweep.{field}')
    if isinstance(values, str):
      values = split(values)
    try:
      values = tuple(values or ())
    except TypeError:
      raise UserError(f'config.sweep.{field}: expected a list of values, '
                      f'got {values!r}') from None
    if values:
      lists[field] = values
  return lists


def _sweep(lists: dict, product: bool) -> tuple:
  """`Settings.sweep`: the values of `lists` checked, style images as paths.

  Fields that vary together (without `product`) need equal lengths.
  """
  if not product and len({len(v) for v in lists.values()}) > 1:
    raise UserError('config.sweep: fields that vary together need equal '
                    'lengths (or set config.sweep.product=True), got '
                    + ', '.join(f'{f}={len(v)}' for f, v in lists.items()))
  checked = []
  for field, values in lists.items():
    if field == 'style':
      values = tuple(str(value) for value in values)
    elif field == 'seed':
      values = tuple(_checked_number(value, f'sweep.{field}', integer=True)
                     for value in values)
    else:
      values = tuple(_checked_number(value, f'sweep.{field}', minimum=0)
                     for value in values)
    checked.append((field, values))
  return tuple(checked)


def _member_count(sweep: tuple, product: bool) -> int:
  """The members a checked sweep makes (1 without a sweep)."""
  lengths = [len(values) for _, values in sweep]
  if product:
    return math.prod(lengths)
  return lengths[0] if lengths else 1
