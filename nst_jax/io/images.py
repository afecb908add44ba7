"""Image files and pixel arrays.

A pixel array here is always numpy float32 of shape (H, W, 3): RGB, values in
[0, 255]. `load_image` turns any image file PIL can read into one (checking
the file first, so a bad file is a one-line `UserError`, never a traceback or
a silently grey picture); `save_image` writes one back atomically. The rest
makes arrays: resizing, the white-noise start image, figure grids and two
demo images drawn by code so that the package runs without any files.

Only numpy and PIL are used, no JAX.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import struct
import warnings
import zlib
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFile, ImageFont, ImageOps

from nst_jax.io import files
from nst_jax.errors import UserError

# Most pixels `load_image` will decode: 2**26 = 67,108,864, e.g. 8192 x 8192.
# That is far more than style transfer can optimise (a 1024 x 1024 image
# already needs gigabytes of VGG activations), and the float32 array of such
# an image is 768 MiB. It is also below PIL's own warning threshold
# (Image.MAX_IMAGE_PIXELS, 89,478,485), so for the default limit our check is
# the one that decides. PIL refuses anything above 2 * Image.MAX_IMAGE_PIXELS
# before we see it; to load more than that, raise both limits.
MAX_PIXELS = 2**26

# What PIL's decoders raise on corrupt or truncated data. They are not
# consistent, so the list is broad; anything else is a bug and propagates.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError,
                  KeyError, TypeError, struct.error, zlib.error)

# Better than PIL's defaults (JPEG quality 75, 4:2:0 chroma), which visibly
# blur the fine colour texture that style transfer produces.
_SAVE_OPTIONS = {
    'JPEG': {'quality': 95, 'subsampling': 0},
    'WEBP': {'quality': 95},
}

_LANCZOS = Image.Resampling.LANCZOS


# ---------------------------------------------------------------- loading


def load_image(path, image_size: Optional[int] = None, *,
               max_pixels: int = MAX_PIXELS, what: str = 'image') -> np.ndarray:
  """Reads and checks an image file; returns its pixels as float32 RGB.

  Every mode PIL reads is converted to RGB: grey, 1-bit and palette images are
  expanded, 16-bit grey ('I;16', 'I') is scaled from 0-65535, float ('F') from
  0-1 (or clipped to 0-255 if it has larger values), CMYK converted, and
  anything with transparency (alpha channel or a transparent palette or colour
  entry) is composited onto white. The EXIF orientation of photos is applied.
  Animated files give their first frame.

  Args:
    path: the image file (str or os.PathLike).
    image_size: if given, the image is resized (Lanczos) so that its longest
      side is `image_size` pixels, keeping the aspect ratio (every side at
      least 1). An image whose longest side already is `image_size` is
      returned exactly as decoded, without resampling.
    max_pixels: images whose header declares more pixels are refused before
      any pixel is decoded (protection against decompression bombs).
    what: names the file in error messages, e.g. 'style image'.

  Returns:
    float32 array (H, W, 3), RGB, values in [0, 255].

  Raises:
    UserError: one line, `<what> '<path>': <problem>`, if the file is
      missing, a directory, unreadable, empty, not an image, truncated or
      corrupt, too large, or in a colour mode that cannot be converted.
  """
  path = os.fspath(path)

  def fail(problem):
    return UserError(f'{what} {path!r}: {problem}')

  try:
    info = os.stat(path)
  except FileNotFoundError:
    raise fail('file not found') from None
  except OSError as error:
    raise fail(f'cannot read it ({error.strerror})') from None
  if stat.S_ISDIR(info.st_mode):
    raise fail('is a directory, not an image file')
  if info.st_size == 0:
    raise fail('empty file (0 bytes)')

  try:
    file = open(path, 'rb')
  except PermissionError:
    raise fail('permission denied') from None
  except OSError as error:
    raise fail(f'cannot read it ({error.strerror})') from None

  with file, _strict_decoding():
    try:
      img = Image.open(file)  # Lazy: reads the header only.
    except Image.DecompressionBombError as error:
      raise fail(_bomb_message(error, max_pixels)) from None
    except Image.UnidentifiedImageError:
      raise fail('not an image file PIL can read') from None
    except _DECODE_ERRORS as error:
      raise fail(f'corrupt image header ({_describe(error)})') from None

    width, height = img.size
    if width < 1 or height < 1:
      raise fail(f'declares an empty image ({width}x{height} pixels)')
    if width * height > max_pixels:
      raise fail(f'declares {width}x{height} = {width * height} pixels, more '
                 f'than the limit of {max_pixels} pixels (refused before '
                 'decoding)')
    try:
      img.load()
    except Image.DecompressionBombError as error:
      raise fail(_bomb_message(error, max_pixels)) from None
    except _DECODE_ERRORS as error:
      raise fail(f'truncated or corrupt ({_describe(error)})') from None

  try:
    ImageOps.exif_transpose(img, in_place=True)
  except _DECODE_ERRORS:
    # A damaged EXIF block does not damage the pixels; like image viewers,
    # show the image as stored rather than refuse it.
    pass

  try:
    pixels = _to_rgb(img)
  except ValueError as error:
    raise fail(f'unsupported colour mode {img.mode!r} '
               f'({_describe(error)})') from None

  return fit(pixels, image_size)


def fit(pixels: np.ndarray, image_size: Optional[int]) -> np.ndarray:
  """`pixels` resized (Lanczos) so the longest side is `image_size`; as they
  are when it already is, or when `image_size` is None."""
  if image_size is not None:
    target = fit_longest_side(pixels.shape[:2], image_size)
    if target != pixels.shape[:2]:
      pixels = resize(pixels, target)
  return pixels


def from_pil(img: Image.Image, image_size: Optional[int] = None
             ) -> np.ndarray:
  """A PIL image's pixels as `load_image` gives them for its file: EXIF
  orientation applied, any mode to RGB, longest side fit to `image_size`."""
  img = ImageOps.exif_transpose(img)
  return fit(_to_rgb(img), image_size)


def from_array(array, image_size: Optional[int] = None, *,
               what: str = 'image') -> np.ndarray:
  """An H x W x 3 array as float32 RGB 0-255, fit to `image_size`.

  uint8 arrays hold 0-255; float arrays 0-1 (as matplotlib and most
  notebook code hold images).

  Raises:
    UserError: another shape, dtype or range, naming `what`.
  """
  array = np.asarray(array)
  if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
    raise UserError(f'{what}: expected an H x W x 3 array, got shape '
                    f'{array.shape}')
  if array.dtype == np.uint8:
    pixels = array.astype(np.float32)
  elif np.issubdtype(array.dtype, np.floating):
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
      raise UserError(f'{what}: a float array must hold values in [0, 1] '
                      f'(or pass uint8 0-255), got {array.min():.3g} to '
                      f'{array.max():.3g}')
    pixels = (array * 255.0).astype(np.float32)
  else:
    raise UserError(f'{what}: expected uint8 (0-255) or float (0-1) pixels, '
                    f'got {array.dtype}')
  return fit(pixels, image_size)


@contextlib.contextmanager
def _strict_decoding():
  """Makes PIL raise on truncated files instead of filling them with grey.

  `ImageFile.LOAD_TRUNCATED_IMAGES` is a process-wide switch that is False
  unless some other code turned it on; a cut-off JPEG must still be an error.
  """
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with warnings.catch_warnings():
      # Only warns between PIL's thresholds; `max_pixels` has decided already.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _bomb_message(error: Exception, max_pixels: int) -> str:
  """The message for PIL's own refusal, which fires inside Image.open."""
  match = re.search(r'\((\d+) pixels\)', str(error))
  if not match:
    return f'too many pixels ({error})'
  # PIL only refuses above its own limit, so the image exceeds both.
  limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
  return (f'declares {match.group(1)} pixels, more than the limit of {limit} '
          'pixels (refused before decoding)')


