"""Stylised video that does not flicker (Ruder, Dosovitskiy and Brox 2016).

A video run's content is a video file or a folder of frames. Each frame is
optimised with its content and style terms plus the temporal loss
(`nst_jax.core.temporal`) against earlier stylised frames warped into it along
the optical flow (`nst_jax.io.flow`), and by default starts from the previous
result warped the same way. `video.mode='joint'` optimises `video.window`
frames at once, the temporal terms coupling neighbours.

Outputs, for output=out/clip.mp4: the frames out/clip/frame_00001.png, ...
(each written atomically as it finishes), out/clip.json (the manifest,
rewritten after every frame and marked partial until the clip is done) and
then out/clip.mp4. Running the same config again continues from the first
unfinished frame; another config starts over.

One set of compiled programs serves every frame: the frame, its temporal
references and the iteration budget are arguments. While a frame is
optimised, a worker thread reads the next frames and computes their flows
and certainties (OpenCV releases the GIL).

The run is prepared as a still image is (`nst_jax.engine.prepare`): the
same weights, devices, convolution algorithm, memory fit (row strips and
L-BFGS pairs) and manifest blocks. `nst_jax.stylize_video` is its front
end.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import time

from absl import logging
import jax
import numpy as np

from nst_jax.core import color, descent
from nst_jax.engine import devices as devices_lib, inputs, loop
from nst_jax.engine import prepare as prepare_lib, resume, results, still
from nst_jax.engine import clip_frames, sweeps
from nst_jax.io import images, manifest as manifest_lib

FRAME_NAME = 'frame_{:05d}.png'
DEFAULT_FOLDER_FPS = 24.0


def frames_folder(output: str) -> str:
  """out/clip.mp4 -> out/clip (where the frames go)."""
  return os.path.splitext(output)[0]


# ---------------------------------------------------------------------------
# Progress over frames.

class FrameProgress:
  """A bar over frames with the time left (a log line per frame off a
  terminal; silent with `stream=None`), and the caller's `on_frame`."""

  def __init__(self, total: int, stream=sys.stderr, on_frame=None):
    self.total = total
    self.stream = stream
    self.on_frame = on_frame
    self.tty = bool(stream) and stream.isatty()
    self.last = time.perf_counter()
    self.seconds = []  # per frame finished here

  def frame(self, index: int, entry: dict, image) -> None:
    if self.on_frame is not None:
      self.on_frame(index + 1, entry['final'], image)
    if self.stream is None:
      return
    now = time.perf_counter()
    self.seconds.append(now - self.last)
    self.last = now
    # The first frame here includes compiling: left out once there are more.
    per_frame = float(np.median(self.seconds[1:] or self.seconds))
    left = (self.total - index - 1) * per_frame
    flicker = entry['flicker']['output'] if entry.get('flicker') else None
    text = (f'frame {index + 1}/{self.total} loss {entry["final"]["total"]:.4g}'
            f' evaluations {entry["evaluations"]} {entry["time_s"]:.1f}s'
            + (f' flicker {flicker:.3g}' if flicker is not None else '')
            + f' ETA {left:.0f}s')
    if self.tty:
      filled = int(30 * (index + 1) / max(self.total, 1))
      self.stream.write(f'\r[{"#" * filled}{"." * (30 - filled)}] {text} ')
      self.stream.flush()
    else:
      logging.info('%s', text)

  def close(self):
    if self.tty:
      self.stream.write('\n')


# ---------------------------------------------------------------------------
# The run.

def _resume_point(config, settings, frame_count, log) -> tuple:
  """(frames already done, their manifest entries) from a previous run of
  the same config; (0, []) otherwise (or with resume='never'), removing the
  frames already in the folder."""
  path = settings.manifest
  folder = frames_folder(settings.output)
  try:
    with open(path) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    previous = None
  if previous is None or 'frames' not in previous:
    return 0, []
  if settings.resume == 'never' or resume.config_for_match(
      previous.get('config') or {}) != resume.config_for_match(config):
    log(f'{path}: ' + ('resume=never' if settings.resume == 'never' else
                       'written by a different config')
        + '; starting the clip over')
    for stale in glob.glob(os.path.join(folder, 'frame_*.png')):
      os.remove(stale)
    return 0, []
  done = []
  for entry in previous['frames'][:frame_count]:
    if not os.path.exists(os.path.join(folder, FRAME_NAME.format(
        entry['frame']))):
      break
    done.append(entry)
  if done:
    log(f'{path}: resuming at frame {len(done) + 1} of {frame_count}')
  return len(done), done


