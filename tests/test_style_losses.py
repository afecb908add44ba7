"""Style losses against NumPy transcriptions of their formulas, blending,
directions, and gradients (finite, correct, pointing downhill)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import style_losses

KINDS = ('mean_std', 'mean_cov', 'sliced_wasserstein')


def relu_features(seed, positions, channels):
  """Rectified features whose means and spreads differ by channel."""
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.5, 3.0, channels)
  return np.maximum(rng.normal(0.3, 1.0, (positions, channels)) * scale,
                    0.0).astype(np.float32)


def mean_one_weights(seed, positions):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.0, 2.0, positions)
  return (w / w.mean()).astype(np.float32)


def target(kind, style, w=None, directions=None, positions=None):
  return style_losses.target_statistics(kind, style, w, directions=directions,
                                        positions=positions)


# NumPy transcriptions of the formulas, in float64.


def np_mean_cov(f, w=None):
  f = np.asarray(f, np.float64)
  w = np.ones(len(f)) if w is None else np.asarray(w, np.float64)
  mean = (w[:, None] * f).sum(0) / len(f)
  centered = f - mean
  return mean, (w[:, None] * centered).T @ centered / len(f)


def np_sqrtm(a):
  values, vectors = np.linalg.eigh(a)
  return (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T


def np_mean_std_loss(f, style, w=None, w_style=None):
  mean, cov = np_mean_cov(f, w)
  mean_s, cov_s = np_mean_cov(style, w_style)
  std = np.sqrt(np.diag(cov) + 1e-8)
  std_s = np.sqrt(np.diag(cov_s) + 1e-8)
  return np.mean((mean - mean_s) ** 2 + (std - std_s) ** 2)


def np_mean_cov_loss(f, style, w=None, w_style=None):
  mean, cov = np_mean_cov(f, w)
  mean_s, cov_s = np_mean_cov(style, w_style)
  root_s = np_sqrtm(cov_s)
  cross = np.trace(np_sqrtm(root_s @ cov @ root_s))
  return (np.sum((mean - mean_s) ** 2) + np.trace(cov) + np.trace(cov_s)
          - 2 * cross) / f.shape[1]


def np_quantiles(style, directions, positions):
  """The style's sorted projections read at quantiles (i + 1/2)/M."""
  projected = np.sort(np.asarray(style, np.float64) @ directions, axis=0)
  count = len(projected)
  at = (np.arange(count) + 0.5) / count
  wanted = (np.arange(positions) + 0.5) / positions
  return np.stack([np.interp(wanted, at, column) for column in projected.T],
                  axis=1)


def np_sliced_loss(f, style, directions):
  directions = np.asarray(directions, np.float64)
  projected = np.sort(np.asarray(f, np.float64) @ directions, axis=0)
  return np.mean((projected - np_quantiles(style, directions, len(f))) ** 2)


def loss_of(kind, f, style, w=None, w_style=None, seed=0):
  """(loss, reference) for features f against one style image."""
  if kind == 'sliced_wasserstein':
    directions = style_losses.random_directions(seed, f.shape[1])
    t = target(kind, style, directions=directions, positions=len(f))
    return (style_losses.layer_loss(kind, f, t, directions=directions),
            np_sliced_loss(f, style, directions))
  t = target(kind, style, w_style)
  reference = {'mean_std': np_mean_std_loss,
               'mean_cov': np_mean_cov_loss}[kind](f, style, w, w_style)
  return style_losses.layer_loss(kind, f, t, w), reference


@pytest.mark.parametrize('kind', KINDS)
def test_zero_for_the_style_features_positive_otherwise(kind):
  style = relu_features(0, 50, 8)
  other = relu_features(1, 50, 8)
  typical = float(loss_of(kind, other, style)[0])
  same = float(loss_of(kind, style, style)[0])
  assert typical > 1e-2
  assert abs(same) < 1e-5 * typical
  # A small change of the generated features is already seen.
  nudged = style.copy()
  nudged[:10, 2] += 0.3
  assert float(loss_of(kind, nudged, style)[0]) > 1e-4 * typical


