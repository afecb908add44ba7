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

With `spec.row_strips` (`nst_jax.core.strips`) the Gram loss without regions
takes the same terms from sums over strips of rows (`strip_sums`): F^T F
and sum (F - P)^2 add up over the strips, and are divided only after, so
the loss and gradient equal the whole image's to rounding.

Everything here works on one image (H, W, C); sweeps `jax.vmap` over a
leading axis of the loss weights and targets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from nst_jax.core import strips, style_losses, temporal, vgg
from nst_jax.errors import UserError

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
  # Rematerialise: keep only each VGG block's input and the loss layers'
  # outputs for the backward pass and recompute the rest block by block
  # (less memory, about a third more compute; see vgg.py).
  remat: bool = False
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
  # Row strips (nst_jax.core.strips): the layers up to `strip_split` run on this
  # many strips of rows, one after another, and the rest of the network
  # whole (0 or 1: the whole image at once). Exact: the Gram matrices and
  # the content term are sums over positions.
  row_strips: int = 0
  strip_split: str = 'pool2'    # strips.SPLITS

  def __post_init__(self):
    # Canonical names, so 'relu4_2' and 'conv4_2' are one spec.
    object.__setattr__(self, 'content_layers', tuple(
        vgg.canonical_layer(l) for l in self.content_layers))
    object.__setattr__(self, 'style_layers', tuple(
        vgg.canonical_layer(l) for l in self.style_layers))
    if self.normalization not in NORMALIZATIONS:
      raise UserError(f'loss_normalization: unknown {self.normalization!r}; '
                      'valid are ' + ', '.join(NORMALIZATIONS))
    if self.strip_split not in strips.SPLITS:
      raise UserError(f'strip_split: unknown {self.strip_split!r}; valid '
                      'are ' + ', '.join(strips.SPLITS))
    if self.row_strips > 1 and strips.unsupported(self):
      raise UserError(f'config.row_strips: {strips.unsupported(self)}; '
                      'set row_strips=0 or 1')

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


@flax.struct.dataclass
class Targets:
  """What the loss compares against.

  Attributes:
    content_features: {content layer: P^l}.
    style_statistics: {style layer: the style loss's target}: the Gram
      matrix A^l for 'gram', see `nst_jax.core.style_losses` for the others; with
      regions, a leading axis of one per region.
    region_masks: {style layer: (regions, h, w)} normalised masks
      (`layer_masks`), or None without regions.
    directions: {style layer: (N, N)} the sliced loss's projections, or
      None.
    redraw: with `spec.sliced_redraw`, what redraws the sliced loss's
      directions and targets at every step: {'features': {style layer:
      [each style's (M_k, N) features]}, 'blend': the blend weights, 'seed',
      'step'} (the optimiser sets 'step'); else None.
    temporal: with `spec.temporal` (video), the fixed references:
      {'warped': (J, H, W, 3) earlier stylised frames warped into this one,
      'certainty': (J, H, W)}; with `spec.frames` (a joint window) also
      {'flows': (N - 1, H, W, 2) from each frame to the one before,
      'neighbour_certainty': (N - 1, H, W)}, the fixed references applying
      to the window's first frame. None for an image.
  """
  content_features: dict
  style_statistics: dict
  region_masks: Any = None
  directions: Any = None
  redraw: Any = None
  temporal: Any = None


def redrawn(targets: Targets, spec: LossSpec, step) -> Targets:
  """`targets` with the sliced loss's directions and targets drawn for
  `step` (from the seed and the step): new directions every step, so that
  over many steps every direction counts, as Heitz et al. draw them."""
  redraw = targets.redraw
  seed = jax.random.fold_in(jax.random.key(redraw['seed']), step)
  seed = jax.random.randint(seed, (), 0, jnp.iinfo(jnp.int32).max)
  directions = style_losses.layer_directions(seed, {
      l: vgg.layer_channels(l) for l in spec.style_layers})
  positions = {l: s['sorted'].shape[0]
               for l, s in targets.style_statistics.items()}
  statistics = {l: style_losses.style_target(
      spec.style_loss, redraw['features'][l], redraw['blend'],
      directions=directions[l], positions=positions[l])
                for l in spec.style_layers}
  return targets.replace(style_statistics=statistics, directions=directions)


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


