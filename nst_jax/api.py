"""`stylize`: style transfer on images in memory, for notebooks and scripts.

Example::

  import nst_jax

  result = nst_jax.stylize('photo.jpg', 'painting.jpg', image_size=256,
                           iterations=200, init='content')
  result.image                    # (H, W, 3) uint8
  result.manifest['final']        # the loss terms at the end
  result.save('out/result.png')   # and out/result.json

`stylize` writes nothing, installs no signal handler and prints nothing
unless asked (`progress=`). The command line (`nst_jax.run.run`) reads the
files, calls the same code and writes the outputs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Optional, Union

from absl import logging
import jax
import ml_collections
import numpy as np

from nst_jax.core import color
from nst_jax.engine import config_files, devices as devices_lib
from nst_jax.io import images
from nst_jax.engine import inputs
from nst_jax.engine import loop, memory
from nst_jax.io import manifest as manifest_lib
from nst_jax.core import optim
from nst_jax.engine import programs as programs_lib, settings as settings_lib
from nst_jax.errors import UserError


@dataclasses.dataclass
class Result:
  """What `stylize` made.

  Attributes:
    images: the final image of each member (one without a sweep), uint8
      (H, W, 3).
    manifest: the dict the command line writes as JSON, without output
      paths (`save` adds them).
    labels: each member's grid label (a sweep's).
    grid_columns: the sweep grid's columns (None: automatic).
  """
  images: list
  manifest: dict
  labels: list = dataclasses.field(default_factory=list)
  grid_columns: Optional[int] = None

  @property
  def image(self) -> np.ndarray:
    """The image of a run without a sweep; a sweep's labelled grid."""
    return self.images[0] if len(self.images) == 1 else self.grid

  @property
  def grid(self) -> np.ndarray:
    """All members' images in one labelled grid (uint8)."""
    return images.to_uint8(images.make_grid(
        self.images, labels=self.labels if len(self.images) > 1 else None,
        columns=self.grid_columns))

  @property
  def partial(self) -> bool:
    """Whether the run was interrupted before it finished."""
    return bool(self.manifest.get('partial'))

  def save(self, path) -> dict:
    """Writes the image(s) and the manifest, each atomically, as the command
    line does: `path` and its `.json`; a sweep writes `<stem>_<k>` per
    member and `<stem>_grid`. Across hosts only process 0 writes.

    Returns:
      The manifest with the output paths.
    Raises:
      UserError: a path that cannot be written.
    """
    path = os.fspath(path)
    settings_lib.check_output(path, [])
    manifest = manifest_lib.with_outputs(self.manifest, path)
    if devices_lib.writes_outputs():
      count = len(self.images)
      for k, image in enumerate(self.images):
        images.save_image(manifest_lib.member_output(path, k, count), image)
      if count > 1:
        images.save_image(manifest['grid'], self.grid)
      manifest_lib.write_json(settings_lib.manifest_path(path), manifest)
    return manifest


def make_config(config=None, fields=None) -> ml_collections.ConfigDict:
  """The default config (or `config`), with `fields` set by name.

  Raises:
    UserError: an unknown field or a value of the wrong type.
  """
  config = (config_files.load('default') if config is None
            else ml_collections.ConfigDict(manifest_lib.config_dict(config)))
  for name, value in (fields or {}).items():
    _set_field(config, name, value, 'config.')
  return config


def _set_field(config, name, value, where):
  if name not in config:
    raise UserError(f'{where}{name}: no such field (see configs/default.py)')
  if isinstance(config[name], ml_collections.ConfigDict):
    if not isinstance(value, dict):
      raise UserError(f'{where}{name}: expected a dict of its fields, got '
                      f'{value!r}')
    for key, item in value.items():
      _set_field(config[name], key, item, f'{where}{name}.')
    return
  try:
    config[name] = value
  except (TypeError, ValueError) as error:
    raise UserError(f'{where}{name}: {str(error).splitlines()[0]}') from None


