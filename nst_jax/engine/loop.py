"""The optimisation loop: coarse-to-fine levels, compiled chunks, stopping.

Each level optimises every member at one image size. The loop itself runs
compiled, `chunk_size` steps per call (`descent.run_chunk` in a
`lax.while_loop`); between chunks Python reads the losses back once, reports
progress, writes snapshots and checks whether to stop (Ctrl-C). The stop
criteria (iteration budget, non-finite loss, `stop_loss`, `tolerance`) are
decided on the device, per member.

Example::

  state = loop.minimize(noise, problem, spec, 'lbfgs', iterations=50)
  result = state.pixels
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from typing import Callable, Optional

from absl import logging
import jax
import numpy as np

from nst_jax.core import descent, losses, optimizers
from nst_jax.io import images, manifest as manifest_lib
from nst_jax.engine import devices as devices_lib, memory
from nst_jax.engine import programs as programs_lib
from nst_jax.errors import UserError


def level_sizes(image_size: int, coarse_to_fine: int) -> list:
  """Image sizes, coarsest first: image_size / 2^k for k = coarse_to_fine..0."""
  return [max(1, image_size // 2 ** k)
          for k in range(coarse_to_fine, -1, -1)]


def chunk_size(log_every: int, save_every: int, iterations: int) -> int:
  """Steps per compiled chunk: progress and snapshots happen between
  chunks, so every `log_every`-th and `save_every`-th step ends one."""
  size = math.gcd(log_every, save_every) if save_every else log_every
  return min(size, max(iterations, 1))


def style_blend(settings, styles: tuple) -> tuple:
  """The blend weights of a member's styles: `style_blend_weights` for the
  run's own styles, equal weights for a sweep's other style sets."""
  return (settings.style_blend_weights if styles == settings.styles
          else (1.0,) * len(styles))


# ---------------------------------------------------------------------------
# Progress.

class Reporter:
  """What the loop tells its caller; this base class tells nothing."""

  wants_pixels = False  # whether `update` needs the current images

  def level(self, index: int, count: int, width: int, height: int,
            iterations: int, first_step: int) -> None:
    """A level starts (index 0 .. count - 1); its steps are counted from
    `first_step` (the steps of the levels before)."""

  def compiling(self, width: int, height: int) -> None:
    """Programs for this size are being compiled (not loaded)."""

  def running(self, step: int) -> None:
    """The programs are ready; the level's steps start at `step` (counted
    over levels: the level's first step, or where a resumed run left
    off)."""

  def update(self, step: int, evaluations: int, terms: list,
             pixels: Optional[np.ndarray]) -> None:
    """After a chunk: the furthest member's step (counted over levels),
    all members' evaluations, each member's loss terms (JSON floats) and,
    when `wants_pixels`, the members' images (K, H, W, 3)."""

  def close(self) -> None:
    """The level ended."""


class TerminalProgress(Reporter):
  """A progress bar on a terminal (stderr), log lines otherwise."""

  def __init__(self, stream=None):
    self.stream = stream or sys.stderr
    self.tty = self.stream.isatty()
    self.tag = ''
    self.total = 0
    self.first_step = 0
    self.start = time.perf_counter()
    self.start_done = 0  # steps done before this process (a resumed run)

  def _say(self, message):
    if self.tty:
      self.stream.write(message + '\n')
      self.stream.flush()
    else:
      logging.info('%s', message)

  def level(self, index, count, width, height, iterations, first_step):
    self.tag = (f'level {index + 1}/{count} {width}x{height} ' if count > 1
                else '')
    self.total = iterations
    self.first_step = first_step

  def running(self, step):
    self.start = time.perf_counter()
    self.start_done = step - self.first_step

  def compiling(self, width, height):
    self._say(f'compiling for {width}x{height} ... (the first run at this '
              'size and these settings; later runs load the programs)')

  def update(self, step, evaluations, terms, pixels):
    del pixels
    done = step - self.first_step
    elapsed = time.perf_counter() - self.start
    rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float('nan')
    loss = next((t['total'] for t in terms if t['total'] is not None),
                math.nan)
    if self.tty:
      filled = int(30 * done / max(self.total, 1))
      self.stream.write(f'\r{self.tag}[{"#" * filled}{"." * (30 - filled)}] '
                        f'{done}/{self.total} loss {loss:.4g} '
                        f'{rate:.2f} it/s ETA {eta:.0f}s ')
      self.stream.flush()
    else:
      logging.info('%siteration %d/%d evaluations %d loss %.6g (%.2f it/s)',
                   self.tag, done, self.total, evaluations, loss, rate)

  def close(self):
    if self.tty:
      self.stream.write('\n')


