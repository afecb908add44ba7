#!/usr/bin/env python3
"""The pictures of docs/control.md: colour modes, regions, style losses and
paddings side by side, and the border effect of each padding.

  python scripts/control_figures.py [--out=docs] [--size=128] [--steps=150]
      [--weights=random]

Built-in images (`builtin:scene`, `builtin:painting`); with the default
--weights=random, seeded RANDOM untrained VGG19 weights, as every grid's
caption says. Writes OUT/control_colour.png, control_regions.png,
control_losses.png, control_padding.png and prints the border table as
Markdown.
"""

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import nst_jax  # pylint: disable=g-import-not-at-top
from nst_jax.core import color
from nst_jax.io import grids, images, scenes  # pylint: disable=g-import-not-at-top

BORDER = 4  # pixels of the outer ring the border table compares


def _grid(path, panels, labels, columns=None):
  images.save_image(path, grids.make_grid(panels, labels=labels,
                                          columns=columns))
  print(f'wrote {path}')


def colour_modes(fields, content, style):
  """Content, style and each `color_control`."""
  panels, labels = [content, style], ['content', 'style']
  for mode in color.COLOR_CONTROLS:
    panels.append(nst_jax.stylize(content, style, color_control=mode,
                                  **fields).image)
    labels.append(mode)
  return panels, labels


def regions(fields, content, styles):
  """Two regions: the top half takes the first style, the bottom the
  second."""
  height, width = content.shape[:2]
  top = np.zeros((height, width, 3), np.uint8)
  top[:height // 2] = 255
  result = nst_jax.stylize(content, list(styles),
                           content_masks=[top, 255 - top], **fields).image
  return ([content, top, 255 - top, *styles, result],
          ['content', 'mask 1', 'mask 2', 'style 1', 'style 2', 'result'])


def style_losses(fields, content, style):
  """Each `style_loss`, from noise (style only shows what each keeps)."""
  panels, labels = [style], ['style']
  for loss in ('gram', 'mean_std', 'mean_cov', 'sliced_wasserstein'):
    panels.append(nst_jax.stylize(content, style, style_loss=loss,
                                  **fields).image)
    labels.append(loss)
  return panels, labels


def border_difference(pixels) -> float:
  """Mean luminance of the outer `BORDER` pixels minus the interior's."""
  y = color.luminance(np.asarray(pixels, np.float64))
  inner = y[BORDER:-BORDER, BORDER:-BORDER]
  ring = (y.sum() - inner.sum()) / (y.size - inner.size)
  return float(ring - inner.mean())


def paddings(fields, content, style):
  """Each padding, and the border table's rows."""
  panels, labels, rows = [], [], []
  for padding in ('zeros', 'reflect', 'replicate'):
    image = nst_jax.stylize(content, style, padding=padding, **fields).image
    panels.append(image)
    labels.append(padding)
    rows.append((padding, border_difference(image)))
  return panels, labels, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'docs'))
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=150)
  parser.add_argument('--weights', default='random')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  fields = dict(image_size=args.size, iterations=args.steps,
                weights=args.weights, init='content', log_every=50,
                style_weight=1e-2)
  content = images.to_uint8(scenes.demo_content(args.size))
  style = images.to_uint8(scenes.demo_style(args.size))
  blue = style[..., ::-1].copy()  # the painting with red and blue swapped

  out = lambda name: os.path.join(args.out, f'control_{name}.png')
  _grid(out('colour'), *colour_modes(fields, content, style), columns=3)
  _grid(out('regions'), *regions(fields, content, (style, blue)), columns=3)
  noise_fields = dict(fields, init='noise', content_weight=0.0,
                      style_weight=1.0)
  _grid(out('losses'), *style_losses(noise_fields, content, style),
        columns=5)
  panels, labels, rows = paddings(dict(fields, init='noise'), content, style)
  _grid(out('padding'), panels, labels, columns=3)
  print(f'\n| padding | border minus interior luminance ({BORDER} px ring) |')
  print('|---|---|')
  print(f'| content image | {border_difference(content):+.1f} |')
  for padding, difference in rows:
    print(f'| {padding} | {difference:+.1f} |')


if __name__ == '__main__':
  main()
