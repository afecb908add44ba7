"""Row strips: VGG19's early layers evaluated a strip of rows at a time.

At high resolution the first blocks' maps take most of an evaluation's
memory: 64 channels at full resolution, 128 at half. With
`LossSpec.row_strips = N` the layers up to a pooling layer (`split`, e.g.
`pool2`) run on N strips of rows one after another (`lax.map`), each with
the rows of context (the halo) its convolutions need above and below. What
the loss takes from those layers are sums over positions (the Gram
matrices' F^T F, the content term's squared differences), which add up over
the strips exactly, and the split layer's output, whose strips are stitched
into the whole map for the rest of the network to run on at once.

Each strip is a `jax.checkpoint`: the forward pass keeps nothing of a strip
but what it returns, and the backward pass recomputes one strip's layers
at a time, so one strip's maps are held at once. That recomputation (one
more forward pass of the early layers) and the halo's rows are what strips
cost in time.

Geometry. The strips' rows are those of the split layer's output (its
level P: 2^P = `factor` image rows per row), `rows` per strip, enough
strips to cover ceil(height / factor) of them, so every image row lies in
some strip's centre. A strip reads `rows * factor + 2 * halo` image rows
starting `halo` rows above its centre; rows beyond the image are zeros.
Each 3x3 convolution spoils one row at each end of a strip at its level
and each pooling halves the spoiled rows (rounding up), so `halo_rows`
counts them back to full resolution: 2 for `pool1`, 8 for `pool2`, 24 for
`pool3`, 64 for `pool4`.

The image's edge. VGG pads every convolution's input, at every layer, not
just the image: before each convolution the rows just outside the image at
that layer's level (row -1 and row h) are set to what the padding puts
there (zeros; or rows 1 and h - 2 for 'reflect', 0 and h - 1 for
'replicate'). Rows further out only feed outputs outside the image, which
nothing reads: the sums count a strip's central rows inside the image
only, and the stitched map keeps the image's rows. So strips give the whole
image's losses and gradient up to the order of the sums' rounding, at any
height.

Example::

  plan = strips.make_plan(height, 4, 'pool2', spec.layers)
  sums, kept = strips.run(variables, network_input, plan, summarize,
                          ('conv1_1',), keep=('pool2',))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax.core import vgg

# The pooling layers after which the network can run whole; the deeper the
# split, the less the whole part holds and the more the strips recompute.
SPLITS = ('pool1', 'pool2', 'pool3', 'pool4')


def unsupported(spec) -> str:
  """Why a `losses.LossSpec` cannot run in strips ('' when it can): strips
  add sums over positions, which the Gram loss is and the other style
  losses and regions are not written as."""
  if spec.style_loss != 'gram':
    return (f"strips need style_loss='gram' (got {spec.style_loss!r}: its "
            'statistics are not sums over positions here)')
  if spec.regions:
    return 'strips do not take content_masks (regions)'
  return ''


@functools.lru_cache(maxsize=None)
def halo_rows(split: str) -> int:
  """Image rows of context each strip needs above and below for `split`'s
  output to be exact (see the module docstring)."""
  spoiled = 0  # rows at each end of a strip, at the current level
  for name in vgg.layers_to_run([split]):
    spoiled = spoiled + 1 if name.startswith('conv') else -(-spoiled // 2)
  return spoiled * 2 ** vgg.layer_level(split)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How an image of `height` rows is cut into strips.

  Attributes:
    height: the image's rows.
    count: strips.
    split: the pooling layer whose output is stitched (`SPLITS`).
    layers: the layers run in strips, from conv1_1 to the split (or to the
      deepest layer used, if that comes first).
    halo: image rows of context above and below each strip.
    rows: each strip's central rows at the split's level.
  """
  height: int
  count: int
  split: str
  layers: tuple
  halo: int
  rows: int

  @property
  def factor(self) -> int:
    """Image rows per row of the split layer's output."""
    return 2 ** vgg.layer_level(self.split)

  def level_height(self, level: int) -> int:
    """The image's rows at `level` (after `level` poolings)."""
    return self.height // 2 ** level

  def strip_rows(self, level: int) -> int:
    """A strip's rows, halo included, at `level`."""
    return (self.rows * self.factor + 2 * self.halo) // 2 ** level

  def central_rows(self, level: int) -> int:
    """A strip's rows without its halo, at `level`."""
    return self.rows * self.factor // 2 ** level

  @property
  def padded_height(self) -> int:
    """Rows of the image padded with the halo and whole strips."""
    return self.count * self.rows * self.factor + 2 * self.halo