class CallbackProgress(Reporter):
  """Calls `callback(step, terms, image)` after every chunk.

  For one member, `terms` is its loss terms (a dict of floats) and `image`
  its current uint8 (H, W, 3) image; for a sweep both are lists, one entry
  per member.
  """

  wants_pixels = True

  def __init__(self, callback: Callable, members: int):
    self.callback = callback
    self.members = members

  def update(self, step, evaluations, terms, pixels):
    del evaluations
    images = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in pixels]
    if self.members == 1:
      self.callback(step, terms[0], images[0])
    else:
      self.callback(step, list(terms), images)


# ---------------------------------------------------------------------------
# One level.

@dataclasses.dataclass
class Level:
  """What one level produced (on the host, one entry per member)."""
  pixels: np.ndarray
  steps: np.ndarray
  evaluations: np.ndarray
  stop_reasons: np.ndarray
  initial: list
  finals: list
  histories: list
  compile_s: float
  optimize_s: float
  loop_start_unix: float
  loop_evaluations: int
  interrupted: bool
  step_offset: int = 0      # steps of the levels before

  def record(self) -> dict:
    """The level as JSON, without its pixels (a checkpoint's progress)."""
    record = {field.name: getattr(self, field.name)
              for field in dataclasses.fields(self) if field.name != 'pixels'}
    for name in ('steps', 'evaluations', 'stop_reasons'):
      record[name] = [int(x) for x in record[name]]
    return record

  @classmethod
  def from_record(cls, record: dict) -> 'Level':
    """A finished level from `record()` (no pixels: the next level's state
    holds what it led to)."""
    arrays = {name: np.asarray(record[name], np.int32)
              for name in ('steps', 'evaluations', 'stop_reasons')}
    return cls(**dict(record, pixels=None, **arrays))


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a level needs that does not change between levels."""
  settings: object          # settings.Settings
  spec: losses.LossSpec     # with the weights' preprocessing
  members: tuple            # sweeps.Member
  mode: str                 # 'map' | 'vmap'
  devices: tuple
  programs: programs_lib.Programs
  reporter: Reporter
  should_stop: Callable[[], bool]
  # on_snapshot(member index, step, pixels) every settings.save_every steps.
  on_snapshot: Optional[Callable] = None
  # pixels -> the image shown (colour control puts the content's colours
  # back); applied to progress images.
  finish: Callable = lambda pixels: pixels
  # `resume.Checkpoints`: saves every `every` steps and when interrupted,
  # and holds the checkpoint a resumed run continues from.
  checkpoints: Optional[object] = None


@contextlib.contextmanager
def _out_of_memory_is_user_error(width, height):
  """XLA's RESOURCE_EXHAUSTED becomes one line of advice."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    text = str(error)
    if 'RESOURCE_EXHAUSTED' not in text and 'Out of memory' not in text:
      raise
    raise UserError(f'config.image_size: {width}x{height} ran out of device '
                    f'memory; {memory.ADVICE}') from None


