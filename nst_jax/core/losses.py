r"""The losses of Gatys, Ecker and Bethge, in two normalisations.

Notation (the paper's): at layer l, :math:`F^l` is the :math:`N_l \times M_l`
matrix of rectified responses of the generated image (N_l filters, M_l =
height x width positions), :math:`P^l` the content image's, :math:`G^l = F^l
{F^l}^T` its Gram matrix and :math:`A^l` the style image's Gram matrix.

``normalization='paper'`` is exactly the paper::

  L_content = 1/2 sum_ij (F_ij - P_ij)^2                        (content layers)
  E_l       = 1 / (4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2
  L_style   = sum_l w_l E_l,   w_l = 1/|L| by default
  L_total   = alpha L_content + beta L_style (+ tv_weight * TV)

``normalization='invariant'`` (the default) makes every term a mean, so that
the same weights give the same look at any image size and with a style image
of another size than the content::

  L_content = 1/2 mean_ij (F_ij - P_ij)^2 = L_content^paper / (N_l M_l)
  E_l       = 1 / (4 N_l^2) sum_ij (G_ij / M_l - A_ij / M_l^style)^2

Each Gram matrix is divided by its own number of positions, so it is a
spatial average that does not depend on image size; when content and style
have the same size, the invariant E_l equals the paper's E_l. The content term
differs by the factor N_l M_l, so an invariant ratio alpha/beta corresponds to
the paper's ratio (alpha/beta)_paper = (alpha/beta)_invariant / (N_l M_l), with
N_l, M_l of the content layer (for conv4_2 of a 512x512 image: N = 512,
M = 64*64, so the factor is 2,097,152).

Total variation (pixel units of the optimised RGB array, 0-255)::

  TV = sum (x[i+1, j] - x[i, j])^2 + sum (x[i, j+1] - x[i, j])^2   (paper)
  TV = the same sums, each divided by its element count          (invariant)

Other definitions of style (`style_loss`, `nst_jax.core.style_losses`) replace
E_l; spatial guidance (`spec.regions`, Gatys et al. CVPR 2017) computes E_l
per region r from the features weighted by the region's mask T_r at that
layer (`layer_masks`) and sums lambda_r E_l,r: for the Gram loss
G_r = sum_x T_r(x)^2 f(x) f(x)^T (divided by M_l when invariant), with each
T_r normalised so mean(T_r^2) = 1, so a region's Gram does not depend on the
region's size.

`gram_loss` takes F^T F not yet divided by the positions, so row strips
(`nst_jax.core.strips`) can sum it over strips first.

`nst_jax.core.objective` composes these terms over the network: the
targets, each layer's terms and the weighted total.

Everything here works on one image (H, W, C); sweeps `jax.vmap` over a
leading axis of the loss weights and targets.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from nst_jax.core import strips, vgg

NORMALIZATIONS = ('paper', 'invariant')
STYLE_LOSSES = ('gram', 'mean_std', 'mean_cov', 'sliced_wasserstein')
DEFAULT_CONTENT_LAYERS = ('conv4_2',)
DEFAULT_STYLE_LAYERS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The static part of a loss: which layers, which network, which formulas.

  Changing it recompiles; everything numeric lives in `LossWeights`.
  """
  content_layers: tuple = DEFAULT_CONTENT_LAYERS
  style_layers: tuple = DEFAULT_STYLE_LAYERS
  normalization: str = 'invariant'
  pooling: str = 'avg'
  preprocessing: str = 'caffe'
  dtype: str = 'float32'
  # 'winograd' computes most convolutions with Winograd's algorithm (fewer
  # multiply-adds; see winograd.choose_tile), 'direct' with lax.conv.
  conv_algorithm: str = 'direct'
  padding: str = 'zeros'        # vgg.PADDINGS
  style_loss: str = 'gram'      # STYLE_LOSSES
  regions: int = 0              # content masks (0: the whole image)
  sliced_redraw: bool = False   # sliced_wasserstein: directions per step
  # Video (nst_jax.core.temporal): fixed temporal references per frame (0: an
  # image, no temporal term), and the frames optimised together as one
  # problem (0: one image; N: pixels (N, H, W, 3), video.mode='joint').
  temporal: int = 0
  frames: int = 0
  # The temporal term's low-pass filter (`temporal.temporal_loss`): the
  # Gaussian's sigma in pixels, 0 for Ruder et al.'s loss as published.
  temporal_blur: float = 0.0
  # Row strips (nst_jax.core.strips): the layers up to `strip_split` run on this
  # many strips of rows, one after another, and the rest of the network
  # whole (0 or 1: the whole image at once). Exact: the Gram matrices and
  # the content term are sums over positions.
  row_strips: int = 0
  strip_split: str = 'pool2'    # strips.SPLITS

  def __post_init__(self):
    """Canonical layer names; refuses what no loss can compute.

    Raises:
      ValueError: for an unknown layer, normalisation or strip split, or
        row strips with a loss that strips cannot sum
        (`strips.unsupported`). A run's settings refuse these first, each
        naming its config field.
    """
    # Canonical names, so 'relu4_2' and 'conv4_2' are one spec.
    object.__setattr__(self, 'content_layers', tuple(
        vgg.canonical_layer(l) for l in self.content_layers))
    object.__setattr__(self, 'style_layers', tuple(
        vgg.canonical_layer(l) for l in self.style_layers))
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f'normalization: unknown {self.normalization!r}; '
                       'valid are ' + ', '.join(NORMALIZATIONS))
    if self.strip_split not in strips.SPLITS:
      raise ValueError(f'strip_split: unknown {self.strip_split!r}; valid '
                       'are ' + ', '.join(strips.SPLITS))
    if self.row_strips > 1 and strips.unsupported(self):
      raise ValueError(f'row_strips: {strips.unsupported(self)}')

  @property
  def layers(self) -> tuple:
    return tuple(dict.fromkeys(self.content_layers + self.style_layers))


