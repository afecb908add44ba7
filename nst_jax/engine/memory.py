"""How much device memory a run needs, estimated before anything compiles.

The estimate lets a run that cannot fit stop at once with advice, instead of
after minutes of compiling, and a run that fits go ahead. It is rough by
design: it counts the large buffers and nothing else, with a margin over
what XLA's buffer assignment measured (`ACTIVATION_FACTOR`).

`fit` also chooses what makes a run fit: row strips (`nst_jax.core.strips`) when
the whole image's maps do not, and fewer L-BFGS pairs when even the strips
leave too little room for the history.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax

from nst_jax.core import losses, optimizers, strips, vgg, winograd
from nst_jax.errors import UserError

# XLA's temporary buffers for a compiled chunk of optimiser steps measured
# 1.0-1.4 times the maps `held_floats` counts (`memory_analysis()` on CPU at
# 1024 x 768 and 2048 x 1536, direct and Winograd convolutions, whole and
# in strips; the backward pass frees each layer's map as it goes, and the
# loop holds a little more than one evaluation alone); the rest is margin.
ACTIVATION_FACTOR = 1.5
# Fewer L-BFGS pairs than this are not worth running L-BFGS with.
LBFGS_MIN_PAIRS = 5


def _map_floats(height, width, layer) -> int:
  """Floats of one layer's output for an image of height x width."""
  h, w = vgg.feature_size(height, width, layer)
  return h * w * vgg.layer_channels(layer)


