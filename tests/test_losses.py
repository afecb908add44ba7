"""The paper's losses on hand-computable cases, size invariance, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import losses, optim


def test_gram_matrix():
  features = jnp.arange(12.0).reshape(2, 2, 3)
  flat = np.arange(12.0).reshape(4, 3)
  np.testing.assert_allclose(losses.gram_matrix(features, False),
                             flat.T @ flat)
  np.testing.assert_allclose(losses.gram_matrix(features, True),
                             flat.T @ flat / 4)


def test_gram_matrix_gradient_is_one_product():
  # The custom VJP gives F (dG + dG^T) for any cotangent, symmetric or not,
  # with one matmul in the backward pass where autodiff of F^T F has two.
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
  plain = lambda f: f.reshape(-1, 3).T @ f.reshape(-1, 3)
  for normalize, scale in ((False, 1.0), (True, 1 / 20)):
    _, vjp = jax.vjp(lambda f: losses.gram_matrix(f, normalize), features)
    _, plain_vjp = jax.vjp(lambda f: plain(f) * scale, features)
    np.testing.assert_allclose(vjp(cotangent)[0], plain_vjp(cotangent)[0],
                               rtol=1e-5, atol=1e-5)
  gradient = jax.make_jaxpr(jax.grad(
      lambda f: jnp.sum(losses.gram_matrix(f, False) * cotangent)))(features)
  assert str(gradient).count('dot_general') == 2   # forward, backward


def test_style_layer_loss_hand_case():
  # One filter, two positions: F = [1, 2] -> G = 5; target A = 3.
  features = jnp.asarray([[[1.0], [2.0]]])
  target = jnp.asarray([[3.0]])
  # Paper: (5 - 3)^2 / (4 * 1^2 * 2^2) = 0.25.
  assert float(losses.style_layer_loss(features, target, 'paper')) == 0.25
  # Invariant: (5/2 - 3)^2 / 4 = 0.0625 when the target is already G/M.
  assert float(losses.style_layer_loss(features, target, 'invariant')) == (
      0.0625)


def test_content_layer_loss_hand_case():
  features = jnp.asarray([[[1.0, 2.0], [3.0, 4.0]]])  # N = 2, M = 2
  target = jnp.zeros_like(features)
  assert float(losses.content_layer_loss(features, target, 'paper')) == 15.0
  assert float(losses.content_layer_loss(features, target,
                                         'invariant')) == 15.0 / 4


def test_total_variation_hand_case():
  pixels = jnp.asarray([[[0.0], [1.0]], [[3.0], [5.0]]])
  # down: (3-0)^2 + (5-1)^2 = 25; right: (1-0)^2 + (5-3)^2 = 5.
  assert float(losses.total_variation(pixels, 'paper')) == 30.0
  assert float(losses.total_variation(pixels, 'invariant')) == 12.5 + 2.5


def test_invariant_equals_paper_at_equal_size():
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.uniform(0, 3, (4, 5, 6)), jnp.float32)
  style = jnp.asarray(rng.uniform(0, 3, (4, 5, 6)), jnp.float32)
  paper = losses.style_layer_loss(
      features, losses.gram_matrix(style, False), 'paper')
  invariant = losses.style_layer_loss(
      features, losses.gram_matrix(style, True), 'invariant')
  np.testing.assert_allclose(paper, invariant, rtol=1e-5)


def test_invariant_style_loss_does_not_depend_on_size():
  """The same texture at 2x the size (and a style of another size) gives the
  same invariant E_l; the paper's E_l changes."""
  rng = np.random.default_rng(0)
  tile = jnp.asarray(rng.uniform(0, 3, (4, 4, 8)), jnp.float32)
  big = jnp.tile(tile, (2, 2, 1))  # M four times larger, same statistics
  style = jnp.tile(jnp.asarray(rng.uniform(0, 3, (3, 3, 8)), jnp.float32),
                   (3, 1, 1))
  target = losses.gram_matrix(style, True)
  small_loss = losses.style_layer_loss(tile, target, 'invariant')
  big_loss = losses.style_layer_loss(big, target, 'invariant')
  np.testing.assert_allclose(small_loss, big_loss, rtol=1e-5)
  content_small = losses.content_layer_loss(tile, tile * 0, 'invariant')
  content_big = losses.content_layer_loss(big, big * 0, 'invariant')
  np.testing.assert_allclose(content_small, content_big, rtol=1e-6)
  paper_target = losses.gram_matrix(style, False)
  assert not np.isclose(losses.style_layer_loss(tile, paper_target, 'paper'),
                        losses.style_layer_loss(big, paper_target, 'paper'))


def test_blend_style_targets():
  a = {'conv1_1': jnp.ones((2, 2))}
  b = {'conv1_1': jnp.full((2, 2), 4.0)}
  blended = losses.blend_style_targets([a, b], [3.0, 1.0])
  np.testing.assert_allclose(blended['conv1_1'], np.full((2, 2), 1.75))