def _describe(error: Exception) -> str:
  return str(error).splitlines()[0] if str(error) else type(error).__name__


def _to_rgb(img: Image.Image) -> np.ndarray:
  """Any PIL mode -> float32 (H, W, 3) RGB in [0, 255]."""
  if img.mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I'):
    # 16-bit grey (PNG gives 'I;16', some TIFFs 'I'). PIL's convert('L')
    # clips these at 255 instead of scaling, so scale here.
    grey = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
    return _grey_to_rgb(np.clip(grey, 0.0, 255.0))
  if img.mode == 'F':
    grey = np.nan_to_num(np.asarray(img, dtype=np.float32))
    if grey.size and grey.max() <= 1.0:
      grey = grey * 255.0  # Float images conventionally hold 0-1.
    return _grey_to_rgb(np.clip(grey, 0.0, 255.0))
  if img.mode in ('La', 'RGBa'):  # Premultiplied alpha: undo it first.
    img = img.convert('RGBA')
  if 'A' in img.getbands() or 'transparency' in img.info:
    rgba = np.asarray(img.convert('RGBA'), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    # Transparent means "nothing painted here": composite onto white paper.
    return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
  return np.asarray(img.convert('RGB'), dtype=np.float32)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
  return np.repeat(grey.astype(np.float32)[..., None], 3, axis=2)


# ----------------------------------------------------------------- saving


def save_image(path, pixels: np.ndarray) -> None:
  """Writes a pixel array to an image file, atomically.

  The pixels are clipped to [0, 255] (NaN becomes 0), rounded and written as
  8-bit RGB in the format of the file extension (.png, .jpg/.jpeg, .webp,
  .bmp, .tif, ... anything PIL writes; JPEG and WebP at quality 95). The data
  go to a temporary file in the same folder that then replaces `path` in one
  step, so readers see either the old file or the complete new one, and a
  failed save leaves no file behind and an existing file untouched.

  Args:
    path: the output file (str or os.PathLike); its folder must exist.
    pixels: array (H, W, 3), RGB, values in [0, 255] (any numeric dtype).

  Raises:
    UserError: for an unknown extension or when the file cannot be written
      (missing folder, permission, disk full).
    ValueError: if `pixels` is not an (H, W, 3) array.
  """
  path = os.fspath(path)
  image = Image.fromarray(to_uint8(pixels))
  extension = os.path.splitext(path)[1].lower()
  image_format = Image.registered_extensions().get(extension)
  if image_format is None or image_format not in Image.SAVE:
    raise UserError(f'output image {path!r}: unknown image extension '
                    f'{extension!r} (use .png, .jpg, ...)')

  try:
    files.atomic_write(path, lambda file: image.save(
        file, format=image_format, **_SAVE_OPTIONS.get(image_format, {})))
  except OSError as error:
    raise UserError(f'output image {path!r}: cannot write it '
                    f'({error.strerror})') from None


def to_uint8(pixels) -> np.ndarray:
  """(H, W, 3) pixels in [0, 255] -> uint8, as saved (NaN 0, clipped,
  rounded)."""
  pixels = np.asarray(pixels)
  if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
    raise ValueError(f'expected pixels of shape (H, W, 3), got {pixels.shape}')
  pixels = np.nan_to_num(pixels.astype(np.float32), nan=0.0)
  return np.round(np.clip(pixels, 0.0, 255.0)).astype(np.uint8)


# ---------------------------------------------------------------- resizing


def fit_longest_side(shape_hw: Sequence[int], image_size: int) -> tuple:
  """The size that gives an image the longest side `image_size`.

  Args:
    shape_hw: the current (height, width).
    image_size: the wanted longest side, >= 1.

  Returns:
    (height, width) with max(height, width) == image_size, the aspect ratio
    kept (the shorter side rounded to nearest, halves up), every side >= 1.
    The input shape itself if its longest side already is `image_size`.

  Raises:
    ValueError: if image_size < 1 or a side of shape_hw is < 1.
  """
  height, width = (int(side) for side in shape_hw)
  image_size = int(image_size)
  if image_size < 1 or height < 1 or width < 1:
    raise ValueError(f'need positive sizes, got shape {tuple(shape_hw)} and '
                     f'image_size {image_size}')
  longest = max(height, width)

  def scale(side):
    # Integer arithmetic: exact, and the longest side maps to image_size.
    return max(1, (2 * side * image_size + longest) // (2 * longest))

  return scale(height), scale(width)


def resize(pixels: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
  """Resizes a pixel array with Lanczos filtering, in float precision.

  Each channel is resampled as a 32-bit float PIL image, so no precision is
  lost to 8-bit rounding; Lanczos overshoot at edges is clipped to [0, 255].

  Args:
    pixels: array (H, W, 3), values in [0, 255].
    size_hw: the new (height, width), each >= 1.

  Returns:
    float32 array (height, width, 3) in [0, 255] (a copy when the size is
    unchanged).
  """
  pixels = np.asarray(pixels, dtype=np.float32)
  height, width = (int(side) for side in size_hw)
  if pixels.ndim != 3 or pixels.shape[2] != 3:
    raise ValueError(f'expected pixels of shape (H, W, 3), got {pixels.shape}')
  if height < 1 or width < 1:
    raise ValueError(f'size must be positive, got {tuple(size_hw)}')
  if (height, width) == pixels.shape[:2]:
    return pixels.copy()
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]))
                 .resize((width, height), _LANCZOS))
      for c in range(3)
  ]
  return np.clip(np.stack(channels, axis=-1), 0.0, 255.0).astype(np.float32)


