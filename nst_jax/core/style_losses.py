r"""Style losses other than the Gram loss: statistics of one layer's features.

Each loss compares statistics of the generated image's features at one layer
with target statistics of the style image's features at the same layer. The
targets are computed once, outside the optimisation loop (`style_target`, or
`moments`, `blend_moments`, `target_statistics` and `blend_sliced` step by
step); `layer_loss` is the per-layer term E_l that takes the place of the Gram
loss's E_l in losses.py.

Notation: f is one layer's (M, N) features (M positions = height x width, N
channels; callers flatten (h, w, N) maps), f(x) in R^N the features at
position x. Optional per-position weights w(x) >= 0 with mean 1 guide the
statistics spatially (a region's mask T, normalised T <- T / sqrt(mean(T^2)),
squared); without them w = 1. ^S marks the style image's statistics::

  mu      = 1/M sum_x w(x) f(x)
  Sigma   = 1/M sum_x w(x) (f(x) - mu) (f(x) - mu)^T
  sigma_c = sqrt(Sigma_cc + 1e-8)

'mean_std' matches batch-normalisation statistics (Li, Wang, Liu and Hou
2017, "Demystifying Neural Style Transfer")::

  E = 1/N sum_c [ (mu_c - mu_c^S)^2 + (sigma_c - sigma_c^S)^2 ]

'mean_cov' is the squared 2-Wasserstein distance between the Gaussians with
the features' mean and covariance, per channel::

  E = 1/N [ |mu - mu^S|^2 + tr(Sigma + Sigma^S - 2 (S Sigma S)^(1/2)) ],
  S = (Sigma^S)^(1/2)

'sliced_wasserstein' compares the distributions of the features projected on
K unit directions, the columns of D (N, K) (Heitz, Vanhoey, Chambon and
Belcour, CVPR 2021, "A Sliced Wasserstein Loss for Neural Texture
Synthesis")::

  E = 1/(M K) sum_{i,k} (sort(f D)_{ik} - Q_{ik})^2

where sort orders each column over the positions and Q (M, K) is the style's
quantile function read at the generated image's quantiles (i + 1/2)/M: the
style's sorted projections sort(f^S D), whose j-th row sits at quantile
(j + 1/2)/M_S, linearly interpolated (and held constant beyond the first and
last rows). With M_S = M, Q = sort(f^S D); the style image may have any size.
Position weights are not defined for this loss.

Several style images k with blend weights b_k (normalised to sum 1):
'mean_std' and 'mean_cov' blend the first and second moments,
mu = sum_k b_k mu_k and E[f f^T] = sum_k b_k (Sigma_k + mu_k mu_k^T), and take
Sigma = E[f f^T] - mu mu^T: the statistics of the styles' features pooled
with weights b_k, not a mixture of covariances. 'sliced_wasserstein' averages
the quantile functions Q_k with weights b_k: per direction, the 1-D
Wasserstein barycentre of the styles' projected distributions.

Computation. tr((S Sigma S)^(1/2)) is the sum of the singular values of
X = diag(sqrt(w / M)) (f - mu) S, since X^T X = S Sigma S; they come from a
QR and an SVD, and its gradient from a closed form that stays finite for the
singular covariances of deep layers (`_tall_nuclear_norm`). The targets'
Sigma^S and S come from the centred style features in the same way
(`_factor_sqrt`). Matrix products use Precision.HIGHEST: the covariances of
rectified features are large sums.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

STYLE_LOSSES = ('gram', 'mean_std', 'mean_cov', 'sliced_wasserstein')
# The losses this module computes; 'gram' is losses.style_layer_loss.
_KINDS = STYLE_LOSSES[1:]

_STD_EPSILON = 1e-8   # sigma_c = sqrt(Sigma_cc + 1e-8)

_HIGHEST = lax.Precision.HIGHEST


def _float(x) -> jax.Array:
  """x as a float array of at least float32 precision (float64 stays)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_kind(kind):
  if kind not in _KINDS:
    raise ValueError(f'style loss {kind!r}: this module computes '
                     + ', '.join(_KINDS) + " ('gram' is in losses.py)")


def _position_weights(w, positions, dtype):
  """(M, 1) weights, ones when w is None."""
  if w is None:
    return jnp.ones((positions, 1), dtype)
  w = jnp.asarray(w, dtype)
  if w.shape != (positions,):
    raise ValueError(f'position weights: shape {w.shape}, expected '
                     f'({positions},)')
  return w[:, None]