@pytest.fixture(scope='module')
def paper_problem(variables, small_images):
  content, style, _ = small_images
  spec = losses.LossSpec(normalization='paper')
  targets = losses.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 1.0, 1e3, tv_weight=1e-2)
  return spec, optim.Problem(variables, targets, weights)


def test_loss_terms_compose(paper_problem, small_images):
  spec, problem = paper_problem
  _, _, noise = small_images
  terms = losses.loss_terms(jnp.asarray(noise), problem.variables,
                            problem.targets, problem.loss_weights, spec)
  style = sum(0.2 * terms['style_layers'][l] for l in spec.style_layers)
  np.testing.assert_allclose(terms['style'], style, rtol=1e-5)
  np.testing.assert_allclose(
      terms['total'], terms['content'] + 1e3 * terms['style']
      + 1e-2 * terms['tv'], rtol=1e-5)
  # Each term is the paper's formula of the features.
  features = losses.image_features(problem.variables, jnp.asarray(noise),
                                   spec)
  f = np.asarray(features['conv4_2'], np.float64)
  p = np.asarray(problem.targets.content_features['conv4_2'], np.float64)
  np.testing.assert_allclose(terms['content'], 0.5 * np.sum((f - p) ** 2),
                             rtol=1e-4)
  f = np.asarray(features['conv2_1'], np.float64).reshape(-1, 128)
  a = np.asarray(problem.targets.style_statistics['conv2_1'], np.float64)
  expected = np.sum((f.T @ f - a) ** 2) / (4 * 128 ** 2 * f.shape[0] ** 2)
  np.testing.assert_allclose(terms['style_layers']['conv2_1'], expected,
                             rtol=1e-3)


def test_gradient_matches_finite_differences(paper_problem, small_images):
  spec, problem = paper_problem
  _, _, noise = small_images
  pixels = jnp.asarray(noise)
  value, grad = optim.loss_and_grad_jit(pixels, problem, spec)
  direction = jax.random.normal(jax.random.key(3), pixels.shape)
  loss = jax.jit(lambda x, problem: losses.total_loss(
      x, problem.variables, problem.targets, problem.loss_weights, spec))
  eps = 0.05
  numeric = (float(loss(pixels + eps * direction, problem))
             - float(loss(pixels - eps * direction, problem))) / (2 * eps)
  analytic = float(jnp.vdot(grad, direction))
  assert np.isfinite(float(value))
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_bfloat16_convolutions_stay_close_to_float32(variables, small_images):
  """bf16 convolutions with float32 Grams: loss within 2%, same gradient."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  content, style, noise = small_images
  pixels = jnp.asarray(0.5 * content + 0.5 * noise)
  results = []
  for dtype in ('float32', 'bfloat16'):
    spec = losses.LossSpec(normalization='paper', dtype=dtype)
    targets = losses.make_targets(variables, content, [style], spec)
    problem = optim.Problem(variables, targets,
                            losses.loss_weights(spec, 1.0, 1e3))
    results.append(optim.loss_and_grad_jit(pixels, problem, spec))
  (value32, grad32), (value16, grad16) = results
  assert abs(float(value16) / float(value32) - 1) < 2e-2
  cosine = jnp.vdot(grad32, grad16) / (jnp.linalg.norm(grad32)
                                       * jnp.linalg.norm(grad16))
  assert float(cosine) > 0.99


def test_precision_follows_dtype(variables, small_images):
  """float32 convolutions and Grams at HIGHEST precision (no TF32 or
  one-pass bfloat16 on accelerators); bfloat16 Grams multiply bfloat16
  with float32 accumulation, and equal the float32 product of the same
  values."""
  content, style, noise = small_images
  for dtype in ('float32', 'bfloat16'):
    spec = losses.LossSpec(dtype=dtype, content_layers=('conv1_2',),
                           style_layers=('conv1_1',))
    targets = losses.make_targets(variables, content, [style], spec)
    weights = losses.loss_weights(spec, 1.0, 1.0)
    hlo = jax.jit(jax.grad(lambda x: losses.total_loss(
        x, variables, targets, weights, spec))).lower(noise).as_text()
    convs = [line for line in hlo.splitlines()
             if 'stablehlo.convolution' in line]
    assert convs and all(('HIGHEST' in line) == (dtype == 'float32')
                         for line in convs)
  features = jnp.asarray(np.random.default_rng(0).uniform(
      0, 30, (6, 5, 8)), jnp.bfloat16)
  gram = losses.gram_matrix(features, normalize=False)
  jaxpr = str(jax.make_jaxpr(lambda f: losses.gram_matrix(f, False))(
      features))
  assert 'preferred_element_type=float32' in jaxpr
  exact = np.asarray(features, np.float64).reshape(-1, 8)
  np.testing.assert_allclose(gram, exact.T @ exact, rtol=1e-6)
