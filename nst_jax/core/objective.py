r"""The objective: the targets a run compares against and the loss it minimises.

`nst_jax.core.losses` holds the formulas (content, Gram and total
variation terms, the spec and weights); this module composes them over the
network into the scalar the optimiser minimises::

  L_total = alpha sum_c v_c L_content,c + beta sum_l w_l E_l + tv_weight TV
            (+ gamma L_temporal for a video)

with v_c and w_l the layers' weights (`losses.LossWeights`).

* `make_targets` computes, once per run, the content features P^l and the
  style's statistics (blended over several styles, one per region with
  spatial guidance) that the loss compares against (`Targets`).
* `loss_terms` evaluates each term of the generated image; `total_loss` is
  its total.

With `spec.row_strips` (`nst_jax.core.strips`) the Gram loss without regions
takes the same terms from sums over strips of rows (`strip_sums`): F^T F
and sum (F - P)^2 add up over the strips, and are divided only after, so
the loss and gradient equal the whole image's to rounding.

With `spec.temporal` or `spec.frames` (video, `nst_jax.core.temporal`) the
terms add Ruder et al.'s temporal loss; a joint window of `spec.frames`
frames sums each frame's terms.

Everything here works on one image (H, W, C); sweeps `jax.vmap` over a
leading axis of the loss weights and targets.

Example::

  targets = objective.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 1.0, 1e3)
  loss = objective.total_loss(pixels, variables, targets, weights, spec)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from nst_jax.core import losses, strips, style_losses, temporal, vgg


@flax.struct.dataclass
class Targets:
  """What the loss compares against.

  Attributes:
    content_features: {content layer: P^l}.
    style_statistics: {style layer: the style loss's target}: the Gram
      matrix A^l for 'gram', see `nst_jax.core.style_losses` for the
      others; with regions, a leading axis of one per region.
    region_masks: {style layer: (regions, h, w)} normalised masks
      (`losses.layer_masks`), or None without regions.
    directions: {style layer: (N, N)} the sliced loss's projections, or
      None.
    redraw: with `spec.sliced_redraw`, what redraws the sliced loss's
      directions and targets at every step: {'features': {style layer:
      [each style's (M_k, N) features]}, 'blend': the blend weights,
      'seed'}; the draw also depends on the step (`loss_terms`' `step`).
      Else None.
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


def redrawn(targets: Targets, spec: losses.LossSpec, step) -> Targets:
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


def image_features(variables, pixels, spec: losses.LossSpec,
                   layers=None) -> dict:
  """Features {layer: (H, W, C)} of one RGB 0-255 image (H, W, 3).

  Args:
    variables: VGG variables (`vgg.prepare_variables`).
    pixels: (H, W, 3) RGB 0-255.
    spec: the loss spec (network, dtype, convolutions, padding).
    layers: the layers wanted (default: `spec.layers`).
  Returns:
    {canonical layer name: (h, w, channels)} in `spec.dtype`.
  """
  network_input = vgg.preprocess(pixels.astype(jnp.float32),
                                 spec.preprocessing)
  features = vgg.extract_features(
      variables, network_input[None], tuple(layers or spec.layers),
      pooling=spec.pooling, dtype=jnp.dtype(spec.dtype),
      conv_algorithm=spec.conv_algorithm, padding=spec.padding)
  return {name: f[0] for name, f in features.items()}


def _flat(features):
  return features.reshape(-1, features.shape[-1]).astype(jnp.float32)


def strip_sums(variables, pixels, spec: losses.LossSpec, grams=(),
               contents=None, maps=()) -> tuple:
  """What the losses need of one image (H, W, 3), through `spec.row_strips`
  strips of rows (`nst_jax.core.strips`): exact sums over positions, and
  whole maps only where asked.

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
    return ({l: losses.gram_matrix(features[l], False) for l in early(grams)},
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
        dtype=jnp.dtype(spec.dtype), conv_algorithm=spec.conv_algorithm,
        padding=spec.padding, start_after=plan.split)
    features.update({l: f[0] for l, f in rest.items()})
    gram_sums.update({l: losses.gram_matrix(features[l], False)
                      for l in late if l in grams})
    squared.update({l: jnp.sum(jnp.square(
        features[l].astype(jnp.float32) - contents[l]))
                    for l in late if l in contents})
  return gram_sums, squared, {l: features[l] for l in maps}


def _positions(pixels, layer) -> int:
  """M_l: the positions of `layer` for an image like `pixels`."""
  return math.prod(vgg.feature_size(*pixels.shape[:2], layer))


def _strip_targets(variables, content_pixels, style_pixels_list,
                   spec: losses.LossSpec, blend_weights) -> Targets:
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
  statistics = {l: losses.blend_style_targets([g[l] for g in grams],
                                              blend_weights)
                for l in spec.style_layers}
  return Targets(content_features=content, style_statistics=statistics)


def make_targets(variables, content_pixels, style_pixels_list,
                 spec: losses.LossSpec, blend_weights=None,
                 content_masks=None, style_masks=None, seed=0) -> Targets:
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
    masks.append(losses.layer_masks(style_masks[k][None], spec.style_layers)
                 if style_masks else None)

  def target(layer, styles, weights):
    """The target at `layer` of the styles `styles` (indices) blended."""
    style_masks_at = [None if masks[k] is None else masks[k][layer][0]
                      for k in styles]
    if spec.style_loss == 'gram':
      grams = [losses.gram_matrix(features[k][layer] if mask is None
                                  else features[k][layer] * mask[..., None],
                                  spec.normalization == 'invariant')
               for k, mask in zip(styles, style_masks_at)]
      return losses.blend_style_targets(grams, weights)
    return style_losses.style_target(
        spec.style_loss, [_flat(features[k][layer]) for k in styles], weights,
        [None if mask is None else jnp.square(mask).reshape(-1)
         for mask in style_masks_at],
        directions=None if directions is None else directions[layer],
        positions=None if positions is None else positions[layer])

  region_masks = None
  if spec.regions:
    # One style per region: stacked, not blended.
    region_masks = losses.layer_masks(content_masks, spec.style_layers)
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
              'seed': jnp.asarray(seed, jnp.uint32)}
  return Targets(content_features=content, style_statistics=targets,
                 region_masks=region_masks, directions=directions,
                 redraw=redraw)


def style_layer_term(spec, features, target, loss_weights, masks=None,
                     directions=None):
  """E_l of one layer: the style loss of `spec.style_loss`, or with regions
  sum_r lambda_r E_l,r over the regions not empty at this layer.

  Args:
    spec: the loss spec.
    features: (h, w, N) the generated image's features at the layer.
    target: the layer's `Targets.style_statistics` (with regions, a leading
      axis of one per region).
    loss_weights: `losses.LossWeights` (its region weights lambda_r).
    masks: (regions, h, w) the layer's region masks, or None.
    directions: the sliced loss's projections at the layer, or None.
  Returns:
    The scalar E_l.
  """
  def one(target, mask=None):
    if spec.style_loss == 'gram':
      weighted = features if mask is None else features * mask[..., None]
      return losses.style_layer_loss(weighted, target, spec.normalization)
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
               loss_weights: losses.LossWeights,
               spec: losses.LossSpec, step=0) -> dict:
  """All loss terms of RGB pixels (H, W, 3) in [0, 255].

  With `spec.frames` (a joint video window) the pixels are (N, H, W, 3) and
  each term is the sum over the frames; with `spec.temporal` or
  `spec.frames` there is also 'temporal' (`nst_jax.core.temporal`),
  weighted by gamma in the total.

  Args:
    pixels: the generated image (or window of frames), RGB 0-255.
    variables: VGG variables (`vgg.prepare_variables`).
    targets: `make_targets` output (with `temporal` set for a video).
    loss_weights: `losses.loss_weights` output.
    spec: the loss spec (static).
    step: the optimiser's step this evaluation belongs to (0: the start):
      with `spec.sliced_redraw` the sliced loss's directions are drawn for
      it (`redrawn`); otherwise unused.
  Returns:
    {'total', 'content', 'style', 'tv', 'style_layers': {name: E_l}}, where
    content and style are before alpha and beta (content already weighted
    per layer, style = sum_l w_l E_l) and total is after.
  """
  if not (spec.temporal or spec.frames):
    return _image_terms(pixels, variables, targets, loss_weights, spec,
                        step)
  image_spec = dataclasses.replace(spec, temporal=0, frames=0)
  image_targets = targets.replace(temporal=None)
  reference = targets.temporal
  if spec.frames:
    per_frame = jax.vmap(
        lambda frame, content: _image_terms(
            frame, variables, image_targets.replace(content_features=content),
            loss_weights, image_spec, step))(pixels, targets.content_features)
    terms = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_frame)
    temporal_term = temporal.neighbours_loss(
        pixels, reference['flows'], reference['neighbour_certainty'],
        spec.temporal_blur)
    first = pixels[0]
  else:
    terms = _image_terms(pixels, variables, image_targets, loss_weights,
                         image_spec, step)
    temporal_term = jnp.zeros((), jnp.float32)
    first = pixels
  temporal_term += temporal.fixed_references_loss(
      first, reference['warped'], reference['certainty'], spec.temporal_blur)
  terms['temporal'] = temporal_term
  terms['total'] = terms['total'] + loss_weights.temporal_weight * temporal_term
  return terms


def _image_terms(pixels, variables, targets: Targets,
                 loss_weights: losses.LossWeights,
                 spec: losses.LossSpec, step) -> dict:
  """`loss_terms` of one image, without a temporal term."""
  if spec.sliced_redraw:
    targets = redrawn(targets, spec, step)
  norm = spec.normalization
  if spec.row_strips > 1:
    content_layers, style_layers = _strip_layer_terms(pixels, variables,
                                                      targets, spec)
  else:
    features = image_features(variables, pixels, spec)
    content_layers = {l: losses.content_layer_loss(
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
  tv = losses.total_variation(pixels.astype(jnp.float32), norm)
  total = (loss_weights.content_weight * content
           + loss_weights.style_weight * style + loss_weights.tv_weight * tv)
  return {'total': total, 'content': content, 'style': style, 'tv': tv,
          'style_layers': style_layers}


def _strip_layer_terms(pixels, variables, targets: Targets,
                       spec: losses.LossSpec) -> tuple:
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
  style = {l: losses.gram_loss(grams[l], targets.style_statistics[l],
                               _positions(pixels, l), spec.normalization)
           for l in spec.style_layers}
  return content, style


def total_loss(pixels, variables, targets, loss_weights, spec) -> jax.Array:
  """The scalar the optimiser minimises (see `loss_terms`)."""
  return loss_terms(pixels, variables, targets, loss_weights, spec)['total']