# Random directions.


def _directions(key, channels: int) -> jax.Array:
  """(N, N) float32 columns drawn uniformly on the unit sphere."""
  normal = jax.random.normal(key, (channels, channels), jnp.float32)
  return normal / jnp.linalg.norm(normal, axis=0, keepdims=True)


def random_directions(seed, channels: int) -> jax.Array:
  """K = N random unit directions for the sliced Wasserstein loss.

  Heitz et al. draw new directions at every step, so that over the
  optimisation the loss sees every direction; fixed directions match the
  N projected distributions only. Drawing per step means recomputing the
  target from the style features with the new directions.

  Args:
    seed: integer seed (a Python int, or a traced integer, e.g. derived
      from the step inside a compiled loop).
    channels: N, the layer's number of channels.
  Returns:
    (N, N) float32 D whose columns are unit vectors, uniform on the sphere;
    the same for the same seed.
  """
  return _directions(jax.random.key(seed), channels)


def layer_directions(seed, layer_channels: Mapping[str, int]) -> dict:
  """Directions for several layers, different for each layer.

  Each layer's key folds the CRC-32 of its name into the seed's key, so a
  layer's directions depend only on the seed and its name: not on the other
  layers or their order, and the same in every process (Python's hash() of a
  string is salted per process).

  Args:
    seed: integer seed, as for `random_directions`.
    layer_channels: {layer name: N}.
  Returns:
    {layer name: (N, N) float32 unit columns}.
  """
  key = jax.random.key(seed)
  return {
      name: _directions(
          jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF), n)
      for name, n in layer_channels.items()}


# Moments: the blendable statistics of mean_std and mean_cov.


def moments(f, w=None) -> dict:
  """The weighted first and second moments of one layer's features.

  Args:
    f: (M, N) features.
    w: optional (M,) position weights with mean 1.
  Returns:
    {'mean': (N,) mu = 1/M sum_x w(x) f(x),
     'second': (N, N) E[f f^T] = 1/M sum_x w(x) f(x) f(x)^T}.
  """
  f = _float(f)
  positions = f.shape[0]
  weighted = _position_weights(w, positions, f.dtype) * f
  return {'mean': jnp.sum(weighted, axis=0) / positions,
          'second': jnp.matmul(weighted.T, f, precision=_HIGHEST) / positions}


def _normalized(blend_weights, count: int) -> jax.Array:
  """Blend weights b_k (possibly traced) normalised to sum 1."""
  weights = _float(blend_weights)
  if weights.shape != (count,):
    raise ValueError(f'blend weights: shape {weights.shape}, expected one '
                     f'per style ({count},)')
  return weights / jnp.sum(weights)


def _weighted_sum(trees, blend_weights):
  weights = _normalized(blend_weights, len(trees))
  return jax.tree_util.tree_map(
      lambda *xs: sum(b * _float(x) for b, x in zip(weights, xs)),
      *trees)


def blend_moments(moments_list: Sequence[dict], blend_weights) -> dict:
  """Moments of several styles' features pooled with weights b_k.

  mu = sum_k b_k mu_k and E[f f^T] = sum_k b_k E_k[f f^T]: the moments of the
  union of the styles' positions, style k's weighted by b_k.

  Args:
    moments_list: one `moments` dict per style.
    blend_weights: one weight per style, >= 0; normalised to sum 1.
  Returns:
    A `moments` dict.
  """
  return _weighted_sum(list(moments_list), blend_weights)


# Square roots and singular values.


def _tall_svd(t):
  """Singular values s (k,) and right singular vectors V^T (k, k) of (m, k)
  T, m >= k: Householder QR (backward stable), then the SVD of the k x k R.
  """
  r = jnp.linalg.qr(t, mode='r')
  _, singular_values, right_vectors = jnp.linalg.svd(r)
  return singular_values, right_vectors