def optimize_level(run: Run, variables, level_inputs, starts: list,
                   iterations: int, offsets, targets=None,
                   temporal_weight=0.0, progress: Optional[dict] = None,
                   resume_from: Optional[dict] = None) -> Level:
  """Optimises every member from `starts` at one image size.

  Args:
    run: the run's fixed parts.
    variables: `vgg.prepare_variables` output for the weights.
    level_inputs: `inputs.Level`: content, styles and masks at this size.
    starts: one start image per member (a video window: (N, H, W, 3)).
    iterations: steps at this level.
    offsets: (steps, [evaluations per member]) of the levels before.
    targets: one `objective.Targets` per member, or None: computed here from
      `level_inputs` (a video frame brings its own, with temporal
      references).
    temporal_weight: gamma (video).
    progress: what a checkpoint records besides this level (JSON); None:
      this level writes no checkpoints.
    resume_from: the level's record in the checkpoint `run.checkpoints`
      resumes (its `progress['current']`): the state comes from there
      instead of `starts`.
  """
  settings, members = run.settings, run.members
  count = len(members)
  size = chunk_size(settings.log_every,
                    settings.save_every if run.on_snapshot else 0, iterations)
  optimizer = optimizers.Optimizer(settings.optimizer, settings.lbfgs_memory,
                              settings.lbfgs_pyramid,
                              first_step=settings.lbfgs_first_step)
  loop = run.programs.loop(run.spec, optimizer, size, run.mode, run.devices,
                           settings.shard_rows,
                           bool(run.spec.frames) and len(run.devices) > 1)
  padded = -(-count // loop.member_slots) * loop.member_slots
  loss_weights = devices_lib.stack(devices_lib.pad_members([
      losses.loss_weights(run.spec, m.content_weight, m.style_weight,
                          m.tv_weight, m.content_layer_weights,
                          m.style_layer_weights,
                          temporal_weight=temporal_weight) for m in members],
      padded))
  pixels = np.stack(devices_lib.pad_members(starts, padded)).astype(
      np.float32)
  learning_rate = np.full((padded,), settings.learning_rate, np.float32)
  criteria = devices_lib.stack([descent.stop_criteria(
      iterations, settings.stop_loss, settings.tolerance)] * padded)
  init_key_args = (variables, pixels, loss_weights, learning_rate)
  chunk_key_args = init_key_args + (criteria,)
  height, width = starts[0].shape[-3:-1]
  if not (loop.is_ready('init', init_key_args) and
          loop.is_ready('chunk', chunk_key_args)):
    run.reporter.compiling(width, height)
  targets_by_styles = {}
  for member in members if targets is None else ():
    if member.styles not in targets_by_styles:
      blend = style_blend(settings, member.styles)
      targets_by_styles[member.styles] = run.programs.targets(
          variables, level_inputs.content,
          [level_inputs.styles[k] for k in member.styles], blend, run.spec,
          level_inputs.content_masks, level_inputs.style_masks,
          settings.seed)
  # Dispatched, not finished: the init and chunk programs load from the
  # program cache on worker threads while the targets compute.
  loop.prefetch('init', init_key_args)
  loop.prefetch('chunk', chunk_key_args)
  if targets is None:
    targets = [targets_by_styles[m.styles] for m in members]
  targets = devices_lib.stack(devices_lib.pad_members(targets, padded))
  step_offset, evaluation_offset = offsets
  to_host = devices_lib.to_host

  with _out_of_memory_is_user_error(width, height):
    # Compile ahead of time, so compilation is timed apart from optimisation.
    variables = loop.place(variables, batched=False)
    pixels, targets, loss_weights, learning_rate, criteria = loop.place(
        (pixels, targets, loss_weights, learning_rate, criteria))
    compile_start = time.perf_counter()
    init_fn = loop.compiled('init', init_key_args, variables, pixels,
                            targets, loss_weights, learning_rate)
    compile_s = time.perf_counter() - compile_start
    if resume_from is None:
      state = init_fn(variables, pixels, targets, loss_weights,
                      learning_rate)
      initial_terms = to_host(state.terms)
      initial = [manifest_lib.terms_to_json(
          devices_lib.member(initial_terms, k)) for k in range(count)]
      histories = [[manifest_lib.history_row(
          step_offset, evaluation_offset[k] + 1, initial[k], width)]
                   for k in range(count)]
      finals = list(initial)
    else:  # the state as checkpointed, laid out as init's output
      state = run.checkpoints.restore(init_fn.out_info)
      initial, finals, histories = copy.deepcopy((
          resume_from['initial'], resume_from['finals'],
          resume_from['histories']))
    compile_start = time.perf_counter()
    chunk_fn = loop.compiled('chunk', chunk_key_args, variables, state,
                             targets, loss_weights, learning_rate, criteria)
    compile_s += time.perf_counter() - compile_start

    steps, start_evaluations = to_host((state.step, state.evaluations))
    steps, start_evaluations = steps[:count], start_evaluations[:count]
    evaluations = start_evaluations

    checkpointed = [None]  # the steps of the last checkpoint written

    def checkpoint():
      if checkpointed[0] is not None and (checkpointed[0] == steps).all():
        return  # it holds this very state
      run.checkpoints.save(state, dict(progress, current={
          'initial': initial, 'finals': finals, 'histories': histories,
          'step_offset': step_offset}))
      checkpointed[0] = steps

    optimize_start = time.perf_counter()
    loop_start_unix = time.time()
    if run.checkpoints is not None and not run.checkpoints.written:
      run.checkpoints.started()
    run.reporter.running(step_offset + int(steps.max()))
    interrupted = False
    while True:
      if devices_lib.any_process(run.should_stop()):
        interrupted = True
        if progress is not None:
          checkpoint()
        break
      previous_steps = steps
      state, _, terms = chunk_fn(variables, state, targets, loss_weights,
                                 learning_rate, criteria)
      # One transfer (a gather across hosts) per chunk.
      steps, evaluations, stop_reasons, terms = to_host(
          (state.step, state.evaluations, state.stop_reason, terms))
      steps, evaluations = steps[:count], evaluations[:count]
      for k in np.nonzero(steps > previous_steps)[0]:
        finals[k] = manifest_lib.terms_to_json(devices_lib.member(terms, k))
        histories[k].append(manifest_lib.history_row(
            step_offset + int(steps[k]),
            evaluation_offset[k] + int(evaluations[k]), finals[k], width))
      if (steps > previous_steps).any():
        snapshot = (run.on_snapshot and settings.save_every and
                    int(steps.max()) // settings.save_every >
                    int(previous_steps.max()) // settings.save_every)
        current = (to_host(state.pixels)[:count]
                   if snapshot or run.reporter.wants_pixels else None)
        run.reporter.update(
            step_offset + int(steps.max()), int(evaluations.sum()), finals,
            None if current is None else [run.finish(p) for p in current])
        if snapshot:
          for k in range(count):
            run.on_snapshot(k, step_offset + int(steps[k]), current[k])
      if (stop_reasons[:count] != descent.RUNNING).all():
        break
      if progress is not None and run.checkpoints.due(
          step_offset + int(previous_steps.max()),
          step_offset + int(steps.max()), state):
        checkpoint()
  run.reporter.close()
  steps, evaluations, stop_reasons, pixels = to_host(
      (state.step, state.evaluations, state.stop_reason, state.pixels))
  return Level(
      pixels=pixels[:count], steps=steps[:count],
      evaluations=evaluations[:count], stop_reasons=stop_reasons[:count],
      initial=initial, finals=finals, histories=histories,
      compile_s=compile_s, optimize_s=time.perf_counter() - optimize_start,
      loop_start_unix=loop_start_unix,
      loop_evaluations=int((evaluations[:count] - start_evaluations).sum()),
      interrupted=interrupted)


def total_steps(settings, levels: int) -> int:
  """The step budget over all coarse-to-fine levels."""
  return settings.iterations + (levels - 1) * settings.coarse_iterations


def optimize(run: Run, variables, level_inputs: list, starts: list) -> list:
  """Coarse to fine: each level starts from the previous one's result,
  upsampled; the last level is the requested size. With `run.checkpoints`
  the levels write checkpoints, and a matched checkpoint's run continues at
  its level and step.

  Args:
    run: the run's fixed parts.
    variables: `vgg.prepare_variables` output.
    level_inputs: an `inputs.Level` per level, coarsest first.
    starts: one start image per member at the first level's size.
  Returns:
    The `Level`s run (fewer than asked when one was interrupted or a
    member's loss became non-finite); a resumed run's earlier levels come
    from its checkpoint, without pixels.
  """
  count = len(run.members)
  checkpoints = run.checkpoints
  resumed = checkpoints.resumed['progress'] if (
      checkpoints and checkpoints.resumed) else None
  levels = ([Level.from_record(record) for record in resumed['levels']]
            if resumed else [])
  offsets = (0, [0] * count)
  for level in levels:
    offsets = (offsets[0] + int(level.steps.max()),
               [offsets[1][k] + int(level.evaluations[k])
                for k in range(count)])
  for index, inputs_at_level in enumerate(level_inputs):
    if index < len(levels):
      continue
    content = inputs_at_level.content
    resume_from = resumed['current'] if (
        resumed and index == resumed['level']) else None
    if resume_from is not None:  # the state holds the pixels; the shape
      starts = [np.zeros(content.shape, np.float32)] * count
    elif levels:
      starts = [images.resize(levels[-1].pixels[k], content.shape[:2])
                for k in range(count)]
    last = index == len(level_inputs) - 1
    iterations = (run.settings.iterations if last
                  else run.settings.coarse_iterations)
    run.reporter.level(index, len(level_inputs), content.shape[1],
                       content.shape[0], iterations, offsets[0])
    progress = None if checkpoints is None else {
        'level': index, 'levels': [level.record() for level in levels],
        'total_steps': total_steps(run.settings, len(level_inputs))}
    level = optimize_level(run, variables, inputs_at_level, starts,
                           iterations, offsets, progress=progress,
                           resume_from=resume_from)
    level.step_offset = offsets[0]
    levels.append(level)
    offsets = (offsets[0] + int(level.steps.max()),
               [offsets[1][k] + int(level.evaluations[k])
                for k in range(count)])
    if level.interrupted or (level.stop_reasons == descent.NON_FINITE).any():
      break
  return levels


def minimize(pixels, problem: descent.Problem, spec: losses.LossSpec,
             optimizer='lbfgs', learning_rate=1.0, iterations=100,
             chunk_size=20, stop_loss=None, tolerance=0.0,
             programs: Optional[programs_lib.Programs] = None):
  """Optimises one image on the default device; returns the final
  `descent.LoopState` (the same compiled programs a run uses).

  Example::

    state = loop.minimize(noise, problem, spec, 'lbfgs', iterations=50)
    result = state.pixels
  """
  programs = programs or programs_lib.shared()
  loop_programs = programs.loop(spec, optimizer, chunk_size, 'map',
                                jax.devices()[:1])
  batch = lambda tree: jax.tree_util.tree_map(
      lambda x: np.asarray(x)[None], tree)
  criteria = batch(descent.stop_criteria(iterations, stop_loss, tolerance))
  pixels, targets, loss_weights, learning_rate = batch(
      (pixels, problem.targets, problem.loss_weights,
       np.asarray(learning_rate, np.float32)))
  key_args = (problem.variables, pixels, loss_weights, learning_rate)
  variables = loop_programs.place(problem.variables, batched=False)
  pixels, targets, loss_weights, learning_rate, criteria = loop_programs.place(
      (pixels, targets, loss_weights, learning_rate, criteria))
  init = loop_programs.compiled('init', key_args, variables, pixels, targets,
                                loss_weights, learning_rate)
  state = init(variables, pixels, targets, loss_weights, learning_rate)
  chunk = loop_programs.compiled('chunk', key_args + (criteria,), variables,
                                 state, targets, loss_weights, learning_rate,
                                 criteria)
  while int(state.stop_reason[0]) == descent.RUNNING:
    state, _, _ = chunk(variables, state, targets, loss_weights,
                        learning_rate, criteria)
  return devices_lib.member(state, 0)