def image_features(variables, pixels, spec: LossSpec, layers=None) -> dict:
  """Features {layer: (H, W, C)} of one RGB 0-255 image (H, W, 3)."""
  network_input = vgg.preprocess(pixels.astype(jnp.float32),
                                 spec.preprocessing)
  features = vgg.extract_features(
      variables, network_input[None], tuple(layers or spec.layers),
      pooling=spec.pooling, dtype=jnp.dtype(spec.dtype), remat=spec.remat,
      conv_algorithm=spec.conv_algorithm, padding=spec.padding)
  return {name: f[0] for name, f in features.items()}


def _flat(features):
  return features.reshape(-1, features.shape[-1]).astype(jnp.float32)


def strip_sums(variables, pixels, spec: LossSpec, grams=(), contents=None,
               maps=()) -> tuple:
  """What the losses need of one image (H, W, 3), through `spec.row_strips`
  strips of rows (`nst_jax.core.strips`): exact sums over positions, and whole
  maps only where asked.

  Args:
    variables: VGG variables.
    pixels: RGB 0-255.
    spec: the loss spec (`row_strips` > 1, `strip_split`).
    grams: layers whose F^T F (summed over positions, not divided) is
      returned.
    contents: {layer: P^l} content targets whose sum (F - P)^2 is returned.
    maps: layers whose whole features are returned (the content targets';
      the early layers' maps are stitched from the strips).
  Returns:
    ({layer: F^T F}, {layer: sum (F - P)^2}, {layer: (h, w, c) features}).
  """
  contents = contents or {}
  layers = tuple(dict.fromkeys(tuple(grams) + tuple(contents) + tuple(maps)))
  plan = strips.make_plan(pixels.shape[0], spec.row_strips, spec.strip_split,
                          layers)
  late = strips.runs_whole(plan, layers)
  early = lambda names: tuple(l for l in names if l in plan.layers)
  keep = early(maps) + ((plan.split,) if late else ())

  def summarize(index, features):
    """One strip's Gram matrices and content squared differences."""
    return ({l: gram_matrix(features[l], False) for l in early(grams)},
            {l: jnp.sum(jnp.square(
                features[l].astype(jnp.float32) - strips.strip_of(
                    contents[l], plan, index, vgg.layer_level(l))))
             for l in early(contents)})

  network_input = vgg.preprocess(pixels.astype(jnp.float32),
                                 spec.preprocessing)
  (gram_sums, squared), features = strips.run(
      variables, network_input, plan, summarize,
      early(grams) + early(contents), keep, pooling=spec.pooling,
      dtype=jnp.dtype(spec.dtype), padding=spec.padding)
  if late:
    rest = vgg.extract_features(
        variables, features[plan.split][None], late, pooling=spec.pooling,
        dtype=jnp.dtype(spec.dtype), remat=spec.remat,
        conv_algorithm=spec.conv_algorithm, padding=spec.padding,
        start_after=plan.split)
    features.update({l: f[0] for l, f in rest.items()})
    gram_sums.update({l: gram_matrix(features[l], False)
                      for l in late if l in grams})
    squared.update({l: jnp.sum(jnp.square(
        features[l].astype(jnp.float32) - contents[l]))
                    for l in late if l in contents})
  return gram_sums, squared, {l: features[l] for l in maps}


def _positions(pixels, layer) -> int:
  """M_l: the positions of `layer` for an image like `pixels`."""
  return math.prod(vgg.feature_size(*pixels.shape[:2], layer))