def make_plan(height: int, count: int, split: str,
              layers: Sequence[str]) -> Plan:
  """The strips of an image `height` rows high, for the loss's `layers`.

  Args:
    height: image rows.
    count: strips asked for; fewer when the split layer's output has fewer
      rows than that (each strip has at least one).
    split: a layer of `SPLITS`.
    layers: the layers the loss uses.
  Returns:
    A `Plan`.
  """
  factor = 2 ** vgg.layer_level(split)
  split_rows = -(-height // factor)  # covers every image row
  rows = -(-split_rows // max(count, 1))
  deepest = vgg.deepest_layer(layers)
  last = min(split, deepest, key=vgg.LAYER_ORDER.index)
  return Plan(height=height, count=-(-split_rows // rows), split=split,
              layers=vgg.layers_to_run([last]), halo=halo_rows(split),
              rows=rows)


def max_count(height: int, split: str) -> int:
  """The most strips worth considering: each at least twice as tall as its
  halo (thinner strips compute the halo more than their own rows)."""
  factor = 2 ** vgg.layer_level(split)
  least_rows = -(-2 * halo_rows(split) // factor)
  return max(1, -(-height // factor) // least_rows)


def runs_whole(plan: Plan, layers: Sequence[str]) -> tuple:
  """The layers of `layers` after the strips: the rest of the network,
  run whole on the stitched output of `plan.split`."""
  return tuple(l for l in layers if l not in plan.layers)


def _macs(name: str, rows: int, columns: int) -> int:
  channels_in, channels_out = vgg.CONV_SHAPES[name]
  return 9 * channels_in * channels_out * rows * columns


def relative_cost(plan: Plan, width: int, layers: Sequence[str]) -> float:
  """A strips evaluation's modelled time over the whole image's, from the
  convolutions' multiply-adds: the whole image's forward and backward
  passes cost two forward passes, a strip's three (its forward pass runs
  again in the backward pass), on its rows with the halo."""
  whole = strip = 0
  for name in vgg.layers_to_run(layers):
    if not name.startswith('conv'):
      continue
    level = vgg.layer_level(name)
    columns = width // 2 ** level
    full = _macs(name, plan.level_height(level), columns)
    whole += 2 * full
    if name in plan.layers:
      strip += 3 * plan.count * _macs(name, plan.strip_rows(level), columns)
    else:
      strip += 2 * full
  return strip / whole


def strip_of(full: jax.Array, plan: Plan, index, level: int) -> jax.Array:
  """Strip `index`'s central rows of a whole map at `level` (h, w, c),
  zero below the image (as the strips' own features are)."""
  central = plan.central_rows(level)
  padded = jnp.pad(full, ((0, plan.count * central - full.shape[0]),)
                   + ((0, 0),) * (full.ndim - 1))
  return lax.dynamic_slice_in_dim(padded, index * central, central, axis=0)


def _image_rows(plan: Plan, index, level: int, count: int) -> jax.Array:
  """The image rows at `level` of a strip's `count` rows, its halo
  included."""
  first = index * plan.central_rows(level) - plan.halo // 2 ** level
  return first + jnp.arange(count)


def _padded_edge(x: jax.Array, plan: Plan, index, level: int,
                 padding: str) -> jax.Array:
  """`x` (1, rows, w, c), a strip at `level`, with the rows just outside
  the image set as the convolution's padding sets them."""
  rows = _image_rows(plan, index, level, x.shape[1])[None, :, None, None]
  height = plan.level_height(level)
  if padding == 'zeros':
    return jnp.where((rows < 0) | (rows >= height), jnp.zeros_like(x), x)
  # Row -1 mirrors row 1 ('reflect') or repeats row 0 ('replicate'), and
  # row h likewise; a strip's rows are consecutive, so those are the rows
  # `shift` below or above. A one-row map reflects as it replicates.
  shift = 2 if padding == 'reflect' and height > 1 else 1
  x = jnp.where(rows == -1, jnp.roll(x, -shift, axis=1), x)
  return jnp.where(rows == height, jnp.roll(x, shift, axis=1), x)


def _central(x: jax.Array, plan: Plan, index, level: int) -> jax.Array:
  """A strip's central rows of `x` (1, rows, w, c) at `level`, zero outside
  the image: (central rows, w, c)."""
  offset = plan.halo // 2 ** level
  central = x[0, offset:offset + plan.central_rows(level)]
  rows = _image_rows(plan, index, level, plan.strip_rows(level))[
      offset:offset + plan.central_rows(level)]
  inside = (rows < plan.level_height(level))[:, None, None]
  return jnp.where(inside, central, jnp.zeros_like(central))


def strip_features(variables: dict, padded: jax.Array, plan: Plan, index,
                   wanted: Sequence[str], pooling: str, dtype: Any,
                   padding: str) -> dict:
  """Strip `index`'s central rows of the `wanted` layers.

  Args:
    variables: VGG variables (`vgg.prepare_variables`).
    padded: (plan.padded_height, w, 3) the network's input with `plan.halo`
      zero rows above and zero rows below to `plan.padded_height`.
    plan: the strips.
    index: which strip (may be traced).
    wanted: layers of `plan.layers`.
    pooling, dtype, padding: as `vgg.VGG19`'s.
  Returns:
    {layer: (central rows, w, c)}, zero at rows below the image.
  """
  start = index * plan.rows * plan.factor
  x = lax.dynamic_slice_in_dim(padded, start, plan.strip_rows(0), axis=0)
  x = x[None]
  level = 0
  features = {}
  for name in plan.layers:
    if name.startswith('conv'):
      x = vgg.conv_layer(variables, name,
                         _padded_edge(x, plan, index, level, padding),
                         dtype, padding)
    else:
      x = vgg.pool(x, pooling)
      level += 1
    if name in wanted:
      features[name] = _central(x, plan, index, level)
  return features


def run(variables: dict, network_input: jax.Array, plan: Plan,
        summarize: Callable, wanted: Sequence[str], keep: Sequence[str] = (),
        pooling: str = 'avg', dtype: Any = jnp.float32,
        padding: str = 'zeros') -> tuple:
  """The strips one after another: what `summarize` sums, and whole maps.

  Args:
    variables: VGG variables.
    network_input: (H, W, 3) preprocessed image (`vgg.preprocess`).
    plan: `make_plan(H, ...)`.
    summarize: `summarize(index, features)` -> a pytree of arrays for one
      strip, from its `strip_features` of `wanted`; summed over the strips.
      It must count nothing at the zero rows below the image.
    wanted: the layers `summarize` reads.
    keep: layers of `plan.layers` whose whole maps are returned, stitched
      from the strips' central rows (the split layer's, for the rest).
    pooling, dtype, padding: as `vgg.VGG19`'s.
  Returns:
    (the sum over strips of `summarize`, {layer of keep: (h, w, c)}).
  """
  height = network_input.shape[0]
  padded = jnp.pad(network_input,
                   ((plan.halo, plan.padded_height - plan.halo - height),
                    (0, 0), (0, 0)))
  layers = tuple(dict.fromkeys(tuple(wanted) + tuple(keep)))

  # Checkpointed: the backward pass recomputes the strip it is at, so the
  # scan keeps only its inputs, not every strip's maps. No CSE barrier is
  # needed inside a loop.
  @functools.partial(jax.checkpoint, prevent_cse=False)
  def one_strip(padded, variables, index):
    features = strip_features(variables, padded, plan, index, layers,
                              pooling, dtype, padding)
    return (summarize(index, {l: features[l] for l in wanted}),
            {l: features[l] for l in keep})

  sums, kept = lax.map(lambda index: one_strip(padded, variables, index),
                       jnp.arange(plan.count))
  sums = jax.tree_util.tree_map(lambda s: jnp.sum(s, axis=0), sums)
  whole = {}
  for layer, strips in kept.items():
    level = vgg.layer_level(layer)
    whole[layer] = strips.reshape((-1,) + strips.shape[2:])[
        :plan.level_height(level)]
  return sums, whole