def _load_frame(folder, index) -> np.ndarray:
  return images.load_image(os.path.join(folder, FRAME_NAME.format(index + 1)))


def run_video(config, settings, *, should_stop=lambda: False,
              programs=None, log=logging.warning, progress_stream=sys.stderr,
              on_frame=None, style_sources=None) -> results.VideoResult:
  """Stylises a video content (`settings.video` set) and writes the frames,
  the clip and the manifest.

  Args:
    config: the config (recorded in the manifest; a resumed run must match).
    settings: `settings.check(config)` of a video content.
    should_stop: polled between compiled chunks; True ends the run with a
      partial manifest (the finished frames kept).
    programs: `programs.Programs`, default the process's.
    log: where warnings go.
    progress_stream: where the frame bar goes (None: silent).
    on_frame: `on_frame(frame, terms, image)` after each frame is written
      (1-based frame number, its final loss terms, the uint8 image), or
      None.
    style_sources: {style key: source} for styles given as images in
      memory (see `inputs.read_image`); default: the keys are paths.
  Returns:
    `results.VideoResult`; its manifest is also written beside the output.
  Raises:
    UserError: an unreadable clip, no frames, frames of different sizes,
      or a clip that does not fit the device's memory even in strips.
  """
  flow_lib, video_read, video_write = clip_frames.video_modules()
  started = time.perf_counter()
  video = settings.video
  info = video_read.probe(settings.content)
  fps = video.fps or info.fps or DEFAULT_FOLDER_FPS
  frame_count = info.frame_count
  member = sweeps.sweep_members(settings)[0]
  # Read once at full size (8-bit, as files hold them); each frame's level
  # resizes them.
  style_sources = {key: images.to_uint8(inputs.read_image(
      (style_sources or {}).get(key, key), None, 'style image'))
                   for key in member.styles}
  first = inputs.read_level(settings, np.zeros((info.height, info.width, 3),
                                               np.uint8),
                            style_sources, settings.image_size)
  height, width = first.content.shape[:2]
  joint = video.mode == 'joint'
  prepared = prepare_lib.prepare(
      settings, height=height, width=width,
      network_sizes=[(height, width)] + [
          level.shape[:2] for level in first.styles.values()],
      frames=video.window if joint else 0,
      temporal=1 if joint else len(video.long_term),
      allow_random_weights=settings.allow_random_weights,
      programs=programs, log=log)
  settings, programs = prepared.settings, prepared.programs
  done, entries = _resume_point(config, settings, frame_count, log)
  checkpoints = resume.Checkpoints.beside(settings.output,
                                          settings.checkpoint_every, log)
  run = prepared.run((member,), loop.Reporter(), should_stop=should_stop,
                     checkpoints=checkpoints)
  blend = loop.style_blend(settings, member.styles)
  folder = frames_folder(settings.output)
  os.makedirs(folder, exist_ok=True)

  def targets_of(level):
    return programs.targets(prepared.variables, level.content,
                            [level.styles[k] for k in member.styles], blend,
                            prepared.spec, seed=settings.seed)

  manifest = manifest_lib.header('video')
  manifest.update({
      'config': manifest_lib.config_dict(config), 'partial': True,
      'inputs': {'content': settings.content, 'styles': list(member.styles)},
      'source': {'frames': frame_count, 'fps': info.fps,
                 'size': [info.width, info.height], 'audio': info.has_audio},
      'fps': fps, 'image_size': [width, height],
      'video': dataclasses.asdict(video)})
  manifest.update(prepared.manifest_blocks())
  manifest.update({
      'outputs': {'frames': folder, 'video': None,
                  'manifest': settings.manifest},
      'frames': entries})
  progress = FrameProgress(frame_count, progress_stream, on_frame)
  outputs = {}  # frame index -> the written frame (float), as far back as
                # the longest offset needs
  for index in range(max(0, done - max(video.long_term)), done):
    outputs[index] = _load_frame(folder, index)
  frames = clip_frames.Prefetcher(
      clip_frames.prepared_frames(settings, style_sources))
  finish = lambda level: still.colour_finish(
      settings, {level.content.shape[:2]: level.colour_content})
  optimise = _joint_windows if joint else _sequential_frames
  looked = []  # only the first frame (or window) optimised here resumes

  def checkpoint_plan(what, arrays, iterations):
    """(progress, resume_from) for the frame or window `what`."""
    fingerprint = resume.fingerprint(config, resume.digest(arrays),
                                     prepared.weights, prepared, 1)
    meta = None
    if looked:
      checkpoints.begin(fingerprint, what)
    else:
      looked.append(what)
      meta = checkpoints.match(fingerprint, settings.resume, what)
    if meta is not None:
      step = resume.resumed_step(meta['progress'])
      log(f'{checkpoints.folder.path}: resuming {what} at step {step} of '
          f'{iterations}')
      manifest['resumed'] = {'checkpoint': checkpoints.folder.path,
                             'place': what, 'step': step}
    return ({'level': 0, 'levels': [], 'total_steps': iterations},
            meta and meta['progress']['current'])

  manifest['resumed'] = None
  try:
    interrupted = optimise(
        settings, run, prepared.variables, frames, targets_of, done,
        outputs, finish, lambda entry, frame, image: _record(
            manifest, settings, folder, flow_lib, progress, outputs, entry,
            frame, image, programs), checkpoint_plan)
  finally:
    frames.close()
    progress.close()
    checkpoints.close()
  manifest['frames_done'] = len(manifest['frames'])
  # A joint window's frames share its evaluations: count each window once.
  manifest['evaluations'] = sum(
      {e.get('window', -1 - k): e['evaluations']
       for k, e in enumerate(manifest['frames'])}.values())
  manifest['flicker'] = _flicker_summary(manifest['frames'])
  manifest['detail'] = _detail_summary(manifest['frames'])
  manifest['timing'] = {'total_s': time.perf_counter() - started}
  manifest['programs'] = prepared.programs_manifest()
  manifest['checkpoint'] = checkpoints.folder.path if interrupted else None
  manifest['checkpoints'] = checkpoints.manifest()
  if not interrupted and devices_lib.writes_outputs():
    _encode(video_write, folder, frame_count, settings.output, fps,
            settings.content if info.has_audio else None, (width, height))
    manifest['partial'] = False
    manifest['outputs']['video'] = settings.output
  if not interrupted:
    checkpoints.remove()
  if devices_lib.writes_outputs():
    manifest_lib.write_json(settings.manifest, manifest)
  return results.VideoResult(manifest)


