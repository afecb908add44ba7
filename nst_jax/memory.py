"""How much device memory a run needs, estimated before anything compiles.

The estimate lets a run that cannot fit stop at once with advice, instead of
after minutes of compiling, and a run that fits go ahead. It is rough by
design (within tens of percent of XLA's own figures): it counts the large
buffers and nothing else.
"""

from __future__ import annotations

import os

import jax

from nst_jax import losses, optim, vgg, winograd
from nst_jax.errors import UserError


def estimate_bytes(height, width, spec: losses.LossSpec, optimizer: str,
                   shards: int = 1, lbfgs_memory: int = optim.LBFGS_MEMORY,
                   use_winograd: bool = False, members: int = 1,
                   batched: bool = False) -> int:
  """Rough peak bytes per device of one evaluation plus optimiser state.

  Counts (float32) each layer's activation up to the deepest layer three
  times (kept for the backward pass, its gradient, a temporary), all 16
  layers' weights, the pre-flipped kernels and, with `use_winograd`, the
  transforms of the layers that run (`vgg.prepare_variables`), and the
  optimiser's copies of the pixels (L-BFGS: two per curvature pair). With
  rows split over `shards` devices, each holds 1/shards of the activations
  and pixel copies and all of the weights. A device running `members`
  sweep members holds every member's optimiser state, and with `batched`
  (vmap) every member's activations too; one after another (map), one
  member's activations at a time.
  """
  activations = 0
  h, w, channels = height, width, 3
  for name in vgg.layers_to_run(spec.layers):
    if name.startswith('conv'):
      channels = vgg.CONV_SHAPES[name][1]
    else:
      h, w = h // 2, w // 2
    activations += h * w * channels
  pixel_copies = {'lbfgs': 2 * lbfgs_memory + 6,
                  'lbfgs_nols': 2 * lbfgs_memory + 4}.get(optimizer, 6)
  per_device = members * pixel_copies * height * width * 3 + 3 * activations * (
      members if batched else 1)
  return 4 * -(-per_device // shards) + variables_bytes(
      height, width, spec.layers, use_winograd)


def variables_bytes(height, width, layers, use_winograd: bool) -> int:
  """Bytes of `vgg.prepare_variables` for `layers` at one image size:
  all 16 layers' weights, plus the flipped kernels and, with
  `use_winograd`, the forward and backward transforms of the layers that
  run."""
  to_run = vgg.layers_to_run(layers)
  floats = sum(9 * cin * cout + cout for cin, cout in vgg.CONV_SHAPES.values())
  floats += sum(9 * cin * cout for name, (cin, cout) in vgg.CONV_SHAPES.items()
                if name in to_run)
  if use_winograd:  # (m + 2)^2 matrices per kernel, forward and backward.
    floats += sum(
        2 * winograd.tile_side(tile) ** 2 * cin * cout
        for name, tiles in vgg.winograd_tiles(
            vgg.CONV_SHAPES, [(height, width)], layers)
        for tile in tiles for cin, cout in [vgg.CONV_SHAPES[name]])
  return 4 * floats


def available_bytes() -> int:
  """This process's first device's memory limit (CPU: physical memory)."""
  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


ADVICE = ('use a smaller image_size, fewer L-BFGS pairs (lbfgs_memory; each '
          'holds two copies of the image), optimizer=adam, or shard_rows '
          'with more devices')


def check(settings, height, width, shards=1, use_winograd=False, members=1,
          batched=False) -> None:
  """Raises `UserError` when `estimate_bytes` exceeds the device's memory
  (or `settings.max_memory_gb`); `members` per device, `batched` under
  vmap."""
  needed = estimate_bytes(height, width, settings.spec, settings.optimizer,
                          shards, settings.lbfgs_memory, use_winograd,
                          members, batched)
  limit = (settings.max_memory_gb * 2**30 if settings.max_memory_gb
           else available_bytes())
  if needed > limit:
    raise UserError(
        f'config.image_size: {width}x{height}'
        + (f' with {members} sweep members per device' if members > 1
           else '') + f' needs about {needed / 2**30:.1f} GiB, more than '
        f'the {limit / 2**30:.1f} GiB available per device; {ADVICE}')