@pytest.mark.parametrize('kind,positions,channels,style_positions,weighted', [
    ('mean_std', 50, 8, 50, False),
    ('mean_std', 50, 8, 70, True),
    ('mean_cov', 50, 8, 50, False),
    ('mean_cov', 50, 8, 70, True),
    ('mean_cov', 3, 16, 5, False),       # both covariances singular
    ('sliced_wasserstein', 50, 8, 50, False),
    ('sliced_wasserstein', 50, 8, 73, False),   # interpolated target
    ('sliced_wasserstein', 50, 8, 20, False),
])
def test_matches_numpy_formula(kind, positions, channels, style_positions,
                               weighted):
  f = relu_features(2, positions, channels)
  style = relu_features(3, style_positions, channels)
  w = mean_one_weights(4, positions) if weighted else None
  w_style = mean_one_weights(5, style_positions) if weighted else None
  loss, reference = loss_of(kind, f, style, w, w_style)
  np.testing.assert_allclose(float(loss), reference, rtol=2e-5)


def test_mean_cov_square_root_matches_eigendecomposition():
  # Well conditioned, and singular: 3 positions, 16 channels.
  for positions, channels in ((50, 8), (3, 16)):
    style = relu_features(7, positions, channels)
    w = mean_one_weights(8, positions)
    t = target('mean_cov', style, w)
    _, cov = np_mean_cov(style, w)
    root = np_sqrtm(cov)
    scale = np.max(np.abs(cov))
    assert np.max(np.abs(t['cov'] - cov)) < 1e-5 * scale
    assert np.max(np.abs(t['cov_sqrt'] - root)) < 1e-4 * np.max(np.abs(root))
  # From (blendable) moments: the same where the covariance is well
  # conditioned.
  style = relu_features(7, 50, 8)
  from_moments = target('mean_cov', style_losses.moments(style))
  root = np_sqrtm(np_mean_cov(style)[1])
  assert (np.max(np.abs(from_moments['cov_sqrt'] - root))
          < 1e-4 * np.max(np.abs(root)))


def test_mean_cov_gradient_is_finite_for_singular_covariances():
  # 3 positions, 16 channels: both covariances have rank 2 and 14 repeated
  # zero eigenvalues, where eigh's gradient divides by zero.
  f = relu_features(9, 3, 16)
  style = relu_features(10, 3, 16)
  grad = jax.jit(jax.grad(
      lambda x, t: style_losses.layer_loss('mean_cov', x, t)))
  for t in (target('mean_cov', style), target('mean_cov', f)):
    gradient = grad(jnp.asarray(f), t)
    assert np.all(np.isfinite(gradient))
  # Dead channels (all zero) in both images: zero rows and columns.
  f[:, :5] = 0.0
  style[:, 3:9] = 0.0
  gradient = grad(jnp.asarray(f), target('mean_cov', style))
  assert np.all(np.isfinite(gradient))
  assert np.max(np.abs(gradient)) > 0
  # Features equal at every position (a dead layer): zero covariance.
  for constant in (np.zeros_like(f), np.ones_like(f)):
    gradient = grad(jnp.asarray(constant), target('mean_cov', style))
    assert np.all(np.isfinite(gradient))


def test_mean_cov_gradient_of_identical_features_is_zero():
  f = relu_features(11, 40, 6)
  gradient = jax.jit(jax.grad(lambda x: style_losses.layer_loss(
      'mean_cov', x, target('mean_cov', f))))(jnp.asarray(f))
  assert np.all(np.isfinite(gradient))
  assert np.max(np.abs(gradient)) < 1e-5


def mean_cov_gradients_64(f, style, w=None):
  """float64 (analytic, central finite differences) gradients of mean_cov."""
  with jax.enable_x64(True):
    f = np.asarray(f, np.float64)
    t = target('mean_cov', np.asarray(style, np.float64))
    loss = jax.jit(lambda x: style_losses.layer_loss('mean_cov', x, t, w))
    gradient = np.asarray(jax.grad(loss)(jnp.asarray(f)))
    assert gradient.dtype == np.float64
    step = 1e-6
    numeric = np.zeros_like(f)
    for index in np.ndindex(*f.shape):
      up, down = f.copy(), f.copy()
      up[index] += step
      down[index] -= step
      numeric[index] = (float(loss(up)) - float(loss(down))) / (2 * step)
  return gradient, numeric


