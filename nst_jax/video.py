"""`stylize_video`: stylised video that does not flicker, from Python.

Example::

  import nst_jax

  result = nst_jax.stylize_video('clip.mp4', 'painting.jpg', 'out/clip.mp4',
                                 image_size=256)
  result.frames                          # out/clip/frame_00001.png, ...
  result.video                           # out/clip.mp4
  result.manifest['flicker']['output_mean']

A clip does not fit in memory, so the frames are written as they finish,
to the folder named after the output (out/clip/), with the manifest
(out/clip.json); the engine is `nst_jax.engine.clip`. Calling it again with
the same arguments continues an unfinished clip: from its first unfinished
frame, inside that frame from its checkpoint (out/clip.ckpt/) when there
is one (`resume='never'` starts over).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Union

from absl import logging

from nst_jax.engine import clip, config_files, programs as programs_lib
from nst_jax.engine import results, settings as settings_lib
from nst_jax.errors import UserError

VideoResult = results.VideoResult


def stylize_video(content, style, output, *, config=None,
                  progress: Union[bool, Callable] = False,
                  programs: Optional[programs_lib.Programs] = None,
                  should_stop: Callable[[], bool] = lambda: False,
                  **fields) -> VideoResult:
  """Stylises a video file or folder of frames into `output`.

  Args:
    content: the video (.mp4, .mov, .mkv, .webm, .avi, .gif) or a folder of
      frames.
    style: a path, a PIL image or an H x W x 3 array, or a list of them
      (blended by the `style_blend_weights` field), as `stylize` takes.
    output: out/clip.mp4 (or .gif); the frames go to out/clip/ and the
      manifest to out/clip.json.
    config: a whole config (default configs/default.py).
    progress: False (silent), True (a bar over frames on stderr), or a
      callback `callback(frame, terms, image)` called as each frame is
      written, with its 1-based number, its final loss terms (floats) and
      the uint8 image.
    programs: `programs.Programs` (default: the process's).
    should_stop: polled between compiled chunks; True ends the clip there
      with a partial result (the finished frames kept; calling again with
      the same arguments continues it).
    **fields: config fields by name, e.g. `image_size=256`,
      `video={'temporal_weight': 1.0, 'mode': 'joint'}`.
  Returns:
    `VideoResult` (`frames`, `video`, `manifest`, `partial`, `save`).
  Raises:
    UserError: bad input, one line; nothing is written.

  Example::

    result = stylize_video('clip.mp4', 'painting.jpg', 'out/clip.mp4',
                           image_size=256, weights='random',
                           allow_random_weights=True)
    result.manifest['flicker']['output_mean']
  """
  for name in ('content', 'style', 'output'):
    if name in fields:
      raise UserError(f'{name}: pass it as an argument of stylize_video')
  config = config_files.make_config(config, fields)
  config.content = os.fspath(content)
  config.output = os.fspath(output)
  style_list = list(style) if isinstance(style, (list, tuple)) else [style]
  if not style_list:
    raise UserError('style: give at least one style image')
  if len(style_list) == 1 and isinstance(style_list[0], str):
    style_list = list(settings_lib.split(style_list[0]))
  if all(isinstance(s, (str, os.PathLike)) for s in style_list):
    config.style = ','.join(os.fspath(s) for s in style_list)
    style_sources = None
  else:
    # Images in memory get 'style_<k>' (the manifest names them so).
    style_sources = {
        (os.fspath(s) if isinstance(s, (str, os.PathLike))
         else f'style_{k}'): s for k, s in enumerate(style_list)}
    config.style = ','.join(style_sources)
  settings = settings_lib.check(config)
  if settings.video is None:
    raise UserError(f'content: {config.content!r} is not a video or a '
                    'folder of frames')
  return clip.run_video(
      config, settings, programs=programs, should_stop=should_stop,
      log=logging.warning if progress else lambda message: None,
      progress_stream=sys.stderr if progress is True else None,
      on_frame=progress if callable(progress) else None,
      style_sources=style_sources)