def stylize(content, style, *, config=None,
            progress: Union[bool, Callable] = False,
            programs: Optional[programs_lib.Programs] = None,
            **fields) -> Result:
  """Transfers the style of `style` onto `content` (Gatys et al.).

  Args:
    content: a path, a PIL image, or an H x W x 3 array (uint8 0-255 or
      float 0-1).
    style: the same, or a list of them (blended by the `style_blend_weights`
      field).
    config: a whole config (`ml_collections.ConfigDict` or dict with the
      fields of configs/default.py); default: configs/default.py.
    progress: False (silent), True (a progress bar on stderr and log
      lines), or a callback `callback(step, terms, image)` called every
      `log_every` steps, with the loss terms (floats) and the current uint8
      image; in a sweep, lists with one entry per member.
    programs: where compiled programs are kept (default: the process's, so
      a second call at the same sizes compiles nothing).
    **fields: any field of configs/default.py by name, overriding `config`
      (`image_size=256`, `style_weight=1e-2`, `weights='random'`,
      `sweep={'style_weight': (1e-4, 1e-3)}`); `content_masks` and
      `style_masks` also take lists of images (paths, PIL images, arrays).
  Returns:
    `Result`.
  Raises:
    UserError: an unknown field, a bad value or an unreadable image, with
      the one-line message the command line prints.

  Example::

    result = nst_jax.stylize(photo_array, 'starry_night.jpg',
                             image_size=256, weights='random',
                             progress=lambda step, terms, image: None)
  """
  for name in ('content', 'style', 'output'):
    if name in fields:
      raise UserError(f'{name}: pass images as the arguments of stylize, '
                      'and output paths to Result.save')
  # Masks may be images in memory: the config names them, execute reads
  # these.
  mask_sources = [_image_list(fields.pop(name, None) or ())
                  for name in ('content_masks', 'style_masks')]
  config = make_config(config, fields)
  for name, sources in zip(('content_masks', 'style_masks'), mask_sources):
    if sources:
      config[name] = ','.join(inputs.describe(m).replace(',', ';')
                              for m in sources)
  style_list = list(style) if isinstance(style, (list, tuple)) else [style]
  if not style_list:
    raise UserError('style: give at least one style image')
  # Paths name themselves; images in memory get 'style_<k>'.
  style_sources = {}
  for k, source in enumerate(style_list):
    key = (os.fspath(source) if isinstance(source, (str, os.PathLike))
           else f'style_{k}')
    style_sources[key] = source
  config.content = inputs.describe(content)
  config.style = ','.join(style_sources)
  config.output = ''
  settings = settings_lib.check(config, from_files=False)
  settings = dataclasses.replace(settings, styles=tuple(style_sources))
  members = settings_lib.sweep_members(config, settings)
  if progress is True:
    reporter = loop.TerminalProgress()
  elif callable(progress):
    reporter = loop.CallbackProgress(progress, len(members))
  else:
    reporter = loop.Reporter()
  return execute(config, settings, members, content, style_sources,
                 reporter, programs=programs, log=logging.warning
                 if progress else lambda message: None,
                 mask_sources=mask_sources if any(mask_sources) else None)


def _image_list(value) -> list:
  """A field given as images: 'a.png,b.png', or a list of paths, PIL
  images or arrays."""
  if isinstance(value, (str, os.PathLike)):
    return list(settings_lib.split(os.fspath(value)))
  return list(value)


def resolve_conv_algorithm(conv_algorithm: str, platform: str, dtype: str,
                           shard_rows: bool = False) -> str:
  """'auto' -> 'winograd' on CPU in float32, else 'direct'.

  On CPU Winograd's algorithm does 2.25-4x fewer multiply-adds per layer
  and evaluations take markedly less time (`scripts/benchmark.py`). GPU
  libraries (cuDNN) pick Winograd kernels themselves and TPUs run
  convolutions on their matrix units, where the transforms would only add
  memory traffic; in bfloat16 the transforms lose too much precision; with
  rows split over devices the direct convolution's halo exchange is
  simpler.
  """
  if conv_algorithm != 'auto':
    return conv_algorithm
  if platform == 'cpu' and dtype == 'float32' and not shard_rows:
    return 'winograd'
  return 'direct'