def test_mean_cov_gradient_matches_finite_differences():
  f = relu_features(12, 12, 3) + 0.1
  style = relu_features(13, 20, 3) + 0.1
  w = mean_one_weights(14, 12).astype(np.float64)
  gradient, numeric = mean_cov_gradients_64(f, style, w)
  np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-9)


def test_mean_cov_gradient_where_the_covariance_is_singular():
  # 3 positions, 5 channels: Sigma has rank 2 under every perturbation of
  # the features, so the loss is smooth there, and its gradient must not
  # see the zero singular value's arbitrary singular vectors.
  f = relu_features(15, 3, 5) + 0.1
  style = relu_features(16, 10, 5)
  gradient, numeric = mean_cov_gradients_64(f, style)
  np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)
  # In float32, with 4 positions and 32 channels, the gradient is the
  # float64 one up to rounding.
  f = relu_features(17, 4, 32)
  style = relu_features(18, 40, 32)
  grad = jax.jit(jax.grad(
      lambda x, t: style_losses.layer_loss('mean_cov', x, t)))
  gradient = np.asarray(grad(jnp.asarray(f), target('mean_cov', style)))
  with jax.enable_x64(True):
    exact = np.asarray(grad(jnp.asarray(f, np.float64),
                            target('mean_cov', style.astype(np.float64))))
  assert np.max(np.abs(gradient - exact)) < 1e-4 * np.max(np.abs(exact))


def test_blending_one_style_gives_its_statistics():
  style = relu_features(15, 30, 6)
  w = mean_one_weights(16, 30)
  m = style_losses.moments(style, w)
  blended = style_losses.blend_moments([m], [1.0])
  for key in ('mean', 'second'):
    np.testing.assert_allclose(blended[key], m[key], rtol=1e-6)
  for kind in ('mean_std', 'mean_cov'):
    own = target(kind, style, w)
    via = style_losses.style_target(kind, [style], position_weights=[w])
    for key in own:
      np.testing.assert_allclose(via[key], own[key], rtol=1e-5, atol=1e-6)
  directions = style_losses.random_directions(0, 6)
  own = target('sliced_wasserstein', style, directions=directions,
               positions=20)
  via = style_losses.style_target('sliced_wasserstein', [style], [1.0],
                                  directions=directions, positions=20)
  np.testing.assert_allclose(via['sorted'], own['sorted'], rtol=1e-6)


def test_blended_moments_are_the_pooled_moments():
  a = relu_features(17, 30, 5)
  b = relu_features(18, 30, 5) * 2.0 + 1.0
  # Equal sizes and weights: the moments of the concatenation.
  blended = style_losses.blend_moments(
      [style_losses.moments(a), style_losses.moments(b)], [0.5, 0.5])
  pooled = style_losses.moments(np.concatenate([a, b]))
  for key in ('mean', 'second'):
    np.testing.assert_allclose(blended[key], pooled[key], rtol=1e-5)
  # Other sizes and weights (not normalised): style k's positions weigh
  # b_k (M_a + M_b) / M_k, so that the pooled weights have mean 1.
  c = relu_features(19, 45, 5)
  weights = np.array([0.3, 0.7])
  blended_target = style_losses.style_target('mean_cov', [a, c],
                                             weights * 10)
  pooled_w = np.concatenate([np.full(30, 0.3 * 75 / 30),
                             np.full(45, 0.7 * 75 / 45)])
  mean, cov = np_mean_cov(np.concatenate([a, c]), pooled_w)
  np.testing.assert_allclose(blended_target['mean'], mean, rtol=1e-5)
  np.testing.assert_allclose(blended_target['cov'], cov, rtol=1e-4,
                             atol=1e-5)
  # The covariance is the pooled one, not the blend of the covariances.
  mixed = 0.3 * np_mean_cov(a)[1] + 0.7 * np_mean_cov(c)[1]
  assert np.max(np.abs(cov - mixed)) > 0.1


