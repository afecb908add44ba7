"""A still image or a sweep of them: read, prepare, optimise, describe.

`execute` is what `stylize` and the command line share: the content and
styles are read at every coarse-to-fine level, `prepare.prepare` resolves
the run once, `loop.optimize` runs the levels, and the manifest records
what was done. It writes nothing itself: `Result.save` does.
"""

from __future__ import annotations

import time
from typing import Callable

from absl import logging
import numpy as np

from nst_jax.core import color, descent
from nst_jax.io import images, manifest as manifest_lib
from nst_jax.engine import inputs, loop, prepare as prepare_lib, results
from nst_jax.engine import resume, sweeps


def colour_finish(settings, colour_contents: dict) -> Callable:
  """What turns an optimised image into the one shown and written: with
  `luminance` and `original_colors`, its luminance with the content's
  colours (`color.restore_chroma`).

  Args:
    settings: `settings.Settings`.
    colour_contents: {(height, width): the content as read at that size}.
  """
  if settings.color_control not in ('luminance', 'original_colors'):
    return lambda pixels: pixels
  return lambda pixels: color.restore_chroma(
      np.asarray(pixels, np.float32), colour_contents[pixels.shape[:2]])


def execute(config, settings, members, content_source, style_sources: dict,
            reporter: loop.Reporter, *, should_stop=lambda: False,
            on_snapshot=None, programs=None, log=logging.warning,
            mask_sources=None, checkpoints=None) -> results.Result:
  """Runs checked settings on a still content.

  Args:
    config: the config (recorded in the manifest).
    settings: `settings.check(config)`.
    members: `sweeps.sweep_members(...)`.
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
    checkpoints: `resume.Checkpoints` to write (and, with
      `settings.resume='auto'`, to continue from), or None.
  Returns:
    `results.Result`.
  """
  started, started_unix = time.perf_counter(), time.time()
  style_sources = dict(style_sources)
  for member in members:
    for key in member.styles:
      style_sources.setdefault(key, key)
  sizes = loop.level_sizes(settings.image_size, settings.coarse_to_fine)
  level_inputs = [inputs.read_level(settings, content_source, style_sources,
                                    size, mask_sources) for size in sizes]
  content, style_images = level_inputs[-1].content, level_inputs[-1].styles
  height, width = content.shape[:2]
  prepared = prepare_lib.prepare(
      settings, height=height, width=width,
      network_sizes=[image.shape[:2] for level in level_inputs
                     for image in [level.content, *level.styles.values()]],
      members=len(members),
      allow_random_weights=settings.allow_random_weights,
      programs=programs, log=log)
  settings = prepared.settings
  if checkpoints is not None:
    _match_checkpoint(checkpoints, config, settings, prepared, members,
                      level_inputs, log)

  first = level_inputs[0]
  starts = [inputs.initial_pixels(settings, member.seed, first.content,
                                  [first.styles[k] for k in member.styles])
            for member in members]
  finish = colour_finish(settings, {level.content.shape[:2]:
                                    level.colour_content
                                    for level in level_inputs})
  levels = loop.optimize(
      prepared.run(members, reporter, should_stop=should_stop,
                   on_snapshot=on_snapshot and (
                       lambda k, step, pixels: on_snapshot(k, step,
                                                           finish(pixels))),
                   finish=finish, checkpoints=checkpoints),
      prepared.variables, level_inputs, starts)

  manifest = _manifest(config, settings, members, levels)
  manifest.update(prepared.manifest_blocks())
  manifest.update({
      'inputs': {'content': inputs.describe(content_source),
                 'styles': list(style_sources)},
      'image_size': {'content': [width, height],
                     'styles': {key: list(pixels.shape[1::-1])
                                for key, pixels in style_images.items()},
                     'levels': sizes}})
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
  manifest['programs'] = prepared.programs_manifest()
  manifest['resumed'] = resumed_entry(checkpoints)
  manifest['checkpoints'] = checkpoints and checkpoints.manifest()
  # Where an interrupted run's state waits for the same command again.
  manifest['checkpoint'] = (checkpoints.folder.path if checkpoints and
                            levels[-1].interrupted else None)
  return results.Result(images=[images.to_uint8(finish(p))
                                for p in levels[-1].pixels],
                        manifest=manifest, labels=[m.label for m in members],
                        grid_columns=sweeps.grid_columns(settings))


def _match_checkpoint(checkpoints, config, settings, prepared, members,
                      level_inputs, log) -> None:
  """Finds the checkpoint this run continues from (`checkpoints.resumed`)."""
  inputs_sha = resume.digest([array for level in level_inputs
                              for array in resume.level_arrays(level)])
  meta = checkpoints.match(
      resume.fingerprint(config, inputs_sha, prepared.weights, prepared,
                         len(members)), settings.resume)
  if meta is not None:
    progress = meta['progress']
    log(f'{checkpoints.folder.path}: resuming at step '
        f'{resume.resumed_step(progress)} of {progress["total_steps"]}')



def resumed_entry(checkpoints) -> dict:
  """The manifest's `resumed`: where the run continued from, or None."""
  if checkpoints is None or checkpoints.resumed is None:
    return None
  progress = checkpoints.resumed['progress']
  return {'checkpoint': checkpoints.folder.path,
          'level': progress.get('level'),
          'step': resume.resumed_step(progress)}


def _manifest(config, settings, members, levels) -> dict:
  """The manifest's config, per-member results and stop reasons."""
  last = levels[-1]
  count = len(members)
  steps = last.step_offset + last.steps
  evaluations = np.sum([level.evaluations for level in levels], axis=0)
  reasons = ['interrupted' if last.interrupted
             else descent.STOP_REASONS[r] for r in last.stop_reasons]
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
  manifest = manifest_lib.header('still' if count == 1 else 'sweep')
  manifest.update({'config': manifest_lib.config_dict(config),
                   'partial': last.interrupted,
                   'learning_rate': settings.learning_rate})
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