def execute(config, settings, members, content_source, style_sources: dict,
            reporter: loop.Reporter, *, should_stop=lambda: False,
            on_snapshot=None, programs=None, log=logging.warning,
            mask_sources=None) -> Result:
  """Runs checked settings: what `stylize` and `run` share.

  Args:
    config: the config (recorded in the manifest).
    settings: `settings.check(config)`.
    members: `settings.sweep_members(...)`.
    content_source: the content (see `inputs.read_image`).
    style_sources: {style key: source}; sweep styles named by path only are
      added here.
    reporter: `loop.Reporter` for progress.
    should_stop: polled between chunks; True ends the run (partial).
    on_snapshot: `on_snapshot(member, step, pixels)` every `save_every`
      steps, or None.
    programs: `programs.Programs`, default the process's.
    log: where warnings go.
    mask_sources: (content masks, style masks) as images in memory, for
      `stylize`; default the settings' paths.
  Returns:
    `Result`.
  """
  started, started_unix = time.perf_counter(), time.time()
  style_sources = dict(style_sources)
  for member in members:
    for key in member.styles:
      style_sources.setdefault(key, key)
  if settings.distributed:
    devices_lib.initialize_distributed()
  cache_folder, program_cache = programs_lib.open_cache(
      settings.compilation_cache)
  programs = programs or programs_lib.shared(program_cache)
  cache_counts = _cache_counts(programs)
  sizes = loop.level_sizes(settings.image_size, settings.coarse_to_fine)
  level_inputs = [inputs.read_level(settings, content_source, style_sources,
                                    size, mask_sources) for size in sizes]
  content, style_images = level_inputs[-1].content, level_inputs[-1].styles
  height, width = content.shape[:2]
  devices = devices_lib.member_devices(len(members), settings.shard_rows)
  conv_algorithm = resolve_conv_algorithm(
      settings.conv_algorithm, devices[0].platform, settings.spec.dtype,
      settings.shard_rows)

  mode = settings.sweep_mode
  if mode == 'auto':
    mode = optim.default_sweep_mode(settings.optimizer, devices[0].platform)
  per_device = 1 if settings.shard_rows else -(-len(members) // len(devices))
  # Row strips (row_strips=0: only if needed) and L-BFGS's pairs, chosen
  # so the run fits; everything below runs with them.
  fit = memory.fit(settings, height, width,
                   shards=len(devices) if settings.shard_rows else 1,
                   use_winograd=conv_algorithm == 'winograd',
                   members=per_device,
                   batched=mode == 'vmap' and per_device > 1)
  settings = dataclasses.replace(
      settings, lbfgs_memory=fit.lbfgs_memory,
      spec=dataclasses.replace(settings.spec, row_strips=fit.row_strips,
                               strip_split=fit.strip_split))

  warnings = list(settings.warnings) + list(fit.warnings)
  if settings.shard_rows and height % len(devices):
    warnings.append(
        f'shard_rows: {height} rows do not divide evenly over {len(devices)} '
        'devices, so the image is not split (each device holds all of it); '
        f'use an image height that is a multiple of {len(devices)}')
  for warning in warnings:
    log(warning)
  params, meta, weights_path, weight_warnings = inputs.load_weights(
      settings, bool(config.get('allow_random_weights', False)), log)
  warnings += weight_warnings
  spec = dataclasses.replace(settings.spec,
                             preprocessing=meta['preprocessing'],
                             conv_algorithm=conv_algorithm)
  network_sizes = {image.shape[:2] for level in level_inputs
                   for image in [level.content, *level.styles.values()]}
  variables = programs.prepare_variables(
      params, tuple(sorted(network_sizes)) if conv_algorithm == 'winograd'
      else (), spec.layers)

  first = level_inputs[0]
  starts = [inputs.initial_pixels(settings, member.seed, first.content,
                                  [first.styles[k] for k in member.styles])
            for member in members]
  finish = _colour_finish(settings, level_inputs)
  levels = loop.optimize(
      loop.Run(settings=settings, spec=spec, members=tuple(members),
               mode=mode, devices=tuple(devices), programs=programs,
               reporter=reporter, should_stop=should_stop,
               on_snapshot=on_snapshot and (
                   lambda k, step, pixels: on_snapshot(k, step,
                                                       finish(pixels))),
               finish=finish),
      variables, level_inputs, starts)

  manifest = _manifest(config, settings, members, levels)
  manifest.update({
      'inputs': {'content': inputs.describe(content_source),
                 'styles': list(style_sources)},
      'weights': inputs.weights_manifest(meta, weights_path),
      'warnings': warnings,
      'device': dict(devices_lib.device_info(), used=len(devices),
                     sweep_mode=mode, shard_rows=settings.shard_rows,
                     conv_algorithm=conv_algorithm, **_fit_manifest(
                         fit, settings.optimizer)),
      'versions': manifest_lib.versions(),
      'image_size': {'content': [width, height],
                     'styles': {key: list(pixels.shape[1::-1])
                                for key, pixels in style_images.items()},
                     'levels': sizes},
      'compilation_cache': cache_folder or None,
  })
  optimize_s = sum(level.optimize_s for level in levels)
  loop_evaluations = sum(level.loop_evaluations for level in levels)
  manifest['timing'] = {
      'compile_s': sum(level.compile_s for level in levels),
      'per_evaluation_ms': (1000 * optimize_s / loop_evaluations
                            if loop_evaluations else None),
      'optimize_s': optimize_s,
      'total_s': time.perf_counter() - started,
      # From the call to the first optimisation step (reading inputs and
      # weights, targets, compiling, the initial evaluation).
      'start_to_loop_s': levels[0].loop_start_unix - started_unix,
      'loop_start_unix': levels[0].loop_start_unix}
  loaded, traced = _cache_counts(programs)
  manifest['programs'] = {
      'cache': programs.program_cache.folder if programs.program_cache
               else None,
      'loaded': loaded - cache_counts[0],
      'traced': (traced - cache_counts[1]) if programs.program_cache
                else None}
  return Result(images=[images.to_uint8(finish(p))
                        for p in levels[-1].pixels],
                manifest=manifest, labels=[m.label for m in members],
                grid_columns=settings_lib.grid_columns(config, settings))


def _fit_manifest(fit: memory.Fit, optimizer: str) -> dict:
  """What `memory.fit` chose, for the manifest's 'device'."""
  entry = {'row_strips': fit.row_strips,
           'strip_split': fit.strip_split if fit.row_strips > 1 else None,
           'memory_estimate_gib': round(fit.needed / 2**30, 3),
           'memory_limit_gib': round(fit.limit / 2**30, 3)}
  if optimizer in ('lbfgs', 'lbfgs_nols'):
    entry['lbfgs_memory_used'] = fit.lbfgs_memory
  return entry


def _colour_finish(settings, level_inputs):
  """What turns an optimised image into the one shown and written: with
  `luminance` and `original_colors`, its luminance with the content's
  colours (`color.restore_chroma`) at the image's own size."""
  if settings.color_control not in ('luminance', 'original_colors'):
    return lambda pixels: pixels
  contents = {level.content.shape[:2]: level.colour_content
              for level in level_inputs}
  return lambda pixels: color.restore_chroma(
      np.asarray(pixels, np.float32), contents[pixels.shape[:2]])


def _cache_counts(programs) -> tuple:
  cache = programs.program_cache
  return (cache.loaded, cache.traced) if cache else (0, 0)


def _manifest(config, settings, members, levels) -> dict:
  """The manifest's config, per-member results and stop reasons."""
  last = levels[-1]
  count = len(members)
  steps = last.step_offset + last.steps
  evaluations = np.sum([level.evaluations for level in levels], axis=0)
  reasons = ['interrupted' if last.interrupted
             else optim.STOP_REASONS[r] for r in last.stop_reasons]
  runs = []
  for k, member in enumerate(members):
    entry = {'values': member.values, 'label': member.label,
             'stop_reason': reasons[k], 'iterations_done': int(steps[k]),
             'initial': levels[0].initial[k], 'final': last.finals[k],
             'history': sum((level.histories[k] for level in levels), []),
             'evaluations': int(evaluations[k]),
             'styles': list(member.styles),
             'content_weight': member.content_weight,
             'style_weight': member.style_weight,
             'tv_weight': member.tv_weight, 'seed': member.seed,
             'content_layer_weights': member.content_layer_weights,
             'style_layer_weights': member.style_layer_weights}
    if reasons[k] == 'non_finite':
      entry['non_finite_at_iteration'] = int(steps[k])
    runs.append(entry)
  manifest = {'config': manifest_lib.config_dict(config),
              'partial': last.interrupted,
              'learning_rate': settings.learning_rate}
  if count == 1:
    manifest.update({key: runs[0][key] for key in (
        'stop_reason', 'iterations_done', 'initial', 'final', 'history',
        'evaluations')})
    if 'non_finite_at_iteration' in runs[0]:
      manifest['non_finite_at_iteration'] = runs[0]['non_finite_at_iteration']
  else:
    manifest.update({'runs': runs,
                     'stop_reason': manifest_lib.overall_reason(reasons),
                     'evaluations': int(evaluations.sum())})
  return manifest
