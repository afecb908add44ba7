"""The built-in images, drawn by code so that the package runs without files.

`demo_content` is a landscape (the `builtin:scene` content image) and
`demo_style` an abstract painting (the `builtin:painting` style image). Both
are deterministic, square, the same composition at every size, and drawn
supersampled, then downsampled with Lanczos filtering, so that edges are
anti-aliased.

Only numpy and PIL are used, no JAX.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

_LANCZOS = Image.Resampling.LANCZOS

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
  """`size` as an int; ValueError unless it is a positive integer."""
  if int(size) != size or size < 1:
    raise ValueError(f'size must be a positive integer, got {size!r}')
  return int(size)


def _downsample(canvas: Image.Image, size: int) -> np.ndarray:
  """The supersampled canvas at `size` x `size`, as float32 pixels."""
  return np.asarray(canvas.resize((size, size), _LANCZOS), dtype=np.float32)