def _temporal_reference(frame: clip_frames.Frame, outputs: dict, offsets,
                        shape, flow_lib, luminance: bool,
                        interpolation) -> dict:
  """The fixed references of one frame: earlier results warped into it
  (`video.warp`'s interpolation; edges mirrored, so that where content
  comes into view they hold stylised texture for `video.fill='warped'`),
  with their long-term weights (zeros where there is no earlier frame)."""
  height, width = shape
  warped = np.zeros((len(offsets), height, width, 3), np.float32)
  certainty = np.zeros((len(offsets), height, width), np.float32)
  for k, offset in enumerate(offsets):
    if offset in frame.references and frame.index - offset in outputs:
      backward, weight = frame.references[offset]
      earlier = outputs[frame.index - offset]
      if luminance:  # the optimiser works on luminance there
        earlier = color.luminance_only(earlier)
      warped[k] = flow_lib.warp(earlier, backward, interpolation, 'mirror')
      certainty[k] = weight
  return {'warped': warped, 'certainty': certainty}


def _start(settings, frame: clip_frames.Frame, reference, flow_lib):
  """A frame's start image: `video.init`, or the run's `init` on the
  first frame."""
  level = frame.level
  if frame.index == 0:
    return inputs.initial_pixels(settings, settings.seed, level.content,
                                 list(level.styles.values()))
  init = settings.video.init
  if init == 'noise':
    return images.noise_image(settings.seed + frame.index,
                              level.content.shape[:2])
  if init == 'content':
    return level.content
  return _fill(settings, reference['warped'][0], level.content,
               reference['certainty'][0], flow_lib, frame.index)


def _fill(settings, warped, content, certainty, flow_lib, index):
  """A warped start where the flow is uncertain (`video.fill`): white noise
  (seed + frame index, as `video.init='noise'` draws it), which the style
  term paints as it paints a frame from noise; the warped result as it is;
  or Ruder et al.'s content, which the few steps a frame gets leave barely
  stylised."""
  fill = settings.video.fill
  if fill == 'warped':
    return warped
  if fill == 'noise':
    content = images.noise_image(settings.seed + index, content.shape[:2])
  return flow_lib.disoccluded_fill(warped, content, certainty)


