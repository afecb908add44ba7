"""The objective: targets, the terms composed over the network, gradients
and precision through the whole loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import descent, losses, objective


@pytest.fixture(scope='module')
def paper_problem(variables, small_images):
  content, style, _ = small_images
  spec = losses.LossSpec(normalization='paper')
  targets = objective.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 1.0, 1e3, tv_weight=1e-2)
  return spec, descent.Problem(variables, targets, weights)


def test_loss_terms_compose(paper_problem, small_images):
  spec, problem = paper_problem
  _, _, noise = small_images
  terms = objective.loss_terms(jnp.asarray(noise), problem.variables,
                               problem.targets, problem.loss_weights, spec)
  style = sum(0.2 * terms['style_layers'][l] for l in spec.style_layers)
  np.testing.assert_allclose(terms['style'], style, rtol=1e-5)
  np.testing.assert_allclose(
      terms['total'], terms['content'] + 1e3 * terms['style']
      + 1e-2 * terms['tv'], rtol=1e-5)
  # Each term is the paper's formula of the features.
  features = objective.image_features(problem.variables,
                                      jnp.asarray(noise), spec)
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
  value, grad = descent.loss_and_grad_jit(pixels, problem, spec)
  direction = jax.random.normal(jax.random.key(3), pixels.shape)
  loss = jax.jit(lambda x, problem: objective.total_loss(
      x, problem.variables, problem.targets, problem.loss_weights, spec))
  eps = 0.05
  numeric = (float(loss(pixels + eps * direction, problem))
             - float(loss(pixels - eps * direction, problem))) / (2 * eps)
  analytic = float(jnp.vdot(grad, direction))
  assert np.isfinite(float(value))
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_bfloat16_convolutions_stay_close_to_float32(variables, small_images):
  """bf16 convolutions with float32 Grams: loss within 2%, same gradient."""
  content, style, noise = small_images
  pixels = jnp.asarray(0.5 * content + 0.5 * noise)
  results = []
  for dtype in ('float32', 'bfloat16'):
    spec = losses.LossSpec(normalization='paper', dtype=dtype)
    targets = objective.make_targets(variables, content, [style], spec)
    problem = descent.Problem(variables, targets,
                              losses.loss_weights(spec, 1.0, 1e3))
    results.append(descent.loss_and_grad_jit(pixels, problem, spec))
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
    targets = objective.make_targets(variables, content, [style], spec)
    weights = losses.loss_weights(spec, 1.0, 1.0)
    hlo = jax.jit(jax.grad(lambda x: objective.total_loss(
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
