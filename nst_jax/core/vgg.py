"""VGG19 feature extractor in Flax (Linen), as Gatys et al. use it.

The 16 convolution layers of VGG19 (no fully connected layers), 3x3 SAME
convolutions, ReLU, and 2x2 stride-2 pooling between blocks: average pooling
(the paper) or max pooling. Images are NHWC, already preprocessed for the
weights (see `preprocess`).

Layer names: `conv{b}_{i}` is the *rectified* output of that convolution
(`relu{b}_{i}` is accepted as an alias), `pool{b}` the output of block b's
pooling. The forward pass stops at the deepest requested layer.

Weights are a plain pytree ``{'conv1_1': {'kernel': (3, 3, Cin, Cout) HWIO,
'bias': (Cout,)}, ...}`` passed to jitted functions as arguments, never closed
over as constants, so changing the weights file never recompiles.

Speed: the gradient of a convolution with respect to its input is a
convolution with the kernel flipped in space and its in/out axes swapped.
When the kernel is a function argument XLA re-flips every kernel of the
network at every evaluation. `prepare_variables` flips them once;
`conv_relu` is a `jax.custom_vjp` whose backward pass uses the pre-flipped
kernel.

With `conv_algorithm='winograd'` each layer whose input shape
`winograd.choose_tile` picks a tile for runs Winograd's algorithm
(`nst_jax.core.winograd`: 2.25x or 4x fewer multiply-adds) forward and
backward, with kernels transformed once in
`prepare_variables(params, winograd_sizes=...)`.

Example::

  variables = vgg.prepare_variables(params)
  features = vgg.extract_features(variables, image[None],
                                  ('conv1_1', 'conv4_2'))
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from nst_jax.core import winograd

# Output channels of each block's convolutions.
BLOCK_CHANNELS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)

CONV_LAYERS = tuple(
    f'conv{block + 1}_{i + 1}'
    for block, channels in enumerate(BLOCK_CHANNELS)
    for i in range(len(channels)))

# Every layer in forward order: the block's convolutions, then its pooling.
LAYER_ORDER = tuple(
    name for block, channels in enumerate(BLOCK_CHANNELS)
    for name in ([f'conv{block + 1}_{i + 1}' for i in range(len(channels))]
                 + [f'pool{block + 1}']))

POOLINGS = ('avg', 'max')
CONV_ALGORITHMS = ('direct', 'winograd')
# How the 3x3 convolutions see beyond the image's edge: 'zeros' (as VGG was
# trained), or the edge pixels mirrored ('reflect') or repeated
# ('replicate'), so the edge does not look like a dark frame to every layer.
PADDINGS = ('zeros', 'reflect', 'replicate')
_PAD_MODES = {'reflect': 'reflect', 'replicate': 'edge'}

# (input channels, output channels) of each convolution.
CONV_SHAPES = {}
_in_channels = 3
for _name, _out in zip(CONV_LAYERS, (c for cs in BLOCK_CHANNELS for c in cs)):
  CONV_SHAPES[_name] = (_in_channels, _out)
  _in_channels = _out

# Multiply-adds per input pixel of the forward pass up to each layer (a
# convolution at block b runs on 1/4^(b-1) of the pixels).
MACS_PER_PIXEL = {}
_total = 0
for _name in LAYER_ORDER:
  if _name.startswith('conv'):
    _block = int(_name[4])
    cin, cout = CONV_SHAPES[_name]
    _total += 9 * cin * cout / 4 ** (_block - 1)
  MACS_PER_PIXEL[_name] = int(_total)

# Preprocessing each kind of weights expects, from RGB pixels in [0, 255].
# caffe (the VGG authors' weights, Keras): BGR, minus the ImageNet mean, 0-255.
# torchvision: RGB in [0, 1], minus mean, divided by std.
PREPROCESSING = ('caffe', 'torchvision')
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def canonical_layer(name: str) -> str:
  """Returns the canonical layer name (`relu4_2` -> `conv4_2`).

  Raises:
    ValueError: for a name that is not a VGG19 layer.
  """
  canonical = 'conv' + name[4:] if name.startswith('relu') else name
  if canonical not in LAYER_ORDER:
    raise ValueError(f'unknown layer {name!r}: valid layers are '
                     + ', '.join(LAYER_ORDER) + ' (relu* aliases conv*)')
  return canonical


def deepest_layer(layers: Iterable[str]) -> str:
  """The layer of `layers` that comes last in the forward pass."""
  return max((canonical_layer(l) for l in layers), key=LAYER_ORDER.index)


def layer_channels(layer: str) -> int:
  """The channels of a layer's output (a pooling keeps its block's)."""
  layer = canonical_layer(layer)
  if layer.startswith('pool'):
    return BLOCK_CHANNELS[int(layer[4]) - 1][-1]
  return CONV_SHAPES[layer][1]


def feature_size(height: int, width: int, layer: str) -> tuple:
  """(h, w) of a layer's output for an image of height x width: each
  pooling before it halves both (rounding down)."""
  pools = layer_level(layer)
  return height // 2 ** pools, width // 2 ** pools


def layers_to_run(layers: Iterable[str]) -> tuple:
  """The layers the forward pass computes for `layers`, in order: from
  conv1_1 to the deepest of them."""
  return LAYER_ORDER[:LAYER_ORDER.index(deepest_layer(layers)) + 1]


def preprocess(pixels: jax.Array, kind: str) -> jax.Array:
  """Maps RGB pixels in [0, 255] (..., 3) to the network's input space.

  Args:
    pixels: RGB values in [0, 255], channels last.
    kind: 'caffe' (BGR minus mean) or 'torchvision' (/255, minus mean, /std).
  Returns:
    The network input, same shape.
  Raises:
    ValueError: for another `kind`.
  """
  if kind == 'caffe':
    return pixels[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR, pixels.dtype)
  if kind == 'torchvision':
    mean = jnp.asarray(TORCHVISION_MEAN, pixels.dtype)
    std = jnp.asarray(TORCHVISION_STD, pixels.dtype)
    return (pixels / 255.0 - mean) / std
  raise ValueError(f'unknown preprocessing {kind!r}: valid are '
                   + ', '.join(PREPROCESSING))


def flip_kernel(kernel: jax.Array) -> jax.Array:
  """HWIO kernel -> the kernel whose convolution is the input gradient."""
  return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def _conv(x, kernel):
  # dtype='float32' means float32: GPUs (TF32) and TPUs (one bfloat16 pass)
  # would otherwise round the products by default.
  precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision)


@jax.custom_vjp
def conv_relu(x, kernel, bias, flipped_kernel):
  """relu(conv3x3_same(x, kernel) + bias), NHWC/HWIO.

  `flipped_kernel` must equal `flip_kernel(kernel)`; the backward pass uses it
  for the input gradient so that no kernel is flipped per evaluation.
  """
  del flipped_kernel
  return jax.nn.relu(_conv(x, kernel) + bias)


def _conv_relu_fwd(x, kernel, bias, flipped_kernel):
  y = jax.nn.relu(_conv(x, kernel) + bias)
  return y, (x, kernel, y, flipped_kernel)


def _relu_conv_grads(x, kernel, y, grad_y, input_gradient):
  """(grad_x, grad_kernel, grad_bias) of relu(conv(x, kernel) + bias) = y,
  with `input_gradient(grad_pre)` the convolution that gives grad_x."""
  grad_pre = jnp.where(y > 0, grad_y, jnp.zeros_like(grad_y))
  # Kernel and bias gradients are dead code (removed by XLA) when only the
  # pixel gradient is asked for, as in style transfer.
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)
  (grad_kernel,) = kernel_vjp(grad_pre)
  grad_bias = jnp.sum(grad_pre, axis=(0, 1, 2))
  return input_gradient(grad_pre), grad_kernel, grad_bias


# Input gradients with at most this many channels (conv1_1's 3) are taken
# as taps (`_taps_input_gradient`).
TAPS_MAX_CHANNELS = 4


def _taps_input_gradient(grad_pre, flipped_kernel):
  """conv3x3_same(grad_pre, flipped_kernel) for a kernel with few output
  channels, as one matrix product and nine shifted sums:

    taps[n, h, w, i, j, c] = sum_o grad_pre[n, h, w, o] K[i, j, o, c]
    grad_x[n, h, w, c]     = sum_ij taps[n, h + i - 1, w + j - 1, i, j, c]

  (zero outside the image). XLA's CPU convolution with 3 output channels
  runs far below the machine's rate; the product has 27 columns and the
  sums read a small array. Summed in float32 whatever the dtype.
  """
  batch, height, width, channels = grad_pre.shape
  rows, cols, _, out_channels = flipped_kernel.shape
  precision = (lax.Precision.HIGHEST if grad_pre.dtype == jnp.float32
               else None)
  taps = jnp.dot(grad_pre.reshape(-1, channels),
                 jnp.transpose(flipped_kernel, (2, 0, 1, 3)).reshape(
                     channels, rows * cols * out_channels),
                 precision=precision, preferred_element_type=jnp.float32)
  taps = jnp.pad(taps.reshape(batch, height, width, rows, cols, out_channels),
                 ((0, 0), (rows // 2,) * 2, (cols // 2,) * 2, (0, 0), (0, 0),
                  (0, 0)))
  grad_x = sum(taps[:, i:i + height, j:j + width, i, j]
               for i in range(rows) for j in range(cols))
  return grad_x.astype(grad_pre.dtype)


def _conv_relu_bwd(residuals, grad_y):
  x, kernel, y, flipped_kernel = residuals
  if x.shape[-1] <= TAPS_MAX_CHANNELS:
    input_gradient = lambda g: _taps_input_gradient(g, flipped_kernel)
  else:
    input_gradient = lambda g: _conv(g, flipped_kernel)
  grads = _relu_conv_grads(x, kernel, y, grad_y, input_gradient)
  return grads + (jnp.zeros_like(flipped_kernel),)


conv_relu.defvjp(_conv_relu_fwd, _conv_relu_bwd)


def _tile(u):
  """The tile of a transformed kernel, from its side (m + 2)."""
  return {winograd.tile_side(t): t for t in winograd.TILES}[u.shape[0]]


@jax.custom_vjp
def winograd_conv_relu(x, kernel, bias, u, u_backward):
  """`conv_relu` by Winograd's algorithm (`nst_jax.core.winograd`).

  `u` and `u_backward` are `winograd.transform_kernel` of the kernel and of
  its `flip_kernel`; the tile size is read from their shape.
  """
  del kernel
  return jax.nn.relu(winograd.conv(x, u, _tile(u)) + bias)


def _winograd_fwd(x, kernel, bias, u, u_backward):
  y = jax.nn.relu(winograd.conv(x, u, _tile(u)) + bias)
  return y, (x, kernel, y, u, u_backward)


def _winograd_bwd(residuals, grad_y):
  x, kernel, y, u, u_backward = residuals
  grads = _relu_conv_grads(
      x, kernel, y, grad_y,
      lambda g: winograd.conv(g, u_backward, _tile(u_backward)))
  return grads + (jnp.zeros_like(u), jnp.zeros_like(u_backward))


winograd_conv_relu.defvjp(_winograd_fwd, _winograd_bwd)


def _edge_padded(same_conv, x, padding: str, rows: bool = True):
  """`same_conv` (a zero-padded SAME convolution) of NHWC `x`, with
  `padding` beyond the edge.

  With 'reflect' or 'replicate' the input is padded by one pixel that way
  (only the columns when `rows` is False) and the zero-padded convolution's
  border outputs are cropped: the custom gradients stay those of the SAME
  convolution, and the pad's own gradient folds the border back onto the
  edge pixels.
  """
  if padding == 'zeros':
    return same_conv(x)
  row_pad, row_crop = ((1, 1), slice(1, -1)) if rows else ((0, 0), slice(None))
  padded = jnp.pad(x, ((0, 0), row_pad, (1, 1), (0, 0)),
                   mode=_PAD_MODES[padding])
  return same_conv(padded)[:, row_crop, 1:-1]


def _direct_conv_relu(x, kernel, bias, flipped, dtype):
  """`conv_relu` in `dtype`, with the pre-flipped kernel `flipped`, or with
  None, the kernel flipped here (correct but slower: flips on every
  evaluation)."""
  if flipped is None:
    flipped = flip_kernel(kernel)
  cast = lambda a: a.astype(dtype)
  return conv_relu(cast(x), cast(kernel), cast(bias), cast(flipped))


def conv_layer(variables: dict, name: str, x: jax.Array, dtype: Any,
               padding: str = 'zeros') -> jax.Array:
  """Convolution `name` (+ bias, ReLU) of NHWC `x` as a direct `conv_relu`,
  from the variables' dict rather than a Flax module (row strips,
  `nst_jax.core.strips`, call it on strips of rows).

  With `padding` 'reflect' or 'replicate' only the columns are padded that
  way, as `ConvReLU` pads them: the caller provides the rows beyond the
  image's edge.

  Args:
    variables: `prepare_variables` output (or `{'params': params}`: the
      kernel is then flipped on every call).
    name: a convolution layer, 'conv1_1' ...
    x: (batch, height, width, channels).
    dtype: the convolution's dtype.
    padding: 'zeros', 'reflect' or 'replicate'.
  Returns:
    (batch, height, width, out channels) in `dtype`.
  """
  params = variables['params'][name]
  kernel, bias = params['kernel'], params['bias']
  flipped = variables.get('flipped', {}).get(name, {}).get('kernel')
  return _edge_padded(
      lambda padded: _direct_conv_relu(padded, kernel, bias, flipped, dtype),
      x, padding, rows=False)


def layer_level(layer: str) -> int:
  """The poolings up to and including `layer`: its output has
  1/2^level of the image's rows and columns (rounded down)."""
  return sum(1 for name in layers_to_run([layer]) if name.startswith('pool'))