@flax.struct.dataclass
class LossWeights:
  """The numeric loss settings: arrays, so they can be swept with vmap.

  Attributes:
    content_weight: alpha, scalar.
    style_weight: beta, scalar.
    tv_weight: weight of the total variation term, scalar.
    content_layer_weights: (len(content_layers),) weights of each content
      layer's loss.
    style_layer_weights: (len(style_layers),) the paper's w_l; a zero turns a
      layer off (Figure 3 sweeps the layer set this way).
    region_weights: (spec.regions,) each region's lambda_r.
    temporal_weight: gamma, the temporal loss's weight (video), scalar.
  """
  content_weight: jax.Array
  style_weight: jax.Array
  tv_weight: jax.Array
  content_layer_weights: jax.Array
  style_layer_weights: jax.Array
  region_weights: jax.Array      # (regions,) lambda_r, or (0,) without
  temporal_weight: jax.Array = np.float32(0.0)


def loss_weights(spec: LossSpec, content_weight=1.0, style_weight=1e3,
                 tv_weight=0.0, content_layer_weights=None,
                 style_layer_weights=None, region_weights=None,
                 temporal_weight=0.0) -> LossWeights:
  """Builds `LossWeights`; layer weights default to 1/|L| (the paper's w_l),
  region weights to 1/regions."""
  # NumPy: these are inputs, placed on devices with the other arguments.
  def layer_weights(given, layers):
    if given is None:
      return np.full((len(layers),), 1.0 / max(len(layers), 1), np.float32)
    return np.asarray(given, np.float32)
  f32 = lambda v: np.asarray(v, np.float32)
  return LossWeights(
      content_weight=f32(content_weight), style_weight=f32(style_weight),
      tv_weight=f32(tv_weight),
      content_layer_weights=layer_weights(content_layer_weights,
                                          spec.content_layers),
      style_layer_weights=layer_weights(style_layer_weights,
                                        spec.style_layers),
      region_weights=layer_weights(region_weights, range(spec.regions)),
      temporal_weight=f32(temporal_weight))


def gram_matrix(features: jax.Array, normalize: bool) -> jax.Array:
  """G = F F^T of (H, W, N) features, summed in float32.

  Float32 features are multiplied at `Precision.HIGHEST` (TPUs and GPUs
  would otherwise round them to bfloat16 or TF32, too coarse for sums over
  10^5 positions). bfloat16 features (`dtype='bfloat16'`) are multiplied as
  they are with float32 accumulation: a product of two bfloat16 numbers is
  exact in float32, so the forward result is the same as at HIGHEST in
  float32, on the matrix units' native path.

  Args:
    features: (height, width, channels) rectified responses.
    normalize: divide by the number of positions M = height * width.
  Returns:
    (N, N) float32 Gram matrix.
  """
  flat = features.reshape(-1, features.shape[-1])
  if flat.dtype != jnp.bfloat16:
    flat = flat.astype(jnp.float32)
  gram = _gram(flat)
  if normalize:
    gram = gram / flat.shape[0]
  return gram


