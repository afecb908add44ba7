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
files, calls the same engine (`nst_jax.engine.still.execute`) and writes
the outputs; `nst_jax.stylize_video` is its twin for clips.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Union

from absl import logging

from nst_jax.engine import config_files, inputs, loop, programs as programs_lib
from nst_jax.engine import results, settings as settings_lib, still, sweeps
from nst_jax.errors import UserError

Result = results.Result


def stylize(content, style, *, config=None,
            progress: Union[bool, Callable] = False,
            programs: Optional[programs_lib.Programs] = None,
            should_stop: Callable[[], bool] = lambda: False,
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
    should_stop: polled between compiled chunks (every `log_every` steps);
      True ends the run there, and the result holds the images reached so
      far (`Result.partial`).
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
  for name in ('checkpoint_every', 'resume'):
    if name in fields:
      raise UserError(f'{name}: stylize writes no files, so no checkpoints; '
                      'runs from the command line (nst_jax.run.run) and '
                      'stylize_video checkpoint and resume')
  # Masks may be images in memory: the config names them, execute reads
  # these.
  mask_sources = [_image_list(fields.pop(name, None) or ())
                  for name in ('content_masks', 'style_masks')]
  config = config_files.make_config(config, fields)
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
  members = sweeps.sweep_members(settings)
  if progress is True:
    reporter = loop.TerminalProgress()
  elif callable(progress):
    reporter = loop.CallbackProgress(progress, len(members))
  else:
    reporter = loop.Reporter()
  return still.execute(
      config, settings, members, content, style_sources, reporter,
      programs=programs, should_stop=should_stop,
      log=logging.warning if progress else lambda message: None,
      mask_sources=mask_sources if any(mask_sources) else None)


def _image_list(value) -> list:
  """A field given as images: 'a.png,b.png', or a list of paths, PIL
  images or arrays."""
  if isinstance(value, (str, os.PathLike)):
    return list(settings_lib.split(os.fspath(value)))
  return list(value)
