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

from nst_jax import vgg
from nst_jax.errors import UserError

NORMALIZATIONS = ('paper', 'invariant')
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
  # Rematerialise: keep only each VGG block's input and the loss layers'
  # outputs for the backward pass and recompute the rest block by block
  # (less memory, about a third more compute; see vgg.py).
  remat: bool = False
  # 'winograd' computes most convolutions with Winograd's algorithm (fewer
  # multiply-adds; see vgg.winograd_tile), 'direct' with lax.conv.
  conv_algorithm: str = 'direct'

  def __post_init__(self):
    # Canonical names, so 'relu4_2' and 'conv4_2' are one spec.
    object.__setattr__(self, 'content_layers', tuple(
        vgg.canonical_layer(l) for l in self.content_layers))
    object.__setattr__(self, 'style_layers', tuple(
        vgg.canonical_layer(l) for l in self.style_layers))
    if self.normalization not in NORMALIZATIONS:
      raise UserError(f'loss_normalization: unknown {self.normalization!r}; '
                      'valid are ' + ', '.join(NORMALIZATIONS))

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
  """
  content_weight: jax.Array
  style_weight: jax.Array
  tv_weight: jax.Array
  content_layer_weights: jax.Array
  style_layer_weights: jax.Array


def loss_weights(spec: LossSpec, content_weight=1.0, style_weight=1e3,
                 tv_weight=0.0, content_layer_weights=None,
                 style_layer_weights=None) -> LossWeights:
  """Builds `LossWeights`; layer weights default to 1/|L| (the paper's w_l)."""
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
                                        spec.style_layers))


def gram_matrix(features: jax.Array, normalize: bool) -> jax.Array:
  """G = F F^T of (H, W, N) features, summed in float32.

  Args:
    features: (height, width, channels) rectified responses.
    normalize: divide by the number of positions M = height * width.
  Returns:
    (N, N) float32 Gram matrix.
  """
  flat = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
  gram = _gram(flat)
  if normalize:
    gram = gram / flat.shape[0]
  return gram


@jax.custom_vjp
def _gram(flat):
  """F^T F of (M, N) features.

  HIGHEST precision: on TPU the default float32 matmul uses bfloat16 passes,
  too coarse for sums over 10^5 positions.
  """
  return jnp.matmul(flat.T, flat, precision=lax.Precision.HIGHEST)


def _gram_fwd(flat):
  return _gram(flat), flat


def _gram_bwd(flat, grad_gram):
  # d(F^T F) = dF^T F + F^T dF, so the features' cotangent is
  # F (dG + dG^T): one (M, N) x (N, N) product. XLA's own transpose of the
  # matmul computes F dG and F dG^T as two products, which doubles the
  # Gram matrices' share of the backward pass.
  return (jnp.matmul(flat, grad_gram + grad_gram.T,
                     precision=lax.Precision.HIGHEST),)


_gram.defvjp(_gram_fwd, _gram_bwd)


def style_targets(features: dict, spec: LossSpec) -> dict:
  """Target Gram matrices A^l of one style image's features {layer: (H,W,N)}.

  'paper' keeps the raw sum over positions, 'invariant' divides by M_style.
  """
  normalize = spec.normalization == 'invariant'
  return {l: gram_matrix(features[l], normalize) for l in spec.style_layers}


def blend_style_targets(grams: Sequence[dict],
                        blend_weights: Sequence[float]) -> dict:
  """Mixes several styles' target Grams with weights normalised to sum 1."""
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
  channels = features.shape[-1]
  positions = features.shape[0] * features.shape[1]
  gram = gram_matrix(features, normalization == 'invariant')
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


@flax.struct.dataclass
class Targets:
  """What the loss compares against: content features and style Grams."""
  content_features: dict
  style_grams: dict


def image_features(variables, pixels, spec: LossSpec, layers=None) -> dict:
  """Features {layer: (H, W, C)} of one RGB 0-255 image (H, W, 3)."""
  network_input = vgg.preprocess(pixels.astype(jnp.float32),
                                 spec.preprocessing)
  features = vgg.extract_features(
      variables, network_input[None], tuple(layers or spec.layers),
      pooling=spec.pooling, dtype=jnp.dtype(spec.dtype), remat=spec.remat,
      conv_algorithm=spec.conv_algorithm)
  return {name: f[0] for name, f in features.items()}


def make_targets(variables, content_pixels, style_pixels_list, spec: LossSpec,
                 blend_weights=None) -> Targets:
  """Content features and (blended) style Grams for the loss.

  Args:
    variables: VGG variables (`vgg.prepare_variables`).
    content_pixels: (H, W, 3) RGB 0-255.
    style_pixels_list: list of (H_k, W_k, 3) style images (any sizes).
    spec: the loss spec.
    blend_weights: one weight per style image (default: equal).
  Returns:
    `Targets`.
  """
  content = {}
  if spec.content_layers:
    content = image_features(variables, content_pixels, spec,
                             spec.content_layers)
    content = {l: content[l].astype(jnp.float32) for l in spec.content_layers}
  grams = [style_targets(image_features(variables, s, spec,
                                        spec.style_layers), spec)
           if spec.style_layers else {} for s in style_pixels_list]
  if blend_weights is None:
    blend_weights = [1.0] * len(grams)
  return Targets(content_features=content,
                 style_grams=blend_style_targets(grams, blend_weights))


def loss_terms(pixels, variables, targets: Targets,
               loss_weights: LossWeights, spec: LossSpec) -> dict:
  """All loss terms of RGB pixels (H, W, 3) in [0, 255].

  Returns:
    {'total', 'content', 'style', 'tv', 'style_layers': {name: E_l}}, where
    content and style are before alpha and beta (content already weighted
    per layer, style = sum_l w_l E_l) and total is after.
  """
  features = image_features(variables, pixels, spec)
  norm = spec.normalization
  zero = jnp.zeros((), jnp.float32)
  content = sum((
      loss_weights.content_layer_weights[i] * content_layer_loss(
          features[l], targets.content_features[l], norm)
      for i, l in enumerate(spec.content_layers)), zero)
  style_layers = {l: style_layer_loss(features[l], targets.style_grams[l],
                                      norm) for l in spec.style_layers}
  style = sum((loss_weights.style_layer_weights[i] * style_layers[l]
               for i, l in enumerate(spec.style_layers)), zero)
  tv = total_variation(pixels.astype(jnp.float32), norm)
  total = (loss_weights.content_weight * content + loss_weights.style_weight * style
           + loss_weights.tv_weight * tv)
  return {'total': total, 'content': content, 'style': style, 'tv': tv,
          'style_layers': style_layers}


def total_loss(pixels, variables, targets, loss_weights, spec) -> jax.Array:
  """The scalar the optimiser minimises (see `loss_terms`)."""
  return loss_terms(pixels, variables, targets, loss_weights, spec)['total']