@jax.custom_vjp
def _gram(flat):
  """F^T F of (M, N) features, float32 (see `gram_matrix`)."""
  if flat.dtype == jnp.bfloat16:
    return jnp.matmul(flat.T, flat, preferred_element_type=jnp.float32)
  return jnp.matmul(flat.T, flat, precision=lax.Precision.HIGHEST)


def _gram_fwd(flat):
  return _gram(flat), flat


def _gram_bwd(flat, grad_gram):
  # d(F^T F) = dF^T F + F^T dF, so the features' cotangent is
  # F (dG + dG^T): one (M, N) x (N, N) product. XLA's own transpose of the
  # matmul computes F dG and F dG^T as two products, which doubles the
  # Gram matrices' share of the backward pass. In float32 at HIGHEST
  # precision, then rounded to the features' dtype.
  return (jnp.matmul(flat.astype(jnp.float32), grad_gram + grad_gram.T,
                     precision=lax.Precision.HIGHEST).astype(flat.dtype),)


_gram.defvjp(_gram_fwd, _gram_bwd)


def blend_style_targets(grams: Sequence[dict],
                        blend_weights: Sequence[float]) -> dict:
  """Mixes several styles' statistics (Gram matrices, moments, sorted
  projections: each blends linearly) with weights normalised to sum 1."""
  weights = jnp.asarray(blend_weights, jnp.float32)
  weights = weights / jnp.sum(weights)
  return jax.tree_util.tree_map(
      lambda *gs: sum(w * g for w, g in zip(weights, gs)), *grams)


def content_layer_loss(features, target, normalization):
  """1/2 sum (F - P)^2 ('paper') or 1/2 mean (F - P)^2 ('invariant')."""
  squared = jnp.square(features.astype(jnp.float32) - target)
  if normalization == 'paper':
    return 0.5 * jnp.sum(squared)
  return 0.5 * jnp.mean(squared)


def style_layer_loss(features, target_gram, normalization):
  """E_l for one layer: see the module docstring."""
  positions = features.shape[0] * features.shape[1]
  return gram_loss(gram_matrix(features, False), target_gram, positions,
                   normalization)


def gram_loss(gram, target_gram, positions: int, normalization):
  """E_l from the layer's F^T F summed over its `positions` (not yet
  divided by them): see the module docstring.

  Args:
    gram: (N, N) float32 F^T F.
    target_gram: A^l (divided by the style's positions when invariant).
    positions: M_l, the generated image's positions at this layer.
    normalization: 'paper' or 'invariant'.
  Returns:
    The scalar E_l.
  """
  channels = gram.shape[-1]
  if normalization == 'invariant':
    gram = gram / positions
  squared_error = jnp.sum(jnp.square(gram - target_gram))
  if normalization == 'paper':
    return squared_error / (4.0 * channels ** 2 * float(positions) ** 2)
  return squared_error / (4.0 * channels ** 2)


def total_variation(pixels: jax.Array, normalization: str) -> jax.Array:
  """Sum (paper) or mean (invariant) of squared neighbour differences."""
  down = jnp.square(pixels[1:] - pixels[:-1])
  right = jnp.square(pixels[:, 1:] - pixels[:, :-1])
  if normalization == 'paper':
    return jnp.sum(down) + jnp.sum(right)
  return jnp.mean(down) + jnp.mean(right)


def layer_masks(masks, layers) -> dict:
  """Region masks at each of `layers`: {layer: (R, h, w)}.

  The (R, H, W) masks at the image's size follow the network: each 2 x 2
  pooling averages them as it averages (or maxes) the features, so a
  layer's mask weighs its positions by how much of their own pooled
  neighbourhood lies in the region; convolutions keep the size. Each is
  then normalised, T <- T / sqrt(mean(T^2)), and a region empty at a layer
  is all zeros there (its term is skipped).
  """
  wanted = set(layers)
  masks = jnp.asarray(masks, jnp.float32)
  result = {}
  for name in vgg.layers_to_run(layers):
    if name.startswith('pool'):
      regions, height, width = masks.shape
      masks = masks[:, :height // 2 * 2, :width // 2 * 2].reshape(
          regions, height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    if name in wanted:
      norm = jnp.sqrt(jnp.mean(jnp.square(masks), axis=(1, 2),
                               keepdims=True))
      result[name] = jnp.where(norm > 0, masks / jnp.where(norm > 0, norm, 1),
                               0.0)
  return result
