"""Image files and pixel arrays.

A pixel array here is always numpy float32 of shape (H, W, 3): RGB, values in
[0, 255]. `load_image` turns any image file PIL can read into one (checking
the file first, so a bad file is a one-line `UserError`, never a traceback or
a silently grey picture); `save_image` writes one back atomically. The rest
converts and makes arrays: PIL images and other arrays in, 8-bit pixels out,
resizing and the white-noise start image. Figure grids are in
`nst_jax.io.grids`, the built-in images in `nst_jax.io.scenes`.

Only numpy and PIL are used, no JAX.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import warnings
import zlib
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps

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