def _factor_sqrt(c):
  """(C^T C)^(1/2) = V diag(s) V^T of (M, N) C = U diag(s) V^T.

  From C's singular values, accurate to about eps s_max, rather than from
  the eigenvalues of C^T C, accurate to eps s_max^2: the square root turns
  that into sqrt(eps) s_max for every zero eigenvalue, and the covariance of
  fewer positions than channels has many.
  """
  rows, cols = c.shape
  if rows >= cols:
    singular_values, right_vectors = _tall_svd(c)
    vectors = right_vectors.T
  else:
    # C^T = Q R and R = U diag(s) W^T give C = W diag(s) (Q U)^T.
    q, r = jnp.linalg.qr(c.T)
    u, singular_values, _ = jnp.linalg.svd(r)
    vectors = jnp.matmul(q, u, precision=_HIGHEST)
  return jnp.matmul(vectors * singular_values, vectors.T, precision=_HIGHEST)


def _sqrtm_psd(a) -> jax.Array:
  """A^(1/2) of a symmetric positive semidefinite A, by eigendecomposition.

  Eigenvalues below zero (rounding of a singular A) count as zero. For
  targets only: eigh's gradient divides by eigenvalue differences.
  """
  eigenvalues, vectors = jnp.linalg.eigh(a)
  roots = jnp.sqrt(jnp.maximum(eigenvalues, 0.0))
  return jnp.matmul(vectors * roots, vectors.T, precision=_HIGHEST)


@jax.custom_vjp
def _tall_nuclear_norm(t):
  r"""||T||_*, the sum of the singular values s_i of (m, k) T, m >= k.

  From the singular values (`_tall_svd`) rather than the eigenvalues of
  T^T T, for the accuracy of its zero singular values (see `_factor_sqrt`).

  The gradient is sum_i u_i v_i^T over the nonzero singular values, i.e.
  T V diag(1 / s_i) V^T restricted to them (V the right singular vectors):
  the minimum-norm subgradient, bounded (columns of norm 1) whatever the
  rank, and independent of the arbitrary singular vectors of zero singular
  values. It needs only T and the k x k V, no (m, k) U. Differentiating the
  factorisations instead fails where this loss needs them: QR's derivative
  solves with R, singular when T is rank-deficient (fewer positions than
  channels, dead channels), and the derivatives of singular vectors and of
  eigh divide by differences of singular values or eigenvalues, zero when
  they repeat.

  A computed singular value carries an error of a few eps s_max (the
  rounding of T itself, then of the factorisations, growing with k), so
  below max(k, 32) eps s_max it is indistinguishable from zero: there the
  gradient takes it as zero, as 1 / s_i of rounding noise would add a
  column of norm about 1 in an arbitrary direction.
  """
  return jnp.sum(_tall_svd(t)[0])


def _tall_nuclear_norm_fwd(t):
  singular_values, right_vectors = _tall_svd(t)
  return jnp.sum(singular_values), (t, singular_values, right_vectors)


def _tall_nuclear_norm_bwd(residuals, cotangent):
  t, singular_values, right_vectors = residuals
  finfo = jnp.finfo(t.dtype)
  floor = (max(singular_values.shape[0], 32) * finfo.eps
           * jnp.max(singular_values))
  nonzero = singular_values > floor
  inverse = jnp.where(nonzero,
                      1.0 / jnp.where(nonzero, singular_values, 1.0), 0.0)
  left = jnp.matmul(t, right_vectors.T * inverse, precision=_HIGHEST)
  return (cotangent * jnp.matmul(left, right_vectors, precision=_HIGHEST),)


_tall_nuclear_norm.defvjp(_tall_nuclear_norm_fwd, _tall_nuclear_norm_bwd)


def _nuclear_norm(x) -> jax.Array:
  """||X||_* = tr((X^T X)^(1/2)) = tr((X X^T)^(1/2)) of (M, N) X."""
  return _tall_nuclear_norm(x if x.shape[0] >= x.shape[1] else x.T)


# Targets.


def _sorted_projections(f, directions):
  projections = jnp.matmul(_float(f), _float(directions), precision=_HIGHEST)
  return jnp.sort(projections, axis=0)


def _resample_quantiles(sorted_values, positions: int):
  """Reads (M_S, K) sorted values at the quantiles (i + 1/2)/M, i < M.

  Row j of the sorted values is the quantile (j + 1/2)/M_S, so quantile q is
  at row q M_S - 1/2; linear interpolation between rows, the end rows beyond
  them. Returns (M, K); with M = M_S, the sorted values unchanged.
  """
  count = sorted_values.shape[0]
  rows = np.clip((np.arange(positions) + 0.5) * count / positions - 0.5,
                 0.0, count - 1)
  below = np.floor(rows).astype(np.int32)
  above = np.minimum(below + 1, count - 1)
  fraction = jnp.asarray((rows - below)[:, None], sorted_values.dtype)
  return ((1.0 - fraction) * sorted_values[below]
          + fraction * sorted_values[above])


