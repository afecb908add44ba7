"""Winograd convolutions against lax's direct convolution."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import descent, losses, objective, vgg, winograd
from nst_jax.engine import prepare


def direct_conv(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=jax.lax.Precision.HIGHEST)


# F(2x2)'s transforms use only 0, +-1/2, +-1; F(4x4)'s larger constants
# (up to 8 and 1/24) round more.
TOLERANCE = {'F2': 2e-6, 'F4': 2e-5}


@pytest.mark.parametrize('tile', ['F2', 'F4'])
@pytest.mark.parametrize('shape', [(2, 7, 10, 5, 3), (1, 8, 8, 16, 4),
                                   (1, 1, 3, 2, 2)])
def test_conv_matches_direct(tile, shape):
  """Any height/width (partial last tiles), batch and channel counts."""
  batch, height, width, cin, cout = shape
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, height, width, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
  ours = winograd.conv(x, winograd.transform_kernel(kernel, tile), tile)
  expected = direct_conv(x, kernel)
  assert ours.shape == expected.shape
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(ours, expected, rtol=0,
                             atol=TOLERANCE[tile] * scale * np.sqrt(cin))


@pytest.mark.parametrize('tile', ['F2', 'F4'])
def test_conv_relu_gradient_matches_direct(tile):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 9, 6, 8)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 8, 5)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(1, 9, 6, 5)), jnp.float32)
  flipped = vgg.flip_kernel(kernel)
  u = winograd.transform_kernel(kernel, tile)
  u_backward = winograd.transform_kernel(flipped, tile)
  ours = jax.grad(lambda x: jnp.vdot(vgg.winograd_conv_relu(
      x, kernel, bias, u, u_backward), weight))(x)
  plain = jax.grad(lambda x: jnp.vdot(jax.nn.relu(
      direct_conv(x, kernel) + bias), weight))(x)
  np.testing.assert_allclose(ours, plain, rtol=0,
                             atol=20 * TOLERANCE[tile] * float(
                                 jnp.abs(plain).max()))


def test_tile_rule():
  assert winograd.choose_tile(32, 32, 3, 64) is None        # input layer
  assert winograd.choose_tile(256, 256, 64, 64) is None     # memory-bound
  assert winograd.choose_tile(128, 128, 64, 64) == 'F4'
  assert winograd.choose_tile(64, 64, 64, 64) == 'F2'
  assert winograd.choose_tile(64, 64, 64, 128) == 'F4'
  assert winograd.choose_tile(64, 64, 256, 256) == 'F4'
  assert winograd.choose_tile(32, 32, 256, 256) == 'F2'
  assert winograd.choose_tile(32, 32, 512, 512) == 'F4'
  assert winograd.choose_tile(16, 16, 256, 512) == 'F2'
  assert winograd.choose_tile(16, 16, 512, 512) == 'F2'
  assert winograd.choose_tile(8, 8, 512, 512) == 'F2'


def test_prepare_variables_holds_the_tiles_of_each_size(random_params):
  variables = vgg.prepare_variables(random_params,
                                    winograd_sizes=[(256, 256), (128, 128)])
  tiles = {name: set(layer) for name, layer in variables['winograd'].items()}
  assert 'conv1_1' not in tiles
  assert tiles['conv1_2'] == {'F4'}                # 256 px direct, then 128
  assert tiles['conv2_1'] == {'F4'}                # 128 x 128, then 64 x 64
  assert tiles['conv3_1'] == {'F4', 'F2'}          # 64 x 64, then 32 x 32
  assert tiles['conv4_1'] == {'F4', 'F2'}          # 32 x 32, then 16 x 16
  assert variables['winograd']['conv4_2']['F4']['forward'].shape == (
      6, 6, 512, 512)
  # The backward kernel maps the 256 output channels back to 128.
  assert variables['winograd']['conv3_1']['F2']['backward'].shape == (
      4, 4, 256, 128)
  assert 'winograd' not in vgg.prepare_variables(random_params)
  # Only the convolutions the requested layers need.
  shallow = vgg.prepare_variables(random_params, winograd_sizes=[(64, 64)],
                                  layers=('conv2_1', 'conv1_1'))
  assert sorted(shallow['winograd']) == ['conv1_2', 'conv2_1']


def test_vgg_loss_and_gradient_match_direct(random_params, variables,
                                            small_images):
  """The whole loss: same value and pixel gradient as with lax convolutions,
  and the Winograd path is the one traced (one lax convolution left, the
  3-channel input layer's forward)."""
  content, style, noise = small_images
  spec = losses.LossSpec(normalization='paper')
  winograd_spec = dataclasses.replace(spec, conv_algorithm='winograd')
  winograd_variables = vgg.prepare_variables(
      random_params, winograd_sizes=[(32, 32), (40, 40)])

  def value_and_grad(spec, variables):
    @jax.jit
    def compiled(variables, content, style, noise):
      targets = objective.make_targets(variables, content, [style], spec)
      problem = descent.Problem(variables, targets,
                              losses.loss_weights(spec, 1.0, 1e3))
      return descent.loss_and_grad(noise, problem, spec)
    return compiled(variables, content, style, noise)

  value, grad = value_and_grad(spec, variables)
  w_value, w_grad = value_and_grad(winograd_spec, winograd_variables)
  np.testing.assert_allclose(w_value, value, rtol=1e-4)
  np.testing.assert_allclose(w_grad, grad, rtol=0,
                             atol=1e-4 * float(jnp.abs(grad).max()))

  image = jnp.zeros((1, 32, 32, 3))
  features = lambda x: vgg.extract_features(
      winograd_variables, x, ('conv3_1',), conv_algorithm='winograd')
  assert str(jax.make_jaxpr(features)(image)).count(
      'conv_general_dilated') == 1
  # In the compiled gradient (the unused kernel gradients removed): conv1_1
  # forward (its input gradient is taps: `vgg._taps_input_gradient`).
  hlo = jax.jit(jax.grad(lambda x: jnp.sum(features(x)['conv3_1']))).lower(
      image).compile().as_text()
  assert hlo.count(' convolution(') == 1


def test_missing_transforms_are_computed_on_the_fly(random_params, variables):
  """Variables prepared without winograd_sizes still give the right result
  (the kernels are transformed inside the program instead)."""
  image = jax.random.normal(jax.random.key(3), (1, 16, 16, 3)) * 40
  direct = vgg.extract_features(variables, image, ('conv2_2',))
  on_the_fly = vgg.extract_features(variables, image, ('conv2_2',),
                                    conv_algorithm='winograd')
  np.testing.assert_allclose(on_the_fly['conv2_2'], direct['conv2_2'],
                             rtol=0, atol=1e-4 * float(
                                 jnp.abs(direct['conv2_2']).max()))


def test_auto_picks_winograd_only_on_cpu_in_float32():
  assert prepare.conv_algorithm_for('auto', 'cpu', 'float32') == 'winograd'
  assert prepare.conv_algorithm_for('auto', 'gpu', 'float32') == 'direct'
  assert prepare.conv_algorithm_for('auto', 'tpu', 'float32') == 'direct'
  assert prepare.conv_algorithm_for('auto', 'cpu', 'bfloat16') == 'direct'
  assert prepare.conv_algorithm_for('auto', 'cpu', 'float32',
                                    shard_rows=True) == 'direct'
  assert prepare.conv_algorithm_for('winograd', 'gpu', 'float32') == (
      'winograd')
  assert prepare.conv_algorithm_for('direct', 'cpu', 'float32') == 'direct'
