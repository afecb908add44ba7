"""VGG19 features against an independent NumPy implementation."""

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import vgg


def numpy_conv_relu(x, kernel, bias):
  """3x3 SAME convolution + ReLU by explicit shifts (HWC, HWIO)."""
  height, width, _ = x.shape
  padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.zeros((height, width, kernel.shape[-1]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += padded[dy:dy + height, dx:dx + width] @ kernel[dy, dx]
  return np.maximum(out + bias, 0)


def numpy_pool(x, pooling):
  h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
  blocks = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1)
  return blocks.mean((1, 3)) if pooling == 'avg' else blocks.max((1, 3))


def numpy_features(params, image, pooling):
  x = image.astype(np.float64)
  out = {}
  for name in vgg.LAYER_ORDER:
    if name.startswith('conv'):
      x = numpy_conv_relu(x, np.asarray(params[name]['kernel'], np.float64),
                          np.asarray(params[name]['bias'], np.float64))
    else:
      x = numpy_pool(x, pooling)
    out[name] = x
  return out


@pytest.mark.parametrize('pooling', ['avg', 'max'])
def test_features_match_numpy(variables, random_params, pooling):
  image = np.random.default_rng(1).normal(0, 50, (32, 32, 3))
  layers = ('conv1_1', 'conv2_1', 'pool2', 'conv3_1', 'conv4_2', 'conv5_1')
  ours = vgg.extract_features(variables, jnp.asarray(image[None], jnp.float32),
                              layers, pooling)
  reference = numpy_features(random_params, image, pooling)
  assert set(ours) == set(layers)
  for name in layers:
    np.testing.assert_allclose(ours[name][0], reference[name], rtol=2e-3,
                               atol=2e-3 * np.abs(reference[name]).max())


def test_relu_alias_and_stops_at_deepest(variables):
  image = jnp.zeros((1, 16, 16, 3))
  features = vgg.extract_features(variables, image, ('relu2_1',))
  assert list(features) == ['conv2_1']
  # Only the layers up to conv2_1 exist in the traced program.
  jaxpr = str(jax.make_jaxpr(lambda x: vgg.extract_features(
      variables, x, ('conv1_2',)))(image))
  assert jaxpr.count('conv_general_dilated') == 2


def test_custom_vjp_gradient_equals_plain_autodiff(random_params, variables):
  """The pre-flipped backward pass gives the gradient of a plain lax VGG."""
  def plain(x):
    for name in vgg.LAYER_ORDER[:vgg.LAYER_ORDER.index('conv3_1') + 1]:
      if name.startswith('conv'):
        layer = random_params[name]
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, layer['kernel'], (1, 1), 'SAME',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + layer['bias'])
      else:
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1),
                                  (1, 2, 2, 1), 'VALID') / 4
    return jnp.sum(x ** 2)

  ours = lambda x: jnp.sum(vgg.extract_features(
      variables, x, ('conv3_1',))['conv3_1'] ** 2)
  x = jax.random.normal(jax.random.key(2), (1, 24, 24, 3)) * 30
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(plain)(x),
                             rtol=1e-4, atol=1e-4 * float(
                                 jnp.abs(jax.grad(plain)(x)).max()))


@pytest.mark.parametrize('channels', [3, 4])
def test_few_channel_input_gradient_equals_autodiff(channels):
  """A layer with few input channels (conv1_1) takes its input gradient as
  taps, not as a convolution; it equals the plain convolution's gradient
  on odd sizes, a batch of two and 'reflect' padding."""
  rng = np.random.default_rng(4)
  kernel = jnp.asarray(rng.normal(0, 0.1, (3, 3, channels, 16)), jnp.float32)
  bias = jnp.asarray(rng.normal(0, 0.1, (16,)), jnp.float32)
  x = jnp.asarray(rng.normal(0, 1, (2, 7, 9, channels)), jnp.float32)
  weights = jnp.asarray(rng.normal(0, 1, (2, 7, 9, 16)), jnp.float32)
  variables = {'params': {'conv1_1': {'kernel': kernel, 'bias': bias}}}

  def plain(x, padding):
    if padding == 'reflect':
      x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), mode='reflect')
    y = jax.nn.relu(jax.lax.conv_general_dilated(
        x, kernel, (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias)
    return y[:, :, 1:-1] if padding == 'reflect' else y

  for padding in ('zeros', 'reflect'):
    ours = jax.grad(lambda x: jnp.vdot(weights, vgg.conv_layer(
        variables, 'conv1_1', x, jnp.float32, padding)))
    np.testing.assert_allclose(
        ours(x), jax.grad(lambda x: jnp.vdot(weights, plain(x, padding)))(x),
        rtol=1e-5, atol=1e-5)
  # After dead code (the kernel's gradient) is removed, the only
  # convolution left is the forward one.
  compiled = jax.jit(jax.grad(lambda x: jnp.sum(vgg.conv_layer(
      variables, 'conv1_1', x, jnp.float32)))).lower(x).compile().as_text()
  assert compiled.count(' convolution(') == 1


def test_max_pool_gradient_equals_window_reduction(variables):
  """Max pooling by reshape has the gradient of XLA's window reduction
  after a ReLU (odd sizes drop the last row and column, as VALID does)."""
  def through(pool_fn):
    def f(x):
      y = vgg.conv_layer(variables, 'conv1_1', x, jnp.float32)
      return jnp.sum(jnp.sin(pool_fn(y)))
    return f
  window = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
  x = jax.random.normal(jax.random.key(3), (1, 15, 13, 3)) * 30
  np.testing.assert_array_equal(vgg.pool(jnp.ones((2, 5, 7, 4)), 'max').shape,
                                (2, 2, 3, 4))
  np.testing.assert_allclose(
      jax.grad(through(lambda y: vgg.pool(y, 'max')))(x),
      jax.grad(through(window))(x), rtol=1e-6, atol=1e-6)


def test_unknown_layer_names_valid_ones():
  with pytest.raises(ValueError, match='conv4_2'):
    vgg.canonical_layer('conv9_9')


def test_unknown_preprocessing_and_pooling_raise_value_error(variables):
  # The core raises ValueError; the settings and the weights files name the
  # field or file before these are reached.
  with pytest.raises(ValueError, match='caffe, torchvision'):
    vgg.preprocess(jnp.zeros((1, 3)), 'bgr')
  with pytest.raises(ValueError, match='avg, max'):
    vgg.extract_features(variables, jnp.zeros((1, 8, 8, 3)), ('conv1_1',),
                         pooling='min')


def test_min_image_size_and_macs():
  assert vgg.min_image_size(['conv5_1']) == 16
  assert vgg.min_image_size(['conv1_1']) == 1
  assert vgg.min_image_size(['pool1']) == 2
  # VGG19 up to conv5_1: 361,152 multiply-adds per input pixel.
  assert vgg.MACS_PER_PIXEL['conv5_1'] == 361152


def test_preprocess_caffe_and_torchvision():
  pixel = jnp.asarray([[10.0, 20.0, 30.0]])
  np.testing.assert_allclose(vgg.preprocess(pixel, 'caffe'),
                             [[30 - 103.939, 20 - 116.779, 10 - 123.68]],
                             rtol=1e-6)
  np.testing.assert_allclose(
      vgg.preprocess(pixel, 'torchvision'),
      [[(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224,
        (30 / 255 - 0.406) / 0.225]], rtol=1e-5)
