#!/usr/bin/env python3
"""Video: flicker of frames one by one against the temporal loss, and the
temporal weight study.

  python scripts/video_figures.py                   # docs/video_*.gif, .png
  python scripts/video_figures.py --study           # + the gamma and mode table
  python scripts/video_figures.py --detail          # + flicker and detail table

docs/ shows `--image_size=64 --frames=10 --iterations=30
--first_iterations=100`.

Two synthetic clips (no files needed): `pan`, a camera panning over the
built-in scene (3 px a frame), and `zoom`, the built-in painting growing 2%
a frame (motion in every direction, a border coming into view). Each is
stylised with the default config's losses and seeded random VGG19 weights
(not pretrained: the look is weak, the flicker numbers are what counts)
in three ways: frames one by one (`video.temporal_weight=0`,
`video.init=noise`, each frame from its own noise), the default
(`video.temporal_weight` as configured, warped starts) and
`video.mode='joint'`. Flicker is the manifest's mean temporal warping error
(values in [0, 1]; the input's own is the floor). `--study` adds the
temporal weights 0.1-10 and prints Markdown tables; figures are written to
docs/ (`--out`).

`--detail` prints flicker beside detail (`flow.detail`: the variance of the
Laplacian of luminance, which falls as frames wash out) for the three ways,
over the whole clip and over its first `--prefix` frames (each frame of a
sequential run, and each joint window, depends on the earlier frames only,
so these are the frames a clip of that length gives): the detail of the
last frames against frames one by one, against the run's own first frames,
and on `pan` the detail of the 16 columns where new content enters against
the 16 opposite ones.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from nst_jax import video
from nst_jax.engine import clip as clip_lib
from nst_jax.io import flow, images, scenes, video_write
# pylint: enable=g-import-not-at-top,wrong-import-position


PAN_STEP = 3  # pixels a frame
# The columns of `pan` where new content enters (its right edge), and the
# opposite ones, in `--detail`'s comparison.
STRIP = 16


def pan_clip(frames, size):
  """A window of `size` (h, w) panning right over the built-in scene."""
  height, width = size
  # Square, larger than the window and as large as the pan needs.
  scene = scenes.demo_content(max(2 * width,
                                  width + PAN_STEP * (frames - 1)))
  top = (scene.shape[0] - height) // 2
  return [scene[top:top + height, PAN_STEP * k:PAN_STEP * k + width]
          for k in range(frames)]


def zoom_clip(frames, size):
  """The built-in painting, 2% larger each frame, centred."""
  height, width = size
  painting = Image.fromarray(images.to_uint8(scenes.demo_style(2 * width)))
  clip = []
  for k in range(frames):
    scale = 1.02 ** k
    crop_w, crop_h = width * 1.5 / scale, height * 1.5 / scale
    cx, cy = painting.width / 2, painting.height / 2
    box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
    clip.append(np.asarray(painting.resize((width, height), Image.BICUBIC,
                                           box=box)))
  return clip


CLIPS = {'pan': pan_clip, 'zoom': zoom_clip}


def stylize(source, style, output, **fields):
  started = time.perf_counter()
  manifest = video.stylize_video(source, style, output, **fields).manifest
  return manifest, time.perf_counter() - started


def strip(folder, count, step):
  """Every `step`-th frame side by side."""
  frames = [images.load_image(os.path.join(
      folder, clip_lib.FRAME_NAME.format(k)))
            for k in range(1, count + 1, step)]
  return np.concatenate(frames, axis=1)


def tail_length(frames):
  """How many frames count as a clip's first and last: 5 of 20, 10 of 60."""
  return max(5, frames // 6)


def frame_details(folder, count):
  """Per frame, the detail of the whole frame, of its `STRIP` right columns
  (where `pan` brings new content in) and of its `STRIP` left ones."""
  details = []
  for k in range(1, count + 1):
    frame = images.load_image(os.path.join(
        folder, clip_lib.FRAME_NAME.format(k)))
    details.append((flow.detail(frame), flow.detail(frame[:, -STRIP:]),
                    flow.detail(frame[:, :STRIP])))
  return np.array(details)


def detail_measures(manifest, count, alone):
  """Flicker and detail over a run's first `count` frames.

  Args:
    manifest: the run's manifest.
    count: how many of its frames to measure.
    alone: the same measures of frames one by one (None for those).

  Returns:
    A dict of the table's columns.
  """
  entries = manifest['frames'][:count]
  tail = tail_length(count)
  flicker = float(np.mean([e['flicker']['output'] for e in entries[1:]]))
  details = frame_details(manifest['outputs']['frames'], count)
  last, first = details[-tail:, 0].mean(), details[:tail, 0].mean()
  content = [e['detail']['input'] for e in entries]
  return {
      'flicker': flicker, 'last': last,
      'flicker_vs_alone': flicker / alone['flicker'] if alone else 1.0,
      'detail_vs_alone': last / alone['last'] if alone else 1.0,
      'last_vs_first': last / first,
      'content_last_vs_first': (np.mean(content[-tail:])
                                / np.mean(content[:tail])),
      'strip': details[-tail:, 1].mean() / details[-tail:, 2].mean(),
      'seconds': sum(e['time_s'] for e in entries)}


def detail_study(args, work, style, size, base):
  """Flicker and detail of one by one, the defaults, joint windows and the
  `--variant`s, on `args.frames` frames and their first `args.prefix`."""
  first = {'first_iterations': args.first_iterations}
  variants = {'one by one': {'temporal_weight': 0.0, 'init': 'noise'},
              'default': {}}
  for text in args.variant:
    name, fields = text.split('=', 1)
    variants[name] = json.loads(fields)
  variants['joint, window 4'] = {'mode': 'joint', 'window': 4}
  rows, strips = [], []
  for clip_name, make in CLIPS.items():
    source = os.path.join(work, clip_name)
    os.makedirs(source)
    for k, frame in enumerate(make(args.frames, size)):
      images.save_image(os.path.join(source, f'{k:03d}.png'), frame)
    alone = {}
    for name, fields in variants.items():
      output = os.path.join(work, clip_name, 'out',
                            name.replace(' ', '_').replace(',', '') + '.gif')
      manifest, _ = stylize(source, style, output, **base,
                            video=dict(first, **fields))
      for count in sorted({args.prefix, args.frames}):
        measures = detail_measures(manifest, count, alone.get(count))
        if name == 'one by one':
          alone[count] = measures
        rows.append((clip_name, count, name, measures))
        print(clip_name, count, name, measures, file=sys.stderr)
      if clip_name == 'pan' and name in ('one by one', 'default'):
        strips.append(strip(manifest['outputs']['frames'], args.frames,
                            max(1, args.frames // 8)))
  if args.pictures:
    gap = np.full((4,) + strips[0].shape[1:], 255, np.uint8)
    images.save_image(os.path.join(args.out, 'video_detail.png'),
                      np.concatenate([strips[0], gap, strips[1]]).repeat(
                          2, axis=0).repeat(2, axis=1))
  print('| clip | frames | run | flicker | flicker / one by one | detail, '
        'last frames / one by one | detail, last / first frames | new '
        'strip / opposite edge | time s |')
  print('|---|---|---|---|---|---|---|---|---|')
  for clip_name, count, name, m in rows:
    strip_ratio = f'{m["strip"]:.2f}' if clip_name == 'pan' else '-'
    print(f'| {clip_name} | {count} | {name} | {m["flicker"]:.2e} | '
          f'{m["flicker_vs_alone"]:.3f} | {m["detail_vs_alone"]:.2f} | '
          f'{m["last_vs_first"]:.2f} (content {m["content_last_vs_first"]:.2f})'
          f' | {strip_ratio} | {m["seconds"]:.0f} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image_size', type=int, default=96)
  parser.add_argument('--frames', type=int, default=12)
  parser.add_argument('--iterations', type=int, default=50)
  parser.add_argument('--first_iterations', type=int, default=150)
  parser.add_argument('--study', action='store_true')
  parser.add_argument('--detail', action='store_true',
                      help='the flicker and detail table instead')
  parser.add_argument('--prefix', type=int, default=20,
                      help='--detail also measures the first this many frames')
  parser.add_argument('--variant', action='append', default=[],
                      help='--detail: NAME={"video field": value, ...}, a '
                      'run beside the defaults')
  parser.add_argument('--pictures', action='store_true',
                      help='--detail: write docs/video_detail.png')
  parser.add_argument('--lbfgs_pyramid', type=int, default=0,
                      help="L-BFGS's preconditioner levels (0: the config's)")
  parser.add_argument('--out', default=os.path.join(REPO, 'docs'))
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix='nst_jax_video_')
  style = os.path.join(work, 'style.png')
  images.save_image(style, scenes.demo_style(args.image_size))
  size = (args.image_size * 3 // 4, args.image_size)
  base = dict(weights='random', allow_random_weights=True,
              image_size=args.image_size, iterations=args.iterations,
              log_every=args.iterations, compilation_cache='')
  if args.lbfgs_pyramid:
    base['lbfgs_pyramid'] = args.lbfgs_pyramid
  if args.detail:
    detail_study(args, work, style, size, base)
    return
  variants = {'one by one': dict(video={'temporal_weight': 0.0,
                                        'init': 'noise',
                                        'first_iterations':
                                            args.first_iterations}),
              'default': dict(video={'first_iterations':
                                         args.first_iterations})}
  if args.study:
    for gamma in (0.1, 1.0, 3.0, 10.0):
      variants[f'temporal_weight={gamma:g}'] = dict(video={
          'temporal_weight': gamma, 'first_iterations': args.first_iterations})
    variants['joint, window 4'] = dict(video={
        'mode': 'joint', 'window': 4,
        'first_iterations': args.first_iterations})
  rows, strips = [], []
  for clip_name, make in CLIPS.items():
    source = os.path.join(work, clip_name)
    frames = make(args.frames, size)
    os.makedirs(source)
    for k, frame in enumerate(frames):
      images.save_image(os.path.join(source, f'{k:03d}.png'), frame)
    for name, fields in variants.items():
      output = os.path.join(work, clip_name, 'out',
                            name.replace(' ', '_').replace(',', '') + '.gif')
      manifest, seconds = stylize(source, style, output, **base, **fields)
      finals = [f['final'] for f in manifest['frames']]
      rows.append((clip_name, name, manifest['flicker']['output_mean'],
                   manifest['flicker']['input_mean'],
                   np.mean([f['content'] for f in finals[1:]]),
                   np.mean([f['style'] for f in finals[1:]]),
                   manifest['evaluations'], seconds))
      print(' | '.join(str(v) for v in rows[-1]), file=sys.stderr)
      if clip_name == 'pan' and name in ('one by one', 'default'):
        stem = 'video_' + name.replace(' ', '_')
        strips.append(strip(manifest['outputs']['frames'], args.frames, 3))
        with video_write.VideoWriter(os.path.join(args.out, stem + '.gif'),
                                  manifest['fps'], size[::-1]) as writer:
          for k in range(1, args.frames + 1):
            writer.write(images.load_image(os.path.join(
                manifest['outputs']['frames'], clip_lib.FRAME_NAME.format(k))))
  # One by one above the default, a white line between.
  gap = np.full((4,) + strips[0].shape[1:], 255, np.uint8)
  both = np.concatenate([strips[0], gap, strips[1]])
  # Twice the size, pixels kept sharp, so small frames can be seen.
  images.save_image(os.path.join(args.out, 'video_strips.png'),
                    both.repeat(2, axis=0).repeat(2, axis=1))
  print('| clip | run | flicker (output) | flicker (input) | content '
        '(frames 2+) | style (frames 2+) | evaluations | time s |')
  print('|---|---|---|---|---|---|---|---|')
  for clip_name, name, flicker, floor, content, style_loss, evals, secs in rows:
    print(f'| {clip_name} | {name} | {flicker:.2e} | {floor:.2e} | '
          f'{content:.4g} | {style_loss:.4g} | {evals} | {secs:.0f} |')


if __name__ == '__main__':
  main()