def held_floats(height, width, spec: losses.LossSpec) -> int:
  """Floats of the maps one evaluation holds at its peak.

  The whole image: every layer's output up to the deepest layer used (the
  backward pass needs them all). In row strips, the larger of two phases:
  the rest of the network (its layers' outputs and the stitched output of
  the split layer), and one strip's layers with the stitched output and its
  gradient (the backward pass of the strips, one strip at a time).
  """
  layers = vgg.layers_to_run(spec.layers)
  if spec.row_strips <= 1:
    return sum(_map_floats(height, width, l) for l in layers)
  plan = strips.make_plan(height, spec.row_strips, spec.strip_split,
                          spec.layers)
  rest = strips.runs_whole(plan, layers)
  split = _map_floats(height, width, plan.split) if rest else 0
  one_strip = sum(
      plan.strip_rows(level) * (width // 2 ** level) * vgg.layer_channels(l)
      for l in plan.layers for level in [vgg.layer_level(l)])
  return max(split + sum(_map_floats(height, width, l) for l in rest),
             one_strip + 2 * split)


def state_copies(optimizer: str, lbfgs_memory: int) -> int:
  """Image-sized arrays in the loop's state: the pixels, their gradient and
  the optimiser's (L-BFGS: its pairs and the previous point and gradient;
  Adam: two moments; SGD: momentum)."""
  return {'lbfgs': 2 * lbfgs_memory + 4, 'lbfgs_nols': 2 * lbfgs_memory + 4,
          'adam': 4}.get(optimizer, 3)


def loop_state_donated() -> bool:
  """Whether the loop's state is donated to each chunk (reused in place):
  off on CPU (`programs.LoopPrograms`), where a chunk's output state is a
  second copy beside its input."""
  return jax.local_devices()[0].platform != 'cpu'


def checkpoint_shares_memory() -> bool:
  """Whether a checkpoint's host copy of the loop state takes the devices'
  memory: on CPU, where the devices' memory is the host's."""
  return jax.local_devices()[0].platform == 'cpu'


def estimate_bytes(height, width, spec: losses.LossSpec, optimizer: str,
                   shards: int = 1, lbfgs_memory: int = optimizers.LBFGS_MEMORY,
                   use_winograd: bool = False, members: int = 1,
                   batched: bool = False, donated: bool = True,
                   checkpoint_copy: bool = False) -> int:
  """Rough peak bytes per device of one evaluation plus optimiser state.

  Counts (float32) `ACTIVATION_FACTOR` times the maps one evaluation holds
  (`held_floats`: whole, or in `spec.row_strips` strips), all 16 layers'
  weights, the pre-flipped kernels and, with `use_winograd`, the transforms
  of the layers that run (`vgg.prepare_variables`), the content targets'
  maps, and the optimiser's copies of the pixels (L-BFGS: two per curvature
  pair; strips add the padded image and its gradient), twice the loop's
  state unless it is `donated` (`loop_state_donated`), and once more with
  `checkpoint_copy` (a checkpoint's host copy of the state, where the
  device's memory is the host's: `checkpoint_shares_memory`). With rows split
  over `shards` devices, each holds 1/shards of the maps and pixel copies
  and all of the weights. A device running `members` sweep members holds
  every member's optimiser state, and with `batched` (vmap) every member's
  maps too; one after another (map), one member's maps at a time.
  """
  held = math.ceil(ACTIVATION_FACTOR * held_floats(height, width, spec))
  pixel_copies = {'lbfgs': 2 * lbfgs_memory + 6,
                  'lbfgs_nols': 2 * lbfgs_memory + 4}.get(optimizer, 6)
  if spec.row_strips > 1:
    pixel_copies += 2
  if not donated:  # the chunk's output state beside its input
    pixel_copies += state_copies(optimizer, lbfgs_memory)
  if checkpoint_copy:  # written out from a host copy
    pixel_copies += state_copies(optimizer, lbfgs_memory)
  per_device = members * pixel_copies * height * width * 3 + held * (
      members if batched else 1)
  targets = members * sum(_map_floats(height, width, l)
                          for l in spec.content_layers)
  return 4 * (-(-per_device // shards) + targets) + variables_bytes(
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


ADVICE = ('use a smaller image_size, row_strips=0 (strips where needed), '
          'fewer L-BFGS pairs (lbfgs_memory; each holds two copies of the '
          'image), optimizer=adam, or shard_rows with more devices')


def limit_bytes(settings) -> int:
  """The bytes a run may use per device: `max_memory_gb`, or the device's
  memory."""
  if settings.max_memory_gb:
    return int(settings.max_memory_gb * 2**30)
  return available_bytes()


def _too_large(width, height, members, needed, limit, count=1) -> UserError:
  return UserError(
      f'config.image_size: {width}x{height}'
      + (f' with {members} sweep members per device' if members > 1 else '')
      + f' needs about {needed / 2**30:.1f} GiB'
      + (f' even in {count} row strips' if count > 1 else '')
      + f', more than the {limit / 2**30:.1f} GiB available per device; '
      f'{ADVICE}')


def check(settings, height, width, shards=1, use_winograd=False, members=1,
          batched=False) -> None:
  """Raises `UserError` when `estimate_bytes` exceeds the device's memory
  (or `settings.max_memory_gb`); `members` per device, `batched` under
  vmap. The strips are the spec's own (0: the whole image): `fit` chooses
  them."""
  needed = estimate_bytes(height, width, settings.spec, settings.optimizer,
                          shards, settings.lbfgs_memory, use_winograd,
                          members, batched, loop_state_donated(),
                          checkpoint_shares_memory())
  limit = limit_bytes(settings)
  if needed > limit:
    raise _too_large(width, height, members, needed, limit)


@dataclasses.dataclass(frozen=True)
class Fit:
  """How a run fits the device's memory (`fit`).

  Attributes:
    row_strips: strips (1: the whole image at once).
    strip_split: with strips, the pooling layer after which the network
      runs whole.
    lbfgs_memory: the L-BFGS pairs kept.
    needed: the estimate, bytes per device.
    limit: the bytes available per device.
    warnings: what was given up to fit (fewer L-BFGS pairs).
  """
  row_strips: int
  strip_split: str
  lbfgs_memory: int
  needed: int
  limit: int
  warnings: tuple = ()


def _splits(layers) -> list:
  """The splits worth trying for `layers`: those with layers after them,
  and the first at or after the deepest layer (everything in strips)."""
  deepest = vgg.LAYER_ORDER.index(vgg.deepest_layer(layers))
  splits = []
  for split in strips.SPLITS:
    splits.append(split)
    if vgg.LAYER_ORDER.index(split) >= deepest:
      break
  return splits


def choices(spec: losses.LossSpec, height, width, shards=1) -> list:
  """(strips, split) a run may use, the cheapest first: the whole image,
  then strips in the order of `strips.relative_cost`. `spec.row_strips`
  1 allows only the whole image, N > 1 only N strips (any split), 0 any
  count up to `strips.max_count`; strips need one device (no shard_rows)
  and a loss they support."""
  whole = [(1, spec.strip_split)]
  if spec.row_strips == 1 or (spec.row_strips == 0 and (
      shards > 1 or strips.unsupported(spec))):
    return whole
  plans = {}
  for split in _splits(spec.layers):
    counts = ([spec.row_strips] if spec.row_strips
              else range(2, strips.max_count(height, split) + 1))
    for count in counts:
      plan = strips.make_plan(height, count, split, spec.layers)
      plans[(plan.count, split)] = plan
  ranked = sorted(plans, key=lambda choice: (strips.relative_cost(
      plans[choice], width, spec.layers), choice[0]))
  return ranked if spec.row_strips else whole + ranked


def fit(settings, height, width, shards=1, use_winograd=False, members=1,
        batched=False, donated=None, checkpoint_copy=None) -> Fit:
  """The row strips and L-BFGS pairs that make a run fit its device.

  The first of `choices` whose `estimate_bytes` fits with
  `settings.lbfgs_memory` pairs. When none does, an L-BFGS run keeps fewer
  pairs, with a warning: the cheapest choice with room for at least 3/4 of
  the pairs the roomiest choice allows, as many as it has room for (at
  least `LBFGS_MIN_PAIRS`).

  Args:
    settings: `settings.Settings` (`spec.row_strips`: 0 automatic, N, 1).
    height, width: the content's size.
    shards, use_winograd, members, batched: as `estimate_bytes`.
    donated: as `estimate_bytes`; None: `loop_state_donated()` (this
      process's devices).
    checkpoint_copy: as `estimate_bytes`; None:
      `checkpoint_shares_memory()`.
  Returns:
    `Fit`.
  Raises:
    UserError: nothing fits; the message gives the least memory needed.
  """
  limit = limit_bytes(settings)
  spec = settings.spec
  candidates = choices(spec, height, width, shards)
  if donated is None:
    donated = loop_state_donated()
  if checkpoint_copy is None:
    checkpoint_copy = checkpoint_shares_memory()

  def estimate(choice, pairs):
    count, split = choice
    return estimate_bytes(
        height, width, dataclasses.replace(spec, row_strips=count,
                                           strip_split=split),
        settings.optimizer, shards, pairs, use_winograd, members, batched,
        donated, checkpoint_copy)

  for choice in candidates:
    needed = estimate(choice, settings.lbfgs_memory)
    if needed <= limit:
      return Fit(*choice, settings.lbfgs_memory, needed, limit)
  if settings.optimizer in ('lbfgs', 'lbfgs_nols'):
    pair_bytes = estimate(candidates[0], 1) - estimate(candidates[0], 0)
    room = {c: (limit - estimate(c, 0)) // pair_bytes for c in candidates}
    most = max(room.values())
    if most >= LBFGS_MIN_PAIRS:
      # The strips that leave the most room can cost twice the time of a
      # choice with a few pairs less: take the cheapest with 3/4 as many.
      choice = next(c for c in candidates if room[c] >= -(-3 * most // 4))
      pairs = min(room[choice], settings.lbfgs_memory)
      while estimate(choice, pairs) > limit:  # the estimate rounds up
        pairs -= 1
      warning = (
          f'lbfgs_memory: {settings.lbfgs_memory} L-BFGS pairs do not fit '
          f'in {limit / 2**30:.1f} GiB at {width}x{height}; keeping {pairs} '
          f'(each pair holds two copies of the image'
          + ('' if donated else ', twice while a chunk runs on CPU')
          + f': {pair_bytes / 2**20:.0f} MiB)')
      return Fit(*choice, pairs, estimate(choice, pairs), limit, (warning,))
  least = min(candidates, key=lambda c: estimate(c, settings.lbfgs_memory))
  raise _too_large(width, height, members,
                   estimate(least, settings.lbfgs_memory), limit, least[0])