def _strip_targets(variables, content_pixels, style_pixels_list,
                   spec: LossSpec, blend_weights) -> Targets:
  """`make_targets` through row strips (the Gram loss, no regions)."""
  content = {}
  if spec.content_layers:
    _, _, content = strip_sums(variables, content_pixels, spec,
                               maps=spec.content_layers)
    content = {l: f.astype(jnp.float32) for l, f in content.items()}
  grams = []
  for style in style_pixels_list:
    # Strips no taller than the content's: a style image taller than the
    # content (a square painting for a 4:3 photo) takes more of them.
    count = -(-spec.row_strips * style.shape[0] // content_pixels.shape[0])
    style_spec = dataclasses.replace(spec, row_strips=max(count,
                                                          spec.row_strips))
    sums, _, _ = strip_sums(variables, style, style_spec,
                            grams=spec.style_layers)
    if spec.normalization == 'invariant':
      sums = {l: g / _positions(style, l) for l, g in sums.items()}
    grams.append(sums)
  if blend_weights is None:
    blend_weights = [1.0] * len(style_pixels_list)
  statistics = {l: blend_style_targets([g[l] for g in grams], blend_weights)
                for l in spec.style_layers}
  return Targets(content_features=content, style_statistics=statistics)


def make_targets(variables, content_pixels, style_pixels_list, spec: LossSpec,
                 blend_weights=None, content_masks=None, style_masks=None,
                 seed=0) -> Targets:
  """Content features and style targets for the loss.

  Args:
    variables: VGG variables (`vgg.prepare_variables`).
    content_pixels: (H, W, 3) RGB 0-255.
    style_pixels_list: list of (H_k, W_k, 3) style images (any sizes); with
      regions, one per region.
    spec: the loss spec.
    blend_weights: one weight per style image (default: equal); unused with
      regions.
    content_masks: (R, H, W) region masks in [0, 1] when `spec.regions`.
    style_masks: optional [(H_k, W_k)] the part of each style image whose
      statistics count (default: all of it).
    seed: draws the sliced loss's directions.
  Returns:
    `Targets`.
  """
  if spec.row_strips > 1:
    return _strip_targets(variables, content_pixels, style_pixels_list, spec,
                          blend_weights)
  content = {}
  if spec.content_layers:
    content = image_features(variables, content_pixels, spec,
                             spec.content_layers)
    content = {l: content[l].astype(jnp.float32) for l in spec.content_layers}
  directions = positions = None
  if spec.style_loss == 'sliced_wasserstein':
    directions = style_losses.layer_directions(seed, {
        l: vgg.layer_channels(l) for l in spec.style_layers})
    # The style's quantiles are read at the generated image's positions.
    positions = {l: math.prod(vgg.feature_size(*content_pixels.shape[:2], l))
                 for l in spec.style_layers}
  features, masks = [], []
  for k, style in enumerate(style_pixels_list):
    features.append(image_features(variables, style, spec, spec.style_layers)
                    if spec.style_layers else {})
    masks.append(layer_masks(style_masks[k][None], spec.style_layers)
                 if style_masks else None)

  def target(layer, styles, weights):
    """The target at `layer` of the styles `styles` (indices) blended."""
    style_masks_at = [None if masks[k] is None else masks[k][layer][0]
                      for k in styles]
    if spec.style_loss == 'gram':
      grams = [gram_matrix(features[k][layer] if mask is None
                           else features[k][layer] * mask[..., None],
                           spec.normalization == 'invariant')
               for k, mask in zip(styles, style_masks_at)]
      return blend_style_targets(grams, weights)
    return style_losses.style_target(
        spec.style_loss, [_flat(features[k][layer]) for k in styles], weights,
        [None if mask is None else jnp.square(mask).reshape(-1)
         for mask in style_masks_at],
        directions=None if directions is None else directions[layer],
        positions=None if positions is None else positions[layer])

  region_masks = None
  if spec.regions:
    # One style per region: stacked, not blended.
    region_masks = layer_masks(content_masks, spec.style_layers)
    targets = {l: jax.tree_util.tree_map(
        lambda *xs: jnp.stack(xs),
        *[target(l, [r], [1.0]) for r in range(spec.regions)])
               for l in spec.style_layers}
  else:
    if blend_weights is None:
      blend_weights = [1.0] * len(style_pixels_list)
    targets = {l: target(l, range(len(style_pixels_list)), blend_weights)
               for l in spec.style_layers}
  redraw = None
  if spec.sliced_redraw:
    redraw = {'features': {l: [_flat(f[l]) for f in features]
                           for l in spec.style_layers},
              'blend': jnp.asarray(blend_weights, jnp.float32),
              'seed': jnp.asarray(seed, jnp.uint32),
              'step': jnp.zeros((), jnp.int32)}
  return Targets(content_features=content, style_statistics=targets,
                 region_masks=region_masks, directions=directions,
                 redraw=redraw)


def style_layer_term(spec, features, target, loss_weights, masks=None,
                     directions=None):
  """E_l of one layer: the style loss of `spec.style_loss`, or with regions
  sum_r lambda_r E_l,r over the regions not empty at this layer."""
  def one(target, mask=None):
    if spec.style_loss == 'gram':
      weighted = features if mask is None else features * mask[..., None]
      return style_layer_loss(weighted, target, spec.normalization)
    weights = None if mask is None else jnp.square(mask).reshape(-1)
    return style_losses.layer_loss(spec.style_loss, _flat(features), target,
                                   weights, directions)
  if masks is None:
    return one(target)
  per_region = jax.vmap(one)(target, masks)
  present = jnp.max(masks, axis=(1, 2)) > 0
  return jnp.sum(jnp.where(present, loss_weights.region_weights * per_region,
                           0.0))


def loss_terms(pixels, variables, targets: Targets,
               loss_weights: LossWeights, spec: LossSpec) -> dict:
  """All loss terms of RGB pixels (H, W, 3) in [0, 255].

  With `spec.frames` (a joint video window) the pixels are (N, H, W, 3) and
  each term is the sum over the frames; with `spec.temporal` or
  `spec.frames` there is also 'temporal' (`nst_jax.core.temporal`), weighted by
  gamma in the total.

  Returns:
    {'total', 'content', 'style', 'tv', 'style_layers': {name: E_l}}, where
    content and style are before alpha and beta (content already weighted
    per layer, style = sum_l w_l E_l) and total is after.
  """
  if not (spec.temporal or spec.frames):
    return _image_terms(pixels, variables, targets, loss_weights, spec)
  image_spec = dataclasses.replace(spec, temporal=0, frames=0)
  image_targets = targets.replace(temporal=None)
  reference = targets.temporal
  if spec.frames:
    per_frame = jax.vmap(
        lambda frame, content: _image_terms(
            frame, variables, image_targets.replace(content_features=content),
            loss_weights, image_spec))(pixels, targets.content_features)
    terms = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_frame)
    temporal_term = temporal.neighbours_loss(
        pixels, reference['flows'], reference['neighbour_certainty'])
    first = pixels[0]
  else:
    terms = _image_terms(pixels, variables, image_targets, loss_weights,
                         image_spec)
    temporal_term = jnp.zeros((), jnp.float32)
    first = pixels
  temporal_term += temporal.fixed_references_loss(
      first, reference['warped'], reference['certainty'])
  terms['temporal'] = temporal_term
  terms['total'] = terms['total'] + loss_weights.temporal_weight * temporal_term
  return terms