# -------------------------------------------------------- making images


def noise_image(seed: int, shape_hw: Sequence[int]) -> np.ndarray:
  """White noise, the start image of Gatys et al.

  Every pixel and channel is independent and uniform in [0, 255], drawn from
  numpy's default generator (PCG64), so a seed gives the same image on every
  machine and numpy version.

  Args:
    seed: the random seed (int).
    shape_hw: (height, width).

  Returns:
    float32 array (height, width, 3) in [0, 255].
  """
  height, width = (int(side) for side in shape_hw)
  rng = np.random.default_rng(seed)
  return rng.uniform(0.0, 255.0, size=(height, width, 3)).astype(np.float32)


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
  panels = [to_uint8(image) for image in images]
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
  left, upper, right, lower = font.getbbox(text)
  return right - min(left, 0), lower


def _draw_centred(draw, font, text: str, x: int, y: int, width: int) -> None:
  if _text_size(font, text)[0] > width:
    while text and _text_size(font, text + '...')[0] > width:
      text = text[:-1]
    text += '...'
  offset = max(0, (width - _text_size(font, text)[0]) // 2)
  draw.text((x + offset, y), text, fill='black', font=font)


# ------------------------------------------------------------- demo images

# Drawn at this multiple of the requested size, then downsampled, so that
# edges are anti-aliased.
_SUPERSAMPLE = 4


def demo_content(size: int = 128) -> np.ndarray:
  """A landscape drawn by code: sky, sun, mountains, hills, house and tree.

  Deterministic, needs no files, and has what a content image needs: large
  shapes with clear edges and some small detail (windows, door, branches).

  Args:
    size: side of the square image, >= 1.

  Returns:
    float32 array (size, size, 3) in [0, 255].
  """
  s = _SUPERSAMPLE * _check_size(size)

  def xy(*points):  # Fractions of the image -> supersampled pixels.
    return [(round(x * s), round(y * s)) for x, y in zip(points[::2],
                                                          points[1::2])]

  # Sky: deep blue at the top to pale warm yellow at the horizon.
  t = np.linspace(0.0, 1.0, s)[:, None, None]
  top, horizon = np.array([40, 90, 170]), np.array([250, 215, 160])
  sky = (1 - t) * top + t * horizon
  canvas = Image.fromarray(np.broadcast_to(sky, (s, s, 3)).astype(np.uint8))
  draw = ImageDraw.Draw(canvas)

  # Sun with a soft halo, low over the mountains.
  for radius, colour in ((0.13, (252, 226, 150)), (0.10, (255, 236, 170)),
                         (0.075, (255, 250, 215))):
    draw.ellipse(xy(0.72 - radius, 0.30 - radius, 0.72 + radius,
                    0.30 + radius), fill=colour)
  # Clouds.
  for cx, cy, w in ((0.22, 0.14, 0.16), (0.30, 0.12, 0.12),
                    (0.52, 0.20, 0.10), (0.60, 0.19, 0.08)):
    draw.ellipse(xy(cx - w, cy - w * 0.3, cx + w, cy + w * 0.3),
                 fill=(245, 245, 250))
  # Far mountains with snow caps, then nearer green hills.
  draw.polygon(xy(0, 0.55, 0.12, 0.38, 0.22, 0.47, 0.36, 0.30, 0.52, 0.50,
                  0.66, 0.40, 0.82, 0.52, 0.93, 0.42, 1, 0.48, 1, 0.62,
                  0, 0.62), fill=(105, 110, 150))
  draw.polygon(xy(0.36, 0.30, 0.31, 0.36, 0.34, 0.35, 0.37, 0.38, 0.41, 0.35),
               fill=(240, 242, 250))
  draw.polygon(xy(0.12, 0.38, 0.09, 0.42, 0.13, 0.41, 0.155, 0.415),
               fill=(240, 242, 250))
  draw.ellipse(xy(-0.3, 0.52, 0.7, 0.85), fill=(70, 140, 60))
  draw.ellipse(xy(0.4, 0.55, 1.4, 0.90), fill=(90, 155, 65))
  # Meadow and a path to the door.
  draw.rectangle(xy(0, 0.70, 1, 1), fill=(110, 170, 70))
  draw.polygon(xy(0.44, 0.80, 0.52, 0.80, 0.62, 1, 0.36, 1),
               fill=(200, 170, 120))

  # House: wall, roof, chimney, door and two cross-framed windows.
  draw.rectangle(xy(0.30, 0.56, 0.66, 0.80), fill=(235, 225, 200),
                 outline=(60, 45, 40), width=s // 128 or 1)
  draw.rectangle(xy(0.56, 0.40, 0.61, 0.52), fill=(120, 60, 50))
  draw.polygon(xy(0.26, 0.57, 0.48, 0.40, 0.70, 0.57), fill=(180, 50, 40),
               outline=(90, 25, 20))
  draw.rectangle(xy(0.44, 0.66, 0.52, 0.80), fill=(100, 60, 35))
  for x0 in (0.34, 0.56):
    draw.rectangle(xy(x0, 0.62, x0 + 0.07, 0.70), fill=(120, 180, 230),
                   outline=(255, 255, 255), width=s // 160 or 1)
    draw.line(xy(x0 + 0.035, 0.62, x0 + 0.035, 0.70), fill=(255, 255, 255),
              width=s // 200 or 1)
    draw.line(xy(x0, 0.66, x0 + 0.07, 0.66), fill=(255, 255, 255),
              width=s // 200 or 1)

  # Tree: trunk, two branches and a crown of overlapping leaf clusters.
  draw.rectangle(xy(0.81, 0.58, 0.85, 0.86), fill=(100, 65, 40))
  draw.line(xy(0.83, 0.68, 0.76, 0.58), fill=(100, 65, 40), width=s // 80 or 1)
  draw.line(xy(0.83, 0.66, 0.90, 0.57), fill=(100, 65, 40), width=s // 80 or 1)
  for cx, cy, r, colour in ((0.83, 0.45, 0.10, (40, 110, 45)),
                            (0.75, 0.53, 0.07, (50, 125, 50)),
                            (0.91, 0.53, 0.07, (45, 118, 48)),
                            (0.83, 0.55, 0.07, (60, 135, 55)),
                            (0.80, 0.42, 0.05, (75, 150, 65))):
    draw.ellipse(xy(cx - r, cy - r, cx + r, cy + r), fill=colour)
  # A few flowers in the meadow.
  for fx, fy in ((0.10, 0.86), (0.18, 0.92), (0.25, 0.83), (0.72, 0.92),
                 (0.90, 0.95), (0.08, 0.96)):
    draw.ellipse(xy(fx - 0.012, fy - 0.012, fx + 0.012, fy + 0.012),
                 fill=(250, 240, 90))
  return _downsample(canvas, size)


def demo_style(size: int = 128) -> np.ndarray:
  """An abstract painting drawn by code, to serve as a style image.

  Block colours, swirling brush strokes that follow a vortex flow field (a
  van Gogh-like texture), Kandinsky-like ringed circles and bold dark lines,
  in a saturated palette. Seeded, so always the same; the same composition at
  every size.

  Args:
    size: side of the square image, >= 1.

  Returns:
    float32 array (size, size, 3) in [0, 255].
  """
  s = _SUPERSAMPLE * _check_size(size)
  rng = np.random.default_rng(1913)  # Fixed: the image is part of the API.
  palette = np.array([(20, 40, 120), (35, 85, 170), (70, 140, 210),
                      (245, 200, 40), (250, 150, 30), (210, 50, 40),
                      (240, 235, 210), (30, 120, 110), (20, 20, 35)])
  canvas = Image.new('RGB', (s, s), (25, 50, 120))
  draw = ImageDraw.Draw(canvas)

  # Block colours under everything.
  for _ in range(7):
    x0, y0 = rng.uniform(-0.1, 0.8, 2) * s
    w, h = rng.uniform(0.2, 0.5, 2) * s
    draw.rectangle((x0, y0, x0 + w, y0 + h),
                   fill=tuple(palette[rng.integers(0, 6)]))

  # Brush strokes along a flow field made of a few vortices.
  vortices = rng.uniform(0.15, 0.85, (4, 2))
  spins = np.array([1.0, -1.0, 1.0, -1.0])

  def direction(p):
    v = np.zeros(2)
    for centre, spin in zip(vortices, spins):
      d = p - centre
      r2 = d @ d + 0.01
      v += spin * np.array([-d[1], d[0]]) / r2
    return v / (np.linalg.norm(v) + 1e-9)

  width = max(2, round(s / 45))
  for _ in range(900):
    p = rng.uniform(0, 1, 2)
    colour = palette[rng.choice(9, p=[.14, .2, .16, .16, .08, .06, .1, .06,
                                      .04])]
    colour = tuple(int(c) for c in np.clip(colour + rng.integers(-20, 21, 3),
                                           0, 255))
    points = [p]
    for _ in range(6):
      points.append(points[-1] + 0.01 * direction(points[-1]))
    pixels = [tuple(q * s) for q in points]
    draw.line(pixels, fill=colour, width=width, joint='curve')
    for q in (pixels[0], pixels[-1]):  # Round brush ends.
      draw.ellipse((q[0] - width / 2, q[1] - width / 2, q[0] + width / 2,
                    q[1] + width / 2), fill=colour)

  # Kandinsky circles: concentric rings with dark outlines.
  for _ in range(5):
    cx, cy = rng.uniform(0.1, 0.9, 2) * s
    radius = rng.uniform(0.06, 0.14) * s
    for k, fraction in enumerate((1.0, 0.7, 0.4)):
      r = radius * fraction
      draw.ellipse((cx - r, cy - r, cx + r, cy + r),
                   fill=tuple(palette[rng.integers(0, 8)]),
                   outline=(15, 15, 25), width=max(1, s // 180) if k == 0
                   else max(1, s // 300))
  # Bold dark lines and arcs across the composition.
  for _ in range(4):
    x0, y0, x1, y1 = rng.uniform(0, 1, 4) * s
    draw.line((x0, y0, x1, y1), fill=(15, 15, 25), width=max(1, s // 100))
  for _ in range(3):
    cx, cy = rng.uniform(0.2, 0.8, 2) * s
    r = rng.uniform(0.15, 0.3) * s
    start = rng.uniform(0, 360)
    draw.arc((cx - r, cy - r, cx + r, cy + r), start, start + 140,
             fill=(15, 15, 25), width=max(1, s // 120))
  return _downsample(canvas, size)


def _check_size(size) -> int:
  if int(size) != size or size < 1:
    raise ValueError(f'size must be a positive integer, got {size!r}')
  return int(size)


def _downsample(canvas: Image.Image, size: int) -> np.ndarray:
  return np.asarray(canvas.resize((size, size), _LANCZOS), dtype=np.float32)