def _sliced_target(f, directions, positions):
  if directions is None or positions is None:
    raise ValueError('sliced_wasserstein: the target needs directions and '
                     "the generated image's number of positions")
  sorted_values = lax.stop_gradient(_sorted_projections(f, directions))
  return {'sorted': _resample_quantiles(sorted_values, positions)}


def _pooled_factor(features_list, blend_weights, position_weights):
  """The blended mean mu and a factor C with C^T C = the blended Sigma.

  C stacks sqrt(b_k w_k(x) / M_k) (f_k(x) - mu) over the styles' positions,
  so C^T C = sum_k b_k (Sigma_k + (mu_k - mu)(mu_k - mu)^T), which is
  sum_k b_k E_k[f f^T] - mu mu^T (`blend_moments`) without the cancellation
  of subtracting mu mu^T from the second moment.
  """
  blend = _normalized(blend_weights, len(features_list))
  features = [_float(f) for f in features_list]
  weights = [_position_weights(w, f.shape[0], f.dtype)
             for f, w in zip(features, position_weights)]
  means = [jnp.sum(w * f, axis=0) / f.shape[0]
           for f, w in zip(features, weights)]
  mean = sum(b * m for b, m in zip(blend, means))
  factor = jnp.concatenate([
      jnp.sqrt(b * w / f.shape[0]) * (f - mean)
      for b, f, w in zip(blend, features, weights)])
  return mean, factor


def target_statistics(kind: str, style, w=None, *, directions=None,
                      positions: int | None = None) -> dict:
  """The target statistics of one layer for `layer_loss`.

  Args:
    kind: 'mean_std', 'mean_cov' or 'sliced_wasserstein'.
    style: the style image's (M_S, N) features; or, for 'mean_std' and
      'mean_cov', a `moments` dict (e.g. from `blend_moments`). From
      features, Sigma^S and its square root come from the centred features'
      singular values; from moments, from Sigma^S = E[f f^T] - mu mu^T and
      its eigendecomposition, whose zero eigenvalues come out as rounding
      noise of order eps |Sigma^S| and their square roots as sqrt(eps)
      |Sigma^S|^(1/2): the same where Sigma^S is well conditioned, coarser
      where it is singular (fewer positions than channels).
    w: optional (M_S,) position weights of the style's features, with
      features ('mean_std', 'mean_cov').
    directions: (N, K) unit directions ('sliced_wasserstein').
    positions: M, the generated image's number of positions at this layer
      ('sliced_wasserstein').
  Returns:
    'mean_std': {'mean': (N,) mu^S, 'std': (N,) sigma^S};
    'mean_cov': {'mean': (N,) mu^S, 'cov': (N, N) Sigma^S, 'cov_sqrt':
      (N, N) (Sigma^S)^(1/2)};
    'sliced_wasserstein': {'sorted': (M, K) the style's quantile function Q}.
  """
  _check_kind(kind)
  if not isinstance(style, Mapping):
    return style_target(kind, [style], None, [w], directions=directions,
                        positions=positions)
  if kind == 'sliced_wasserstein':
    raise ValueError('sliced_wasserstein: the target needs the style '
                     'features, not moments')
  stats = lax.stop_gradient(dict(style))
  mean = stats['mean']
  cov = stats['second'] - jnp.outer(mean, mean)
  cov = 0.5 * (cov + cov.T)
  if kind == 'mean_std':
    variance = jnp.maximum(jnp.diagonal(cov), 0.0)
    return {'mean': mean, 'std': jnp.sqrt(variance + _STD_EPSILON)}
  return {'mean': mean, 'cov': cov, 'cov_sqrt': _sqrtm_psd(cov)}


def blend_sliced(sorted_list: Sequence, blend_weights):
  """Averages several styles' quantile functions with weights b_k.

  Args:
    sorted_list: per style, its sliced target ({'sorted': (M, K)}) or the
      (M, K) array, all for the same directions and M.
    blend_weights: one weight per style, >= 0; normalised to sum 1.
  Returns:
    The same structure: sum_k b_k Q_k.
  """
  return _weighted_sum(list(sorted_list), blend_weights)