def _sequential_frames(settings, run, variables, frames, targets_of, done,
                       outputs, finish, record, checkpoint_plan) -> bool:
  """Frame after frame (Ruder et al.); returns whether interrupted.
  `checkpoint_plan(what, arrays, iterations)` gives a frame's checkpoint
  progress and the state it resumes from (see `run_video`)."""
  flow_lib = clip_frames.video_modules()[0]
  video = settings.video
  luminance = settings.color_control == 'luminance'
  for frame in frames:
    if frame.index < done:
      continue
    began = time.perf_counter()
    shape = frame.level.content.shape[:2]
    reference = _temporal_reference(frame, outputs, video.long_term, shape,
                                    flow_lib, luminance, video.warp)
    start = _start(settings, frame, reference, flow_lib)
    targets = targets_of(frame.level).replace(
        temporal=jax.tree_util.tree_map(np.asarray, reference))
    iterations = (video.first_iterations or settings.iterations
                  if frame.index == 0 else settings.iterations)
    progress, resume_from = checkpoint_plan(
        f'frame {frame.index + 1}',
        resume.level_arrays(frame.level) + list(reference.values()),
        iterations)
    level = loop.optimize_level(run, variables, frame.level,
                                [np.asarray(start, np.float32)], iterations,
                                (0, [0]), targets=[targets],
                                temporal_weight=video.temporal_weight,
                                progress=progress, resume_from=resume_from)
    if level.interrupted:
      return True
    image = images.to_uint8(finish(frame.level)(level.pixels[0]))
    record(_entry(level, 0, time.perf_counter() - began), frame, image)
  return False


def _joint_windows(settings, run, variables, frames, targets_of, done,
                   outputs, finish, record, checkpoint_plan) -> bool:
  """`video.window` frames at a time as one problem; returns whether
  interrupted. A resumed run restarts at its window's first frame."""
  flow_lib = clip_frames.video_modules()[0]
  window = settings.video.window
  luminance = settings.color_control == 'luminance'
  batch = []
  for frame in frames:
    if frame.index < done - done % window:
      continue
    batch.append(frame)
    if len(batch) == window:
      if _one_window(settings, run, variables, batch, targets_of, outputs,
                     finish, record, flow_lib, luminance, checkpoint_plan):
        return True
      batch = []
  if batch:
    return _one_window(settings, run, variables, batch, targets_of, outputs,
                       finish, record, flow_lib, luminance, checkpoint_plan)
  return False


def _one_window(settings, run, variables, batch, targets_of, outputs, finish,
                record, flow_lib, luminance, checkpoint_plan) -> bool:
  """Optimises the frames of `batch` together (a short last window is
  padded with copies of its last frame, uncoupled, so the program stays
  the same)."""
  began = time.perf_counter()
  window = settings.video.window
  shape = batch[0].level.content.shape[:2]
  real = len(batch)
  padded = batch + [batch[-1]] * (window - real)
  reference = _temporal_reference(batch[0], outputs, (1,), shape, flow_lib,
                                  luminance, settings.video.warp)
  flows = np.zeros((window - 1,) + shape + (2,), np.float32)
  coupling = np.zeros((window - 1,) + shape, np.float32)
  for i in range(1, real):
    flows[i - 1], coupling[i - 1] = batch[i].references[1]
  starts = [np.asarray(_start(settings, batch[0], reference, flow_lib),
                       np.float32)]
  for i in range(1, window):
    frame = padded[i]
    if i >= real:  # padding: uncoupled, its result unused
      starts.append(starts[-1])
    elif settings.video.init == 'warped':  # the window's start, carried on
      starts.append(_fill(settings, flow_lib.warp(
          starts[-1], flows[i - 1], settings.video.warp, 'mirror'),
                          frame.level.content, coupling[i - 1], flow_lib,
                          frame.index))
    elif settings.video.init == 'content':
      starts.append(frame.level.content)
    else:
      starts.append(images.noise_image(settings.seed + frame.index,
                                       shape))
  per_frame = [targets_of(frame.level) for frame in padded]
  targets = per_frame[0].replace(
      content_features=jax.tree_util.tree_map(
          lambda *xs: np.stack([np.asarray(x) for x in xs]),
          *[t.content_features for t in per_frame]),
      temporal=dict(reference, flows=flows, neighbour_certainty=coupling))
  first_window = batch[0].index == 0
  iterations = (settings.video.first_iterations or settings.iterations
                if first_window else settings.iterations)
  progress, resume_from = checkpoint_plan(
      f'window {batch[0].index // window + 1}',
      [array for frame in batch for array in resume.level_arrays(frame.level)]
      + list(reference.values()) + [flows, coupling], iterations)
  level = loop.optimize_level(run, variables, batch[0].level,
                              [np.stack(starts).astype(np.float32)],
                              iterations, (0, [0]), targets=[targets],
                              temporal_weight=settings.video.temporal_weight,
                              progress=progress, resume_from=resume_from)
  if level.interrupted:
    return True
  elapsed = time.perf_counter() - began
  for i, frame in enumerate(batch):
    entry = _entry(level, 0, elapsed / real)
    entry['window'] = batch[0].index // window
    record(entry, frame, images.to_uint8(
        finish(frame.level)(level.pixels[0][i])))
  return False


