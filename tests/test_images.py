"""Tests for nst_jax.io.images: loading, checking, saving and making images."""

import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from nst_jax.io import images, scenes
from nst_jax.errors import UserError


def _noise_u8(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _write(tmp_path, name, image, **options):
  path = str(tmp_path / name)
  image.save(path, **options)
  return path


def _load_error(path, **kwargs):
  with pytest.raises(UserError) as info:
    images.load_image(path, **kwargs)
  message = str(info.value)
  assert '\n' not in message
  return message


# ------------------------------------------------------------ bad files


def test_missing_file_names_file_and_what(tmp_path):
  path = str(tmp_path / 'nope.png')
  message = _load_error(path, what='style image')
  assert message == f'style image {path!r}: file not found'


def test_default_what_is_image(tmp_path):
  path = str(tmp_path / 'nope.png')
  assert _load_error(path).startswith(f'image {path!r}: ')


def test_directory(tmp_path):
  message = _load_error(str(tmp_path), what='content image')
  assert message.startswith('content image ')
  assert 'directory' in message


def test_unreadable_file(tmp_path, monkeypatch):
  path = _write(tmp_path, 'locked.png', Image.new('RGB', (4, 4)))
  os.chmod(path, 0)
  try:
    readable = os.access(path, os.R_OK)
    if readable:  # Running as root: chmod does not stop us, so fake it.
      def deny(*args, **kwargs):
        raise PermissionError(13, 'Permission denied', path)
      monkeypatch.setattr(images, 'open', deny, raising=False)
    message = _load_error(path)
  finally:
    os.chmod(path, 0o644)
  assert message.startswith(f'image {path!r}: ')
  assert 'permission denied' in message


def test_empty_file(tmp_path):
  path = str(tmp_path / 'empty.jpg')
  open(path, 'wb').close()
  assert '0 bytes' in _load_error(path)


def test_text_file_named_png(tmp_path):
  path = str(tmp_path / 'notes.png')
  with open(path, 'w') as file:
    file.write('these are not pixels\n' * 20)
  assert 'not an image' in _load_error(path)


def test_truncated_png(tmp_path):
  path = _write(tmp_path, 'cut.png', Image.fromarray(_noise_u8(64, 64)))
  data = open(path, 'rb').read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  assert 'truncated or corrupt' in _load_error(path)


def test_truncated_jpeg_is_an_error_not_grey(tmp_path):
  path = _write(tmp_path, 'cut.jpg', Image.fromarray(_noise_u8(128, 128)),
                quality=90)
  data = open(path, 'rb').read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  assert 'truncated or corrupt' in _load_error(path)


def test_truncated_detected_even_if_pil_told_to_allow_it(tmp_path,
                                                          monkeypatch):
  monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
  path = _write(tmp_path, 'cut.jpg', Image.fromarray(_noise_u8(128, 128)))
  data = open(path, 'rb').read()
  with open(path, 'wb') as file:
    file.write(data[:len(data) // 2])
  assert 'truncated' in _load_error(path)
  assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # Restored afterwards.


def _png_chunk(kind, data):
  return (struct.pack('>I', len(data)) + kind + data
          + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))


def _bomb_png(width, height):
  """A valid-looking PNG of a few dozen bytes that declares width x height."""
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
          + _png_chunk(b'IDAT', zlib.compress(b'\0' * 64))
          + _png_chunk(b'IEND', b''))


def test_decompression_bomb_refused_from_header(tmp_path):
  path = str(tmp_path / 'bomb.png')
  with open(path, 'wb') as file:
    file.write(_bomb_png(100000, 100000))
  assert os.path.getsize(path) < 200
  start = time.perf_counter()
  message = _load_error(path)
  assert time.perf_counter() - start < 0.5  # Nothing was decoded.
  assert '10000000000 pixels' in message
  assert f'limit of {images.MAX_PIXELS} pixels' in message


def test_max_pixels_checked_before_decoding(tmp_path):
  # Declares 3000 x 2000, within PIL's own limit; ours must catch it with
  # the declared size, without touching the (bogus) pixel data.
  path = str(tmp_path / 'big.png')
  with open(path, 'wb') as file:
    file.write(_bomb_png(3000, 2000))
  message = _load_error(path, max_pixels=1_000_000, what='style image')
  assert message.startswith('style image ')
  assert '3000x2000' in message and 'limit of 1000000 pixels' in message


def test_max_pixels_allows_images_at_the_limit(tmp_path):
  path = _write(tmp_path, 'ok.png', Image.new('RGB', (100, 50)))
  assert images.load_image(path, max_pixels=5000).shape == (50, 100, 3)
  assert '100x50' in _load_error(path, max_pixels=4999)


# ------------------------------------------------------ modes and sizes


def test_rgb_png_exact(tmp_path):
  raw = _noise_u8(20, 30)
  pixels = images.load_image(_write(tmp_path, 'a.png', Image.fromarray(raw)))
  assert pixels.dtype == np.float32 and pixels.shape == (20, 30, 3)
  np.testing.assert_array_equal(pixels, raw)


def test_grayscale_l(tmp_path):
  grey = np.array([[0, 100, 255]], np.uint8)
  pixels = images.load_image(_write(tmp_path, 'g.png', Image.fromarray(grey)))
  assert pixels.shape == (1, 3, 3)
  np.testing.assert_array_equal(pixels[0, :, 0], [0, 100, 255])
  np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_grayscale_alpha_on_white(tmp_path):
  image = Image.new('LA', (3, 1))
  image.putdata([(0, 0), (0, 255), (0, 128)])
  pixels = images.load_image(_write(tmp_path, 'la.png', image))
  np.testing.assert_array_equal(pixels[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(pixels[0, 1], [0, 0, 0])
  np.testing.assert_allclose(pixels[0, 2], 127, atol=1)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  raw = np.array([[0, 32768, 65535]], np.uint16)
  image = Image.fromarray(raw)
  assert image.mode == 'I;16'
  pixels = images.load_image(_write(tmp_path, 'deep.png', image))
  np.testing.assert_allclose(pixels[0, :, 1], [0, 127.5, 255], atol=0.01)


def test_32_bit_int_mode_i_treated_as_16_bit(tmp_path):
  image = Image.fromarray(np.array([[0, 65535, 13107]], np.int32))
  assert image.mode == 'I'
  pixels = images.load_image(_write(tmp_path, 'i.tif', image))
  np.testing.assert_allclose(pixels[0, :, 0], [0, 255, 51], atol=0.01)


def test_float_mode_f_from_0_1(tmp_path):
  image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
  pixels = images.load_image(_write(tmp_path, 'f.tif', image))
  np.testing.assert_allclose(pixels[0, :, 2], [0, 127.5, 255], atol=0.01)


def test_one_bit_mode(tmp_path):
  image = Image.new('1', (2, 1))
  image.putpixel((1, 0), 1)
  pixels = images.load_image(_write(tmp_path, 'bw.png', image))
  np.testing.assert_array_equal(pixels[0], [[0, 0, 0], [255, 255, 255]])


def test_palette(tmp_path):
  image = Image.new('P', (2, 1))
  image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
  image.putdata([0, 1])
  pixels = images.load_image(_write(tmp_path, 'p.png', image))
  np.testing.assert_array_equal(pixels[0], [[255, 0, 0], [0, 0, 255]])


def test_palette_with_transparency_on_white(tmp_path):
  image = Image.new('P', (2, 1))
  image.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
  image.putdata([0, 1])
  path = _write(tmp_path, 'pt.png', image, transparency=1)
  pixels = images.load_image(path)
  np.testing.assert_array_equal(pixels[0], [[255, 0, 0], [255, 255, 255]])


def test_palette_gif_with_transparency(tmp_path):
  image = Image.new('P', (2, 1))
  image.putpalette([0, 128, 0, 0, 0, 0] + [0] * 762)
  image.putdata([0, 1])
  path = _write(tmp_path, 'pt.gif', image, transparency=1)
  pixels = images.load_image(path)
  np.testing.assert_array_equal(pixels[0], [[0, 128, 0], [255, 255, 255]])


def test_rgba_composited_on_white(tmp_path):
  image = Image.new('RGBA', (3, 1))
  image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
  pixels = images.load_image(_write(tmp_path, 'rgba.png', image))
  np.testing.assert_array_equal(pixels[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(pixels[0, 1], [255, 0, 0])
  np.testing.assert_allclose(pixels[0, 2], [127, 127, 127], atol=1)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
  image = Image.new('CMYK', (16, 16), (0, 255, 255, 0))  # Pure red ink.
  path = _write(tmp_path, 'cmyk.jpg', image)
  with Image.open(path) as check:
    assert check.mode == 'CMYK'
  pixels = images.load_image(path)
  assert pixels.shape == (16, 16, 3)
  np.testing.assert_allclose(pixels.mean(axis=(0, 1)), [255, 0, 0], atol=12)


def test_exif_orientation_applied(tmp_path):
  # Stored 40 wide, 20 high, red in the stored top-left corner. Orientation 6
  # says: rotate 90 degrees clockwise to show, so it is 20 wide, 40 high,
  # with the red corner at the top right.
  raw = np.zeros((20, 40, 3), np.uint8)
  raw[..., 2] = 255
  raw[:8, :8] = (255, 0, 0)
  exif = Image.Exif()
  exif[0x0112] = 6
  path = _write(tmp_path, 'phone.jpg', Image.fromarray(raw), exif=exif,
                quality=95)
  pixels = images.load_image(path)
  assert pixels.shape == (40, 20, 3)
  np.testing.assert_allclose(pixels[2, 17], [255, 0, 0], atol=40)
  np.testing.assert_allclose(pixels[2, 2], [0, 0, 255], atol=40)
  np.testing.assert_allclose(pixels[37, 17], [0, 0, 255], atol=40)


def test_one_pixel_image(tmp_path):
  path = _write(tmp_path, 'dot.png', Image.new('RGB', (1, 1), (1, 2, 3)))
  np.testing.assert_array_equal(images.load_image(path), [[[1, 2, 3]]])
  assert images.load_image(path, image_size=1).shape == (1, 1, 3)
  assert images.load_image(path, image_size=5).shape == (5, 5, 3)


def test_image_size_already_longest_side_is_bit_exact(tmp_path):
  raw = _noise_u8(40, 64, seed=3)
  path = _write(tmp_path, 'exact.png', Image.fromarray(raw))
  np.testing.assert_array_equal(images.load_image(path, image_size=64), raw)


def test_resize_on_load_keeps_aspect_ratio_and_colour(tmp_path):
  path = _write(tmp_path, 'wide.png', Image.new('RGB', (300, 200),
                                               (10, 200, 90)))
  pixels = images.load_image(path, image_size=150)
  assert pixels.shape == (100, 150, 3)
  np.testing.assert_allclose(pixels, np.broadcast_to([10, 200, 90],
                                                     pixels.shape), atol=0.01)
  assert images.load_image(path, image_size=600).shape == (400, 600, 3)


def test_very_wide_panorama(tmp_path):
  path = _write(tmp_path, 'pano.png', Image.new('RGB', (4000, 20), 'white'))
  assert images.load_image(path, image_size=64).shape == (1, 64, 3)
  tall = _write(tmp_path, 'tall.png', Image.new('RGB', (20, 4000)))
  assert images.load_image(tall, image_size=64).shape == (64, 1, 3)


# ----------------------------------------------------------- resizing


@pytest.mark.parametrize('shape, size, expected', [
    ((200, 300), 150, (100, 150)),
    ((300, 200), 150, (150, 100)),
    ((20, 4000), 64, (1, 64)),
    ((64, 32), 64, (64, 32)),
    ((1, 1), 5, (5, 5)),
    ((3, 5), 2, (1, 2)),     # 1.2 rounds down.
    ((100, 50), 3, (3, 2)),  # 1.5 rounds up.
])
def test_fit_longest_side(shape, size, expected):
  assert images.fit_longest_side(shape, size) == expected


def test_fit_longest_side_rejects_zero():
  with pytest.raises(ValueError):
    images.fit_longest_side((10, 10), 0)


def test_resize_keeps_float_precision():
  flat = np.full((30, 40, 3), 100.25, np.float32)
  out = images.resize(flat, (15, 20))
  assert out.dtype == np.float32 and out.shape == (15, 20, 3)
  np.testing.assert_allclose(out, 100.25, atol=1e-3)  # uint8 would give 100.


def test_resize_clips_lanczos_overshoot_and_keeps_channels():
  pixels = np.zeros((16, 16, 3), np.float32)
  pixels[:, 8:, 0] = 255  # A hard edge, red channel only.
  out = images.resize(pixels, (32, 32))
  assert out.min() >= 0 and out.max() <= 255
  assert out[:, 20:, 0].min() > 250 and out[..., 1:].max() == 0


# -------------------------------------------------------------- saving


def test_save_png_round_trip_clips_and_rounds(tmp_path):
  pixels = np.random.default_rng(0).uniform(-20, 280, (9, 7, 3))
  pixels[0, 0, 0] = np.nan
  path = str(tmp_path / 'out.png')
  images.save_image(path, pixels)
  expected = np.round(np.clip(np.nan_to_num(pixels), 0, 255))
  np.testing.assert_array_equal(images.load_image(path), expected)
  assert os.listdir(tmp_path) == ['out.png']


@pytest.mark.parametrize('name', ['out.jpg', 'out.JPEG', 'out.webp',
                                  'out.bmp', 'out.tif'])
def test_save_other_formats(tmp_path, name):
  content = scenes.demo_content(64)
  path = str(tmp_path / name)
  images.save_image(path, content)
  # Lossy WebP always halves the chroma resolution, hence the tolerance.
  assert np.abs(images.load_image(path) - content).mean() < 5
  with Image.open(path) as saved:
    assert saved.format == Image.registered_extensions()[
        os.path.splitext(name)[1].lower()]


def test_save_into_missing_folder_raises_and_leaves_nothing(tmp_path):
  path = tmp_path / 'missing' / 'out.png'
  with pytest.raises(UserError, match='out.png'):
    images.save_image(path, np.zeros((2, 2, 3)))
  assert os.listdir(tmp_path) == []


def test_save_unknown_extension(tmp_path):
  with pytest.raises(UserError, match='unknown image extension'):
    images.save_image(tmp_path / 'out.xyz', np.zeros((2, 2, 3)))
  assert os.listdir(tmp_path) == []


def test_save_rejects_wrong_shape(tmp_path):
  with pytest.raises(ValueError):
    images.save_image(tmp_path / 'out.png', np.zeros((2, 2)))
  assert os.listdir(tmp_path) == []


def _failing_save(exception):
  def save(self, fp, *args, **kwargs):
    fp.write(b'\x89PNG partial data')
    raise exception
  return save


@pytest.mark.parametrize('exception, raised', [
    (OSError(28, 'No space left on device'), UserError),
    (RuntimeError('encoder crashed'), RuntimeError),
])
def test_failed_save_keeps_old_file_and_no_temp(tmp_path, monkeypatch,
                                                exception, raised):
  path = str(tmp_path / 'out.png')
  images.save_image(path, np.full((4, 4, 3), 7.0))
  monkeypatch.setattr(Image.Image, 'save', _failing_save(exception))
  with pytest.raises(raised) as info:
    images.save_image(path, np.full((4, 4, 3), 200.0))
  monkeypatch.undo()
  if raised is UserError:
    assert 'No space left' in str(info.value)
  assert os.listdir(tmp_path) == ['out.png']
  np.testing.assert_array_equal(images.load_image(path), 7)


def test_save_overwrites_in_place(tmp_path):
  path = str(tmp_path / 'out.png')
  images.save_image(path, np.zeros((4, 4, 3)))
  images.save_image(path, np.full((6, 5, 3), 255.0))
  pixels = images.load_image(path)
  assert pixels.shape == (6, 5, 3) and pixels.min() == 255
  assert os.listdir(tmp_path) == ['out.png']


def test_saved_file_has_normal_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    path = str(tmp_path / 'out.png')
    images.save_image(path, np.zeros((2, 2, 3)))
  finally:
    os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o644  # Not mkstemp's 0o600.


# ------------------------------------------------------- making images


def test_noise_image():
  a = images.noise_image(0, (64, 48))
  assert a.dtype == np.float32 and a.shape == (64, 48, 3)
  np.testing.assert_array_equal(a, images.noise_image(0, (64, 48)))
  assert not np.array_equal(a, images.noise_image(1, (64, 48)))
  assert a.min() >= 0 and a.max() <= 255
  assert abs(a.mean() - 127.5) < 3 and abs(a.std() - 255 / 12**0.5) < 3