class ConvReLU(nn.Module):
  """A 3x3 SAME convolution with bias and ReLU, using `conv_relu` (or
  `winograd_conv_relu` where `winograd.choose_tile` picks a tile).

  With `padding` 'reflect' or 'replicate' the input is padded by one pixel
  that way (`_edge_padded`).
  """
  features: int
  dtype: Any = jnp.float32
  conv_algorithm: str = 'direct'
  padding: str = 'zeros'

  @nn.compact
  def __call__(self, x):
    return _edge_padded(lambda padded: self._same(padded, x.shape), x,
                        self.padding)

  def _same(self, x, shape):
    """The zero-padded convolution of `x`; its tile is chosen for the
    unpadded `shape` (the tiles `prepare_variables` computed)."""
    kernel = self.param('kernel', nn.initializers.he_normal(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    cast = lambda a: a.astype(self.dtype)
    tile = None
    if self.conv_algorithm == 'winograd':
      tile = winograd.choose_tile(shape[-3], shape[-2], shape[-1],
                                  self.features)
    if tile is not None:
      if self.has_variable('winograd', tile):
        transformed = self.get_variable('winograd', tile)
      else:  # Correct but slower: transforms the kernel every evaluation.
        transformed = _winograd_kernels(kernel, flip_kernel(kernel), tile)
      return winograd_conv_relu(cast(x), cast(kernel), cast(bias),
                                cast(transformed['forward']),
                                cast(transformed['backward']))
    flipped = (self.get_variable('flipped', 'kernel')
               if self.has_variable('flipped', 'kernel') else None)
    return _direct_conv_relu(x, kernel, bias, flipped, self.dtype)


def avg_pool(x):
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def pool(x, pooling):
  """2 x 2 stride-2 pooling of NHWC `x`, 'avg' or 'max' (an odd last row
  or column is dropped)."""
  if pooling == 'avg':
    return avg_pool(x)
  # A reshape and a max rather than a window reduction: its gradient is a
  # comparison mask that fuses with its neighbours, where the window's is a
  # select-and-scatter, which does not fuse and is slow on a CPU. Exact
  # ties split the gradient rather than giving it to the first maximum;
  # after a ReLU the only likely ties are zeros, whose gradient the ReLU
  # stops either way.
  height, width, channels = x.shape[-3:]
  x = x[..., :height // 2 * 2, :width // 2 * 2, :]
  blocks = x.reshape(x.shape[:-3] + (height // 2, 2, width // 2, 2, channels))
  return blocks.max(axis=(-4, -2))


class VGG19(nn.Module):
  """VGG19's convolutional part; returns the requested layers' outputs.

  Attributes:
    pooling: 'avg' (Gatys et al.) or 'max' (the original VGG).
    dtype: compute dtype of the convolutions (e.g. bfloat16 on accelerators);
      features are returned in this dtype, callers sum Grams in float32.
    conv_algorithm: 'direct' or 'winograd' (see `winograd.choose_tile`).
    padding: 'zeros', 'reflect' or 'replicate' (`PADDINGS`).
  """
  pooling: str = 'avg'
  dtype: Any = jnp.float32
  conv_algorithm: str = 'direct'
  padding: str = 'zeros'

  @nn.compact
  def __call__(self, x: jax.Array, layers: Sequence[str],
               start_after: str = '') -> dict:
    """{layer: output} of `layers`; with `start_after`, `x` is that layer's
    output and only the layers after it run (the rest of the network
    behind row strips, `nst_jax.core.strips`)."""
    if self.pooling not in POOLINGS:
      raise ValueError(f'unknown pooling {self.pooling!r}: valid are '
                       + ', '.join(POOLINGS))
    wanted = {canonical_layer(l) for l in layers}
    running = layers_to_run(wanted)
    if start_after:
      running = running[LAYER_ORDER.index(start_after) + 1:]
    features = {}
    for index in range(len(BLOCK_CHANNELS)):
      # 'conv{b}_{i}' and 'pool{b}': the block number is the 5th character.
      names = tuple(n for n in running if n[4] == str(index + 1))
      if not names:  # before `start_after`, or past the deepest layer
        continue
      x, block_features = self._block(x, names,
                                      tuple(n for n in names if n in wanted))
      features.update(block_features)
    return features

  def _block(self, x, names, wanted):
    """One block's layers `names` in order; (last output, {wanted: output})."""
    features = {}
    for name in names:
      if name.startswith('conv'):
        x = ConvReLU(CONV_SHAPES[name][1], self.dtype, self.conv_algorithm,
                     self.padding, name=name)(x)
      else:
        x = pool(x, self.pooling)
      if name in wanted:
        features[name] = x
    return x, features


def init_params(rng: jax.Array) -> dict:
  """He-normal random weights (zero biases) for all 16 convolutions."""
  return _init(rng)['params']


@jax.jit
def _init(rng):
  return VGG19().init(rng, jnp.zeros((1, 32, 32, 3)), ('conv5_4',))


def prepare_variables(params: dict, winograd_sizes: Sequence = (),
                      layers: Sequence[str] = ('conv5_4',)) -> dict:
  """Flax variables for `VGG19.apply`: the params plus transformed kernels.

  Call once per weights (outside the optimisation loop); the result is an
  ordinary pytree argument of the jitted loss. It always holds the
  pre-flipped kernels (of the layers that run; others are flipped on the
  fly); with `winograd_sizes`, also the Winograd transforms
  (forward and backward) of every tile that `winograd.choose_tile` picks for
  some layer at one of those image sizes.

  Args:
    params: {'conv1_1': {'kernel', 'bias'}, ...}.
    winograd_sizes: (height, width) of the images the network will see with
      `conv_algorithm='winograd'`.
    layers: the layers the network will be asked for; only the convolutions
      up to the deepest of them get flipped kernels and Winograd transforms.
  Returns:
    {'params', 'flipped'[, 'winograd': {layer: {tile: {'forward',
    'backward'}}}]}.
  """
  kernels = running_kernels(params, layers)
  flipped = flip_all(kernels)
  tiles = winograd_tiles(params, winograd_sizes, layers)
  transforms = transform_program(tiles)(kernels, flipped) if tiles else None
  return assemble_variables(params, flipped, transforms)


def running_kernels(params: dict, layers: Sequence[str]) -> dict:
  """{layer: kernel} of the convolutions that run up to the deepest of
  `layers` (layers past it get no flipped or transformed kernels)."""
  running = layers_to_run(layers)
  return {name: layer['kernel'] for name, layer in params.items()
          if name in running}


def assemble_variables(params: dict, flipped: dict,
                       transforms: dict | None = None) -> dict:
  """The variables `prepare_variables` returns, from its parts: the output
  of `flip_all` and (or None) of `transform_program(tiles)`."""
  variables = {'params': params, 'flipped': {
      name: {'kernel': kernel} for name, kernel in flipped.items()}}
  if transforms:
    variables['winograd'] = transforms
  return variables


def winograd_tiles(params: dict, image_sizes: Sequence,
                   layers: Sequence[str] = ('conv5_4',)) -> tuple:
  """((layer, (tile, ...)), ...): the tiles `winograd.choose_tile` picks for
  the convolutions in `params` that run up to the deepest of `layers`, at
  any of `image_sizes` (hashable: it keys `transform_program`)."""
  running = layers_to_run(layers)
  tiles = {}
  for height, width in image_sizes:
    for name in CONV_LAYERS:
      if name not in params or name not in running:
        continue
      scale = 2 ** (int(name[4]) - 1)  # Pools before block b: b - 1.
      tile = winograd.choose_tile(height // scale, width // scale,
                                  *CONV_SHAPES[name])
      if tile is not None:
        tiles.setdefault(name, set()).add(tile)
  return tuple(sorted((name, tuple(sorted(layer_tiles)))
                      for name, layer_tiles in tiles.items()))


@functools.lru_cache(maxsize=None)
def transform_program(tiles: tuple):
  """A jitted function (kernels, flipped) -> {layer: {tile: {'forward',
  'backward'}}} for `tiles` (from `winograd_tiles`).

  A program of its own, apart from `flip_all`: its inputs arrive in plain
  row-major layout. In one program with the flip, XLA fuses the flip into
  the backward transform or lays it out anew, and the transform runs
  slower than on plain row-major inputs.
  """
  return jax.jit(functools.partial(_transform_all, tiles=tiles))


def _winograd_kernels(kernel, flipped, tile):
  """{'forward', 'backward'}: G g G^T of a kernel and of its flip."""
  return {'forward': winograd.transform_kernel(kernel, tile),
          'backward': winograd.transform_kernel(flipped, tile)}


def _transform_all(kernels, flipped, tiles):
  """{layer: {tile: `_winograd_kernels`}} for `tiles`."""
  return {name: {tile: _winograd_kernels(kernels[name], flipped[name], tile)
                 for tile in layer_tiles} for name, layer_tiles in tiles}


@jax.jit
def flip_all(kernels: dict) -> dict:
  """{layer: `flip_kernel(kernel)`}."""
  return {name: flip_kernel(kernel) for name, kernel in kernels.items()}


def extract_features(variables: dict, images: jax.Array,
                     layers: Sequence[str], pooling: str = 'avg',
                     dtype: Any = jnp.float32, conv_algorithm: str = 'direct',
                     padding: str = 'zeros', start_after: str = '') -> dict:
  """Rectified features of preprocessed NHWC `images` at `layers`.

  Args:
    variables: `{'params': params}` or the result of `prepare_variables`.
    images: (batch, height, width, 3), already `preprocess`ed.
    layers: layer names (`conv4_2`, `relu4_2`, `pool1`, ...).
    pooling: 'avg' or 'max'.
    dtype: compute dtype of the convolutions.
    conv_algorithm: 'direct', or 'winograd' where `winograd.choose_tile` picks a
      tile (pass `winograd_sizes` to `prepare_variables` so the transformed
      kernels are computed once, not per call).
    padding: beyond the image's edge: 'zeros', 'reflect' or 'replicate'.
    start_after: '' (from the image), or a layer whose output `images`
      then is: only the layers after it run (all of `layers` must be).
  Returns:
    {canonical layer name: (batch, h, w, channels)}; the keys are canonical
    names (relu aliases map to conv names).
  """
  return VGG19(pooling=pooling, dtype=dtype, conv_algorithm=conv_algorithm,
               padding=padding).apply(
      variables, images, tuple(layers), start_after)


def min_image_size(layers: Iterable[str]) -> int:
  """Smallest side that leaves at least 1x1 positions at every layer."""
  pools_before = sum(1 for name in layers_to_run(layers)
                     if name.startswith('pool'))
  return 2 ** pools_before
