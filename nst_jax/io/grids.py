"""Figure grids: images tiled into one labelled picture, like the paper's.

`make_grid` lays panels out row by row on white, with optional text under
each panel, left of each row and above each column, drawn in PIL's default
font. It is how sweeps and the figure scripts show several results at once.

Only numpy and PIL are used, no JAX.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nst_jax.io import images as images_lib


def make_grid(images: Sequence[np.ndarray],
              labels: Optional[Sequence[str]] = None,
              columns: Optional[int] = None,
              row_labels: Optional[Sequence[str]] = None,
              column_labels: Optional[Sequence[str]] = None,
              pad: int = 4) -> np.ndarray:
  """Tiles images into one labelled figure, like the paper's grids.

  Panels are laid out row by row on white; each cell is as large as the
  largest image, and smaller images are centred in theirs. Text is black, in
  PIL's default font; text wider than its space is cut with '...'.

  Args:
    images: pixel arrays (H, W, 3) in [0, 255], of any sizes.
    labels: optional text under each panel, one per image.
    columns: panels per row; defaults to len(column_labels) if given, else
      ceil(len(images) / len(row_labels)) if given, else ceil(sqrt(n)).
    row_labels: optional text left of each row.
    column_labels: optional text above each column.
    pad: white pixels between and around panels.

  Returns:
    float32 array (H, W, 3) in [0, 255].

  Raises:
    ValueError: for no images or label counts that do not match the grid.
  """
  panels = [images_lib.to_uint8(image) for image in images]
  count = len(panels)
  if not count:
    raise ValueError('make_grid needs at least one image')
  if columns is None:
    if column_labels:
      columns = len(column_labels)
    elif row_labels:
      columns = math.ceil(count / len(row_labels))
    else:
      columns = math.ceil(math.sqrt(count))
  columns = max(1, min(int(columns), count))
  rows = math.ceil(count / columns)
  if labels is not None and len(labels) != count:
    raise ValueError(f'{len(labels)} labels for {count} images')
  if row_labels is not None and len(row_labels) != rows:
    raise ValueError(f'{len(row_labels)} row labels for {rows} rows')
  if column_labels is not None and len(column_labels) != columns:
    raise ValueError(f'{len(column_labels)} column labels for {columns} '
                     'columns')

  font = ImageFont.load_default()
  line = _text_size(font, 'Ag|')[1]  # Height of a line of text.
  cell_w = max(panel.shape[1] for panel in panels)
  cell_h = max(panel.shape[0] for panel in panels)
  label_h = line + pad if labels else 0
  left = (max(_text_size(font, str(t))[0] for t in row_labels) + pad
          if row_labels else 0)
  top = line + pad if column_labels else 0
  step_x, step_y = cell_w + pad, cell_h + label_h + pad

  canvas = Image.new('RGB', (left + pad + columns * step_x,
                             top + pad + rows * step_y), 'white')
  draw = ImageDraw.Draw(canvas)
  for index, panel in enumerate(panels):
    row, col = divmod(index, columns)
    x, y = left + pad + col * step_x, top + pad + row * step_y
    h, w = panel.shape[:2]
    canvas.paste(Image.fromarray(panel),
                 (x + (cell_w - w) // 2, y + (cell_h - h) // 2))
    if labels:
      _draw_centred(draw, font, str(labels[index]), x, y + cell_h + pad // 2,
                    cell_w)
  for col, text in enumerate(column_labels or ()):
    _draw_centred(draw, font, str(text), left + pad + col * step_x, pad // 2,
                  cell_w)
  for row, text in enumerate(row_labels or ()):
    y = top + pad + row * step_y + (cell_h - line) // 2
    draw.text((pad // 2, y), str(text), fill='black', font=font)
  return np.asarray(canvas, dtype=np.float32)


def _text_size(font, text: str) -> tuple:
  """(width, height) in pixels of `text` drawn at the origin."""
  left, upper, right, lower = font.getbbox(text)
  return right - min(left, 0), lower


def _draw_centred(draw, font, text: str, x: int, y: int, width: int) -> None:
  """Draws `text` centred in the `width` pixels from `x`, cut with '...'
  to fit."""
  if _text_size(font, text)[0] > width:
    while text and _text_size(font, text + '...')[0] > width:
      text = text[:-1]
    text += '...'
  offset = max(0, (width - _text_size(font, text)[0]) // 2)
  draw.text((x + offset, y), text, fill='black', font=font)