def _image_terms(pixels, variables, targets: Targets,
                 loss_weights: LossWeights, spec: LossSpec) -> dict:
  """`loss_terms` of one image, without a temporal term."""
  if spec.sliced_redraw:
    targets = redrawn(targets, spec, targets.redraw['step'])
  norm = spec.normalization
  if spec.row_strips > 1:
    content_layers, style_layers = _strip_layer_terms(pixels, variables,
                                                      targets, spec)
  else:
    features = image_features(variables, pixels, spec)
    content_layers = {l: content_layer_loss(
        features[l], targets.content_features[l], norm)
                      for l in spec.content_layers}
    style_layers = {l: style_layer_term(
        spec, features[l], targets.style_statistics[l], loss_weights,
        None if targets.region_masks is None else targets.region_masks[l],
        None if targets.directions is None else targets.directions[l])
                    for l in spec.style_layers}
  zero = jnp.zeros((), jnp.float32)
  content = sum((loss_weights.content_layer_weights[i] * content_layers[l]
                 for i, l in enumerate(spec.content_layers)), zero)
  style = sum((loss_weights.style_layer_weights[i] * style_layers[l]
               for i, l in enumerate(spec.style_layers)), zero)
  tv = total_variation(pixels.astype(jnp.float32), norm)
  total = (loss_weights.content_weight * content + loss_weights.style_weight * style
           + loss_weights.tv_weight * tv)
  return {'total': total, 'content': content, 'style': style, 'tv': tv,
          'style_layers': style_layers}


def _strip_layer_terms(pixels, variables, targets: Targets,
                       spec: LossSpec) -> tuple:
  """Each content layer's loss and each style layer's E_l, through row
  strips: ({content layer: loss}, {style layer: E_l})."""
  grams, squared, _ = strip_sums(variables, pixels, spec,
                                 grams=spec.style_layers,
                                 contents=targets.content_features)
  content = {}
  for layer, total in squared.items():
    if spec.normalization == 'invariant':  # the mean over F's entries
      total = total / targets.content_features[layer].size
    content[layer] = 0.5 * total
  style = {l: gram_loss(grams[l], targets.style_statistics[l],
                        _positions(pixels, l), spec.normalization)
           for l in spec.style_layers}
  return content, style


def total_loss(pixels, variables, targets, loss_weights, spec) -> jax.Array:
  """The scalar the optimiser minimises (see `loss_terms`)."""
  return loss_terms(pixels, variables, targets, loss_weights, spec)['total']