def test_blend_weights_can_be_traced():
  # The targets are compiled with the blend weights as an argument.
  a = relu_features(25, 30, 4)
  c = relu_features(26, 45, 4) * 2.0
  directions = style_losses.random_directions(0, 4)
  for kind in KINDS:
    blended = jax.jit(lambda b, kind=kind: style_losses.style_target(
        kind, [a, c], b, directions=directions, positions=20))
    eager = style_losses.style_target(kind, [a, c], [1.0, 3.0],
                                      directions=directions, positions=20)
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
        blended(jnp.asarray([1.0, 3.0])), eager)


def test_blended_sliced_target_averages_quantile_functions():
  a = relu_features(20, 30, 4)
  c = relu_features(21, 45, 4) * 3.0
  directions = style_losses.random_directions(2, 4)
  blended = style_losses.style_target(
      'sliced_wasserstein', [a, c], [1.0, 3.0], directions=directions,
      positions=25)
  d = np.asarray(directions, np.float64)
  expected = 0.25 * np_quantiles(a, d, 25) + 0.75 * np_quantiles(c, d, 25)
  np.testing.assert_allclose(blended['sorted'], expected, rtol=1e-5,
                             atol=1e-5)
  arrays = style_losses.blend_sliced(
      [np_quantiles(a, d, 25), np_quantiles(c, d, 25)], [1.0, 3.0])
  np.testing.assert_allclose(arrays, expected, rtol=1e-6)


def test_directions_are_unit_deterministic_and_distinct():
  d = np.asarray(style_losses.random_directions(3, 16))
  assert d.shape == (16, 16) and d.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(d, axis=0), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(d, style_losses.random_directions(3, 16))
  assert not np.allclose(d, style_losses.random_directions(4, 16))
  layers = style_losses.layer_directions(3, {'conv1_1': 16, 'conv2_1': 16,
                                             'conv3_1': 8})
  assert layers['conv3_1'].shape == (8, 8)
  assert not np.allclose(layers['conv1_1'], layers['conv2_1'])
  assert not np.allclose(layers['conv1_1'], d)
  # A layer's directions depend only on the seed and its name.
  alone = style_losses.layer_directions(3, {'conv2_1': 16})
  np.testing.assert_array_equal(alone['conv2_1'], layers['conv2_1'])
  other_seed = style_losses.layer_directions(4, {'conv2_1': 16})
  assert not np.allclose(other_seed['conv2_1'], layers['conv2_1'])


@pytest.mark.parametrize('kind', KINDS)
def test_gradient_descent_lowers_the_loss(kind):
  f = relu_features(22, 16, 4)
  style = relu_features(23, 24, 4) * 1.5 + 0.5
  directions = style_losses.random_directions(5, 4)
  t = style_losses.style_target(kind, [style], directions=directions,
                                positions=16)
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda x: style_losses.layer_loss(
          kind, x, t, directions=directions if kind == KINDS[2] else None)))
  x = jnp.asarray(f)
  losses = []
  for _ in range(10):
    loss, gradient = loss_and_grad(x)
    losses.append(float(loss))
    x = x - 2.0 * gradient
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.5 * losses[0], losses


def test_bad_arguments():
  f = relu_features(24, 10, 3)
  directions = style_losses.random_directions(0, 3)
  t = target('sliced_wasserstein', f, directions=directions, positions=10)
  with pytest.raises(ValueError, match='weights'):
    style_losses.layer_loss('sliced_wasserstein', f, t, np.ones(10),
                            directions)
  with pytest.raises(ValueError, match='weights'):
    target('sliced_wasserstein', f, np.ones(10), directions, 10)
  with pytest.raises(ValueError, match='gram'):
    style_losses.layer_loss('gram', f, t)
  assert style_losses.STYLE_LOSSES == ('gram', 'mean_std', 'mean_cov',
                                       'sliced_wasserstein')