def style_target(kind: str, features_list: Sequence, blend_weights=None,
                 position_weights: Sequence | None = None, *,
                 directions=None, positions: int | None = None) -> dict:
  """The target of one layer for one or several (blended) style images.

  'mean_std' and 'mean_cov' take the statistics of the styles' features
  pooled with weights b_k (the blend of their moments, see the module
  docstring), computed from the centred features; 'sliced_wasserstein'
  averages the styles' quantile functions (`blend_sliced`).

  Args:
    kind: 'mean_std', 'mean_cov' or 'sliced_wasserstein'.
    features_list: each style image's (M_k, N) features at this layer.
    blend_weights: one weight per style, >= 0 (default equal); normalised
      to sum 1.
    position_weights: optional, per style, (M_k,) weights with mean 1 or
      None ('mean_std', 'mean_cov').
    directions, positions: as for `target_statistics` (sliced).
  Returns:
    The target pytree for `layer_loss`, as `target_statistics`.
  """
  _check_kind(kind)
  features_list = list(features_list)
  if blend_weights is None:
    blend_weights = [1.0] * len(features_list)
  if position_weights is None:
    position_weights = [None] * len(features_list)
  if kind == 'sliced_wasserstein':
    if any(w is not None for w in position_weights):
      raise ValueError('sliced_wasserstein: position weights are not '
                       'supported')
    return blend_sliced([_sliced_target(f, directions, positions)
                         for f in features_list], blend_weights)
  mean, factor = lax.stop_gradient(
      _pooled_factor(features_list, blend_weights, position_weights))
  if kind == 'mean_std':
    variance = jnp.sum(jnp.square(factor), axis=0)
    return {'mean': mean, 'std': jnp.sqrt(variance + _STD_EPSILON)}
  return {'mean': mean,
          'cov': jnp.matmul(factor.T, factor, precision=_HIGHEST),
          'cov_sqrt': _factor_sqrt(factor)}


# Losses.


def _mean_and_centered(f, w):
  """mu and sqrt(w(x)) (f(x) - mu), the factor whose Gram is M Sigma."""
  positions = f.shape[0]
  weights = _position_weights(w, positions, f.dtype)
  mean = jnp.sum(weights * f, axis=0) / positions
  return mean, jnp.sqrt(weights) * (f - mean)


def _mean_std_loss(f, target, w):
  mean, centered = _mean_and_centered(f, w)
  variance = jnp.sum(jnp.square(centered), axis=0) / f.shape[0]
  std = jnp.sqrt(variance + _STD_EPSILON)
  return jnp.mean(jnp.square(mean - target['mean'])
                  + jnp.square(std - target['std']))


def _mean_cov_loss(f, target, w):
  positions, channels = f.shape
  mean, centered = _mean_and_centered(f, w)
  # X = diag(sqrt(w / M)) (f - mu) S has X^T X = S Sigma S.
  x = jnp.matmul(centered, target['cov_sqrt'],
                 precision=_HIGHEST) / np.sqrt(positions)
  trace_cov = jnp.sum(jnp.square(centered)) / positions
  return (jnp.sum(jnp.square(mean - target['mean'])) + trace_cov
          + jnp.trace(target['cov']) - 2.0 * _nuclear_norm(x)) / channels


def _sliced_loss(f, target, directions):
  return jnp.mean(jnp.square(_sorted_projections(f, directions)
                             - target['sorted']))


def layer_loss(kind: str, f, target: dict, w=None,
               directions=None) -> jax.Array:
  """E_l of one layer: see the module docstring.

  Args:
    kind: 'mean_std', 'mean_cov' or 'sliced_wasserstein'.
    f: (M, N) features of the generated image.
    target: `target_statistics` (or `style_target`) of the same kind.
    w: optional (M,) position weights with mean 1 ('mean_std', 'mean_cov').
    directions: (N, K), the directions of the target ('sliced_wasserstein').
  Returns:
    Scalar E_l. 'mean_cov' is zero up to rounding for f equal to the style's
    features and may be rounding-small negative there.
  """
  _check_kind(kind)
  f = _float(f)
  if kind == 'mean_std':
    return _mean_std_loss(f, target, w)
  if kind == 'mean_cov':
    return _mean_cov_loss(f, target, w)
  if w is not None:
    raise ValueError('sliced_wasserstein: position weights are not supported')
  if directions is None:
    raise ValueError('sliced_wasserstein: the loss needs the directions')
  return _sliced_loss(f, target, directions)
