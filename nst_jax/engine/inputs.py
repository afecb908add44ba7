"""A run's inputs, read and checked: images and weights.

Images come as paths (or the built-in `builtin:scene`, `builtin:painting`),
PIL images or arrays; every form goes through the same decoding and
resizing, so a file and the array of its pixels give the same run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from nst_jax import weights as weights_lib
from nst_jax.core import color, vgg
from nst_jax.io import images, scenes
from nst_jax.errors import UserError

BUILTIN_IMAGES = {'builtin:scene': scenes.demo_content,
                  'builtin:painting': scenes.demo_style}


def read_image(source, image_size: int, what: str) -> np.ndarray:
  """Float32 RGB 0-255 pixels, longest side `image_size`, from a path, a
  built-in image's name, a PIL image or an H x W x 3 array."""
  if isinstance(source, Image.Image):
    return images.from_pil(source, image_size)
  if isinstance(source, (str, os.PathLike)):
    if source in BUILTIN_IMAGES:
      return BUILTIN_IMAGES[source](image_size)
    return images.load_image(source, image_size, what=what)
  return images.from_array(source, image_size, what=what)


def describe(source) -> str:
  """How a source is named in the manifest and in messages."""
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  if isinstance(source, Image.Image):
    return f'<PIL image {source.width}x{source.height}>'
  shape = getattr(source, 'shape', None)
  return f'<array {"x".join(map(str, shape))}>' if shape else '<array>'


def check_image_size(pixels, name, what, layers) -> None:
  """Refuses images too small for the deepest layer (after its poolings)."""
  needed = vgg.min_image_size(layers)
  height, width = pixels.shape[:2]
  if min(height, width) < needed:
    raise UserError(
        f'{what} {name!r}: {width}x{height} pixels is too small; layer '
        f'{vgg.deepest_layer(layers)} needs at least {needed}x{needed} '
        '(raise config.image_size or use shallower layers)')


@dataclasses.dataclass
class Level:
  """A level's inputs, at its image size.

  Attributes:
    content: the content the network sees (H, W, 3), 0-255.
    styles: {style key: the style the network sees}.
    colour_content: the content as read, for the colour modes that put its
      colours back on the result (`color.restore_chroma`).
    content_masks: (R, H, W) masks in [0, 1], one per region, or None.
    style_masks: [(H_k, W_k)] one per style of the regions, or None.
  """
  content: np.ndarray
  styles: dict
  colour_content: np.ndarray
  content_masks: Optional[np.ndarray] = None
  style_masks: Optional[list] = None


def read_level(settings, content_source, style_sources: dict, image_size,
               mask_sources=None) -> Level:
  """Content, styles and masks at one image size, checked and prepared.

  Args:
    settings: `settings.Settings`.
    content_source: see `read_image`.
    style_sources: {style key: source} of every style a member uses.
    image_size: the content's longest side; styles take `style_scale` of it.
    mask_sources: (content masks, style masks): sources as `read_image`
      takes them; default the settings' paths.
  Returns:
    A `Level`; with colour control the content and styles are those the
    network sees (luminance only, or the styles recoloured).
  """
  layers = settings.spec.layers
  content = read_image(content_source, image_size, 'content image')
  check_image_size(content, describe(content_source), 'content image',
                   layers)
  style_size = max(1, round(image_size * settings.style_scale))
  styles = {}
  for key, source in style_sources.items():
    styles[key] = read_image(source, style_size, 'style image')
    check_image_size(styles[key], key, 'style image',
                     settings.spec.style_layers or layers)
  content_mask_sources, style_mask_sources = mask_sources or (
      settings.content_masks, settings.style_masks)
  content_masks = style_masks = None
  if content_mask_sources:
    content_masks = np.stack([
        read_mask(source, content.shape[:2], 'content mask')
        for source in content_mask_sources])
    uncovered = int(np.sum(content_masks.sum(0) < 0.01))
    if uncovered:
      raise UserError(
          f'config.content_masks: the masks leave {uncovered} of '
          f'{content.shape[0] * content.shape[1]} pixels uncovered at '
          f'{content.shape[1]}x{content.shape[0]}; every pixel needs a '
          'region')
    style_images = [styles[key] for key in settings.styles]
    style_masks = [
        read_mask(source, style.shape[:2], 'style mask')
        for source, style in zip(style_mask_sources, style_images)] or None
  return Level(content=_network_content(settings, content),
               styles={key: _network_style(settings, style, content)
                       for key, style in styles.items()},
               colour_content=content, content_masks=content_masks,
               style_masks=style_masks)


def _network_content(settings, content):
  if settings.color_control == 'luminance':
    return color.luminance_only(content)
  return content


def _network_style(settings, style, content):
  """A style as the colour mode shows it to the network."""
  if settings.color_control == 'luminance':
    return color.luminance_only(
        style, content if settings.match_luminance else None)
  if settings.color_control == 'histogram':
    return color.match_histogram(style, content, settings.color_transform)
  return style


def read_mask(source, shape_hw, what: str) -> np.ndarray:
  """A mask image as (H, W) in [0, 1] at `shape_hw`: its luminance / 255
  (white = inside, grey = partly).

  Raises:
    UserError: an unreadable file, or another aspect ratio than `shape_hw`.
  """
  pixels = read_image(source, None, what)
  height, width = pixels.shape[:2]
  fitted = images.fit_longest_side((height, width), max(shape_hw))
  if max(abs(a - b) for a, b in zip(fitted, shape_hw)) > 1:
    raise UserError(
        f'{what} {describe(source)!r}: {width}x{height} has another aspect '
        f'ratio than the image it masks ({shape_hw[1]}x{shape_hw[0]})')
  pixels = images.resize(pixels, shape_hw)
  return np.clip(color.luminance(pixels) / 255.0, 0.0, 1.0).astype(
      np.float32)


def initial_pixels(settings, seed: int, content, styles: Sequence):
  """The starting image: noise, the content, the first style or init_image."""
  height, width = content.shape[:2]
  if settings.init == 'noise':
    return images.noise_image(seed, (height, width))
  if settings.init == 'content':
    return content
  if settings.init == 'style':
    return images.resize(styles[0], (height, width))
  start = read_image(settings.init_image, None, 'init image')
  return images.resize(start, (height, width))


def load_weights(settings, allow_random_fallback: bool, log):
  """The VGG19 parameters a run asked for (`weights_lib.resolve_weights`).

  Returns:
    (params, meta, path or None, warnings): warnings say loudly when the
    weights are random.
  """
  warnings = []

  def warn(message):
    warnings.append(message)
    log(message)
  params, meta, path = weights_lib.resolve_weights(
      settings.weights, allow_random_fallback=allow_random_fallback, log=warn)
  if meta.get('random') and not any('RANDOM' in w for w in warnings):
    warn('RESULTS USE RANDOM, UNTRAINED VGG19 WEIGHTS (seed '
         f'{meta.get("seed")}), not pretrained ones: see weights/README.md')
  return params, meta, path, warnings


def weights_manifest(meta: dict, path) -> dict:
  """The manifest's `weights` entry."""
  return {'path': path,
          'sha256': weights_lib.file_sha256(path) if path else None,
          'source': meta.get('source'),
          'source_sha256': meta.get('source_sha256'),
          'preprocessing': meta.get('preprocessing'),
          'normalized': bool(meta.get('normalized')),
          'random': bool(meta.get('random'))}
