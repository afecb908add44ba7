"""One style-transfer problem from settings and pixels, and its minimisation.

For a caller that holds its images in memory and wants the loss, its
gradient or a compiled descent of one problem (a benchmark, a notebook, a
web page), without the files, levels and manifest of a whole run
(`still.execute`). `build` checks the config (`settings.check`), prepares
the problem as every run is prepared (`prepare.prepare`: devices,
convolution algorithm, memory fit, weights, variables), computes the
targets and the loss weights, and takes the start image from the settings'
`init`; `minimize` runs the library's compiled loop
(`loop.optimize_level`, the programs a run uses) on it.

Example::

  problem = problem_lib.build({'weights': 'random', 'init': 'content'},
                              content, [style])
  value, grad = problem.loss_and_grad(problem.start)
  result = problem_lib.minimize(problem, iterations=50)
  result.loss, result.evaluations, result.curve
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from nst_jax.core import descent, losses
from nst_jax.engine import config_files, inputs, loop, prepare as prepare_lib
from nst_jax.engine import programs as programs_lib, settings as settings_lib
from nst_jax.engine import sweeps
from nst_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Problem:
  """A prepared problem: everything the loss and the loop need.

  Attributes:
    config: the config it was built from (all fields).
    prepared: `prepare.Prepared` (its settings carry the memory fit).
    member: the one `sweeps.Member` the settings describe.
    members: copies of the problem `minimize` runs together (a sweep of
      identical members).
    level: the content and styles as `inputs.Level`.
    loss_arguments: `descent.Problem`: the network's variables, the targets
      and the loss weights, the loss's arguments besides the pixels.
    start: the start image (H, W, 3) float32 0-255.
  """
  config: object
  prepared: prepare_lib.Prepared
  member: sweeps.Member
  members: int
  level: inputs.Level
  loss_arguments: descent.Problem
  start: np.ndarray

  @property
  def settings(self) -> settings_lib.Settings:
    return self.prepared.settings

  @property
  def spec(self) -> losses.LossSpec:
    return self.prepared.spec

  def loss_and_grad(self, pixels):
    """(total loss, its gradient with respect to `pixels`): one evaluation
    (`descent.loss_and_grad_jit`)."""
    return descent.loss_and_grad_jit(pixels, self.loss_arguments, self.spec)


def build(config_or_fields, content_pixels, style_pixels_list: Sequence, *,
          members: int = 1,
          programs: Optional[programs_lib.Programs] = None,
          log: Callable[[str], None] = logging.warning) -> Problem:
  """Prepares the problem of a content and its styles.

  Args:
    config_or_fields: a whole config (`ml_collections.ConfigDict`) or a dict
      of fields set on the default one (`config_files.make_config`).
      `content`, `style` and `output` are ignored (the images come as
      pixels; nothing is written); the styles are named `style_<k>`.
    content_pixels: (H, W, 3) float 0-255, the content as the network sees
      it (colour control and masks are `still.execute`'s).
    style_pixels_list: the styles, (H_k, W_k, 3) float 0-255 each, blended
      by the config's `style_blend_weights`.
    members: copies of the problem that `minimize` runs as one sweep.
    programs: where compiled programs are kept (default: the process's).
    log: where warnings go.
  Returns:
    `Problem`.
  Raises:
    UserError: a bad field, a sweep, an image too small for the layers, or
      a problem that does not fit the device's memory.
  """
  if isinstance(config_or_fields, dict):
    config = config_files.make_config(None, config_or_fields)
  else:
    config = config_files.make_config(config_or_fields)
  content = np.asarray(content_pixels, np.float32)
  styles = {f'style_{k}': np.asarray(style, np.float32)
            for k, style in enumerate(style_pixels_list)}
  config.content, config.style, config.output = '', ','.join(styles), ''
  settings = settings_lib.check(config, from_files=False)
  if len(sweeps.sweep_members(settings)) != 1:
    raise UserError('config.sweep: a problem is one setting; ask for '
                    'copies with `members` instead')
  inputs.check_image_size(content, 'content', 'content image',
                          settings.spec.layers)
  for key, style in styles.items():
    inputs.check_image_size(style, key, 'style image',
                            settings.spec.style_layers or settings.spec.layers)
  height, width = content.shape[:2]
  prepared = prepare_lib.prepare(
      settings, height=height, width=width,
      network_sizes=[content.shape[:2]] + [s.shape[:2]
                                           for s in styles.values()],
      members=members, allow_random_weights=settings.allow_random_weights,
      programs=programs, log=log)
  settings, spec = prepared.settings, prepared.spec
  member, = sweeps.sweep_members(settings)
  targets = prepared.programs.targets(
      prepared.variables, content, list(styles.values()),
      loop.style_blend(settings, member.styles), spec, seed=settings.seed)
  # The loss weights as `loop.optimize_level` makes them for a member.
  loss_weights = losses.loss_weights(
      spec, member.content_weight, member.style_weight, member.tv_weight,
      member.content_layer_weights, member.style_layer_weights)
  start = np.asarray(inputs.initial_pixels(
      settings, member.seed, content, list(styles.values())), np.float32)
  return Problem(
      config=config, prepared=prepared, member=member, members=members,
      level=inputs.Level(content=content, styles=styles,
                         colour_content=content),
      loss_arguments=descent.Problem(prepared.variables, targets,
                                     loss_weights),
      start=start)


@dataclasses.dataclass(frozen=True)
class Minimized:
  """What `minimize` did (for a sweep of copies, the first member's).

  Attributes:
    pixels: the result (H, W, 3) float32.
    initial_loss, loss: the total loss at the start and at the result.
    steps: optimiser steps taken.
    evaluations: loss + gradient evaluations, the start's included.
    stop_reason: a name from `descent.STOP_REASONS`.
    curve: [evaluations, total loss] after each chunk.
    compile_s: compiling (or loading) the init and chunk programs.
    optimize_s: the chunks, from the first to the last.
  """
  pixels: np.ndarray
  initial_loss: float
  loss: float
  steps: int
  evaluations: int
  stop_reason: str
  curve: list
  compile_s: float
  optimize_s: float


class _EveryChunk(loop.Reporter):
  """Calls `on_chunk(step, evaluations, loss)` after every chunk."""

  def __init__(self, on_chunk):
    self.on_chunk = on_chunk

  def update(self, step, evaluations, terms, pixels):
    del pixels
    self.on_chunk(step, evaluations, terms[0]['total'])


def minimize(problem: Problem, iterations: Optional[int] = None, *,
             chunk_size: Optional[int] = None,
             stop_loss: Optional[float] = None,
             tolerance: Optional[float] = None, start=None,
             on_chunk: Optional[Callable[[int, int, float], None]] = None
             ) -> Minimized:
  """Runs the library's compiled loop on `problem` (every member).

  Args:
    problem: `build`'s.
    iterations: optimiser steps at most (default: the settings').
    chunk_size: steps per compiled chunk, between which the host reads the
      loss (default: the settings' `log_every`, at most `iterations`).
    stop_loss, tolerance: stop criteria (default: the settings').
    start: the start image (default: `problem.start`).
    on_chunk: called after every chunk with the step, the evaluations so
      far and the total loss, while the loop waits.
  Returns:
    `Minimized`.
  """
  settings = problem.settings
  changes = dict(iterations=iterations, log_every=chunk_size,
                 stop_loss=stop_loss, tolerance=tolerance)
  settings = dataclasses.replace(settings, **{
      field: value for field, value in changes.items() if value is not None})
  reporter = _EveryChunk(on_chunk) if on_chunk else loop.Reporter()
  run = dataclasses.replace(problem.prepared, settings=settings).run(
      [problem.member] * problem.members, reporter)
  count = problem.members
  level = loop.optimize_level(
      run, problem.prepared.variables, problem.level,
      [problem.start if start is None else np.asarray(start, np.float32)]
      * count, settings.iterations, (0, [0] * count),
      targets=[problem.loss_arguments.targets] * count)
  return Minimized(
      pixels=level.pixels[0], initial_loss=level.initial[0]['total'],
      loss=level.finals[0]['total'], steps=int(level.steps[0]),
      evaluations=int(level.evaluations[0]),
      stop_reason=('interrupted' if level.interrupted else
                   descent.STOP_REASONS[int(level.stop_reasons[0])]),
      curve=[[row['evaluations'], row['total']]
             for row in level.histories[0][1:]],
      compile_s=level.compile_s, optimize_s=level.optimize_s)
