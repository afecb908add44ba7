"""The paper's losses on hand-computable cases, size invariance, the Gram
matrix's gradient, the spec's checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import losses


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


@pytest.mark.parametrize('fields, match', [
    (dict(normalization='mean'), r"normalization: unknown 'mean'"),
    (dict(strip_split='pool9'), r"strip_split: unknown 'pool9'"),
    (dict(row_strips=2, style_loss='mean_std'),
     r"row_strips: strips need style_loss='gram'"),
    (dict(content_layers=('conv9_9',)), r"unknown layer 'conv9_9'"),
])
def test_spec_refuses_with_value_error(fields, match):
  # The core's own check, neutral of any config; a run's settings refuse
  # these first with a UserError naming the field (tests/test_bad_input.py).
  with pytest.raises(ValueError, match=match):
    losses.LossSpec(**fields)
