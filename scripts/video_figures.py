#!/usr/bin/env python3
"""Video: flicker of frames one by one against the temporal loss, and the
temporal weight study.

  python scripts/video_figures.py                   # docs/video_*.gif, .png
  python scripts/video_figures.py --study           # + the gamma and mode table

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
"""

import argparse
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
from nst_jax.io import images, scenes, video_write
# pylint: enable=g-import-not-at-top,wrong-import-position


def pan_clip(frames, size):
  """A window of `size` (h, w) panning right over the built-in scene."""
  height, width = size
  scene = scenes.demo_content(2 * width)  # square, larger than the window
  top = (scene.shape[0] - height) // 2
  return [scene[top:top + height, 3 * k:3 * k + width] for k in range(frames)]


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
  manifest = video.stylize_video(source, style, output, **fields)
  return manifest, time.perf_counter() - started


def strip(folder, count, step):
  """Every `step`-th frame side by side."""
  frames = [images.load_image(os.path.join(folder, video.FRAME_NAME.format(k)))
            for k in range(1, count + 1, step)]
  return np.concatenate(frames, axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image_size', type=int, default=96)
  parser.add_argument('--frames', type=int, default=12)
  parser.add_argument('--iterations', type=int, default=50)
  parser.add_argument('--first_iterations', type=int, default=150)
  parser.add_argument('--study', action='store_true')
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
                manifest['outputs']['frames'], video.FRAME_NAME.format(k))))
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
