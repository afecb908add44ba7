"""One style-transfer run from a config: read the files, stylize, write.

`run(config)` is what the command line calls. It checks the config (nothing
is written before it passes), runs the engine (`engine.still.execute`, or
`engine.clip.run_video` for a video content) with a progress bar, writes
the outputs and the manifest atomically, and on Ctrl-C or SIGTERM (acted
on between compiled chunks) saves what it has, marked partial, and raises
`Interrupted`, whose manifest says what was written.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from absl import logging

from nst_jax.io import images, manifest as manifest_lib
from nst_jax.engine import clip, devices as devices_lib, loop, resume
from nst_jax.engine import settings as settings_lib, still, sweeps


class Interrupted(Exception):
  """Raised by `run` after saving a partial result on SIGINT/SIGTERM."""

  def __init__(self, signum, manifest):
    super().__init__(f'interrupted by signal {signum}')
    self.signum = signum
    self.manifest = manifest


class _SignalCatcher:
  """Records SIGINT/SIGTERM instead of dying, so the loop can save first."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def run(config, members=None, programs=None,
        should_stop: Callable[[], bool] = lambda: False) -> dict:
  """Runs style transfer as `config` says and writes the images and manifest.

  Without a sweep: `output` (e.g. out/result.png) and its manifest
  (out/result.json). A video content (`nst_jax.engine.clip`): the clip
  (out/clip.mp4), its frames (out/clip/frame_00001.png, ...) and
  out/clip.json; a rerun continues an interrupted clip. With
  `config.sweep.*` lists: out/result_<k>.png per member,
  out/result_grid.png, and one out/result.json whose `runs` list holds
  each member. The manifest's `kind` says which, and `outputs` the files.

  The optimisation is checkpointed in out/result.ckpt/ every
  `checkpoint_every` steps and when interrupted (`nst_jax.engine.resume`);
  with `resume='auto'` the same config run again continues from there, and
  the checkpoint is removed once the run completes.

  Args:
    config: an `ml_collections.ConfigDict` (see configs/default.py) or a dict
      with the same fields.
    members: optional list of per-member overrides for a sweep from Python,
      each a dict with any of 'content_weight', 'style_weight', 'tv_weight',
      'seed', 'styles' (tuple of paths), 'style_layer_weights' and
      'content_layer_weights' (one per configured layer; zeros switch layers
      off, as the paper's Figure 3 rows do) and 'label' (grid text). It
      replaces `config.sweep`.
    programs: a `programs.Programs` to keep the compiled programs in
      (default: the process's).
    should_stop: polled between compiled chunks, as the signals are: True
      stops the run as SIGTERM would (checkpointed, partial outputs saved,
      `Interrupted` raised).
  Returns:
    The manifest written beside the output image. `manifest['stop_reason']`
    (per run in a sweep) is 'iterations', 'stop_loss', 'tolerance',
    'no_progress' (L-BFGS's line search found no lower loss) or
    'non_finite'.
  Raises:
    UserError: bad input (nothing has been written).
    Interrupted: SIGINT/SIGTERM; the partial images and manifest were saved.
  """
  settings = settings_lib.check(config)
  member_list = sweeps.sweep_members(settings, members)
  count = len(member_list)
  if settings.distributed:
    # Before the handlers below: JAX's coordination client installs its own
    # SIGTERM handler, which would replace ours.
    devices_lib.initialize_distributed()
  # Signals are recorded from here on and acted on between compiled chunks.
  log = lambda message: logging.warning('%s', message)
  if settings.video:
    with _SignalCatcher() as catcher:
      manifest = clip.run_video(
          config, settings,
          should_stop=lambda: catcher.signum is not None or should_stop(),
          programs=programs, log=log).manifest
    if manifest['partial']:
      raise Interrupted(catcher.signum or signal.SIGTERM, manifest)
    return manifest
  with _SignalCatcher() as catcher:
    def save_snapshot(k, step, pixels):
      if devices_lib.writes_outputs():
        images.save_image(manifest_lib.numbered_path(
            manifest_lib.member_output(settings.output, k, count), step),
                          pixels)

    checkpoints = resume.Checkpoints.beside(
        settings.output, settings.checkpoint_every, log)
    try:
      result = still.execute(
          config, settings, member_list, settings.content,
          {path: path for path in settings.styles},
          loop.TerminalProgress(),
          should_stop=lambda: catcher.signum is not None or should_stop(),
          on_snapshot=save_snapshot, programs=programs, log=log,
          checkpoints=checkpoints)
      manifest = result.save(settings.output)
      if not result.partial:
        checkpoints.remove()
    finally:
      checkpoints.close()
  if result.partial:
    # Across hosts a process may stop because another was signalled.
    raise Interrupted(catcher.signum or signal.SIGTERM, manifest)
  return manifest