def _entry(level, k, seconds) -> dict:
  return {'initial': level.initial[k], 'final': level.finals[k],
          'evaluations': int(level.evaluations[k]),
          'iterations_done': int(level.steps[k]),
          'stop_reason': descent.STOP_REASONS[int(level.stop_reasons[k])],
          'time_s': seconds}


def _record(manifest, settings, folder, flow_lib, progress, outputs, entry,
            frame: clip_frames.Frame, image, programs) -> None:
  """Writes a finished frame and the manifest (partial), measures flicker
  and detail."""
  index = frame.index
  pixels = image.astype(np.float32)
  if devices_lib.writes_outputs():
    images.save_image(os.path.join(folder, FRAME_NAME.format(index + 1)),
                      image)
  entry = dict(frame=index + 1, file=FRAME_NAME.format(index + 1), **entry,
               compilations=programs.compilations)
  entry['flicker'] = None
  if index - 1 in outputs and 1 in frame.references:
    backward, _ = frame.references[1]
    entry['flicker'] = {
        'output': flow_lib.warping_error(pixels / 255, outputs[index - 1] / 255,
                                         backward, frame.certainty),
        'input': frame.input_flicker}
  output_detail = flow_lib.detail(pixels)
  first = output_detail
  if index:
    first = (manifest['frames'][0].get('detail') or {}).get('output')
  entry['detail'] = {'output': output_detail, 'input': frame.input_detail,
                     'output_to_first': _ratio(output_detail, first)}
  outputs[index] = pixels
  for old in [i for i in outputs if i <= index - max(
      settings.video.long_term)]:
    del outputs[old]
  manifest['frames'].append(entry)
  manifest['frames_done'] = len(manifest['frames'])
  if devices_lib.writes_outputs():
    manifest_lib.write_json(settings.manifest, manifest)
  progress.frame(index, entry, image)


def _flicker_summary(entries) -> dict:
  """Mean warping error over the frame pairs, of the output and the input."""
  def mean(key):
    values = [e['flicker'][key] for e in entries
              if e.get('flicker') and e['flicker'][key] is not None]
    return float(np.mean(values)) if values else None
  return {'output_mean': mean('output'), 'input_mean': mean('input'),
          'pairs': sum(1 for e in entries if e.get('flicker'))}


def _ratio(value, reference):
  return float(value / reference) if reference else None


def _detail_summary(entries) -> dict:
  """The detail of the first and last frames, its mean over the clip and
  the last frame's over the first's, of the output and the content."""
  entries = [e for e in entries if e.get('detail')]
  if not entries:
    return {}
  summary = {}
  for key in ('output', 'input'):
    values = [e['detail'][key] for e in entries]
    summary.update({f'{key}_first': values[0], f'{key}_last': values[-1],
                    f'{key}_mean': float(np.mean(values)),
                    f'{key}_last_to_first': _ratio(values[-1], values[0])})
  return summary


def _encode(video_write, folder, frame_count, output, fps, audio_from, size):
  """Encodes the frames, read back one at a time, into the clip."""
  with video_write.VideoWriter(output, fps, size,
                               audio_from=audio_from) as writer:
    for index in range(frame_count):
      writer.write(images.to_uint8(_load_frame(folder, index)))
