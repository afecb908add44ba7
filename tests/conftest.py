"""Test settings: fast CPU compiles, no network, shared small problems."""

import os

# Nothing downloads at test time: weights=auto must not try the network.
os.environ['NST_JAX_OFFLINE'] = '1'

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Tests check numbers, not speed: skip most XLA optimisation passes.
jax.config.update('jax_disable_most_optimizations', True)


@pytest.fixture(scope='session')
def random_params():
  """Seeded He-normal VGG19 weights (untrained), shared by all tests."""
  from nst_jax import weights  # pylint: disable=g-import-not-at-top
  return weights.random_weights(0)[0]


@pytest.fixture(scope='session')
def variables(random_params):
  from nst_jax.core import vgg  # pylint: disable=g-import-not-at-top
  return vgg.prepare_variables(random_params)


def small_run_config(folder, **overrides):
  """A 32 px run on built-in images with seeded random weights, writing
  into `folder`/out; shallow layers keep compilation short.

  `overrides` set config fields; `sweep_FIELD=...` sets `config.sweep.FIELD`.
  """
  from nst_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dict(
      content='builtin:scene', style='builtin:painting',
      output=str(folder / 'out' / 'result.png'), weights='random',
      image_size=32, iterations=6, log_every=3, optimizer='lbfgs_nols',
      init='content', content_layers='conv2_1',
      style_layers='conv1_1,conv2_1', style_weight=1e-2,
      compilation_cache='',
      # Direct convolutions compile faster than Winograd's; the tests of
      # the Winograd path ask for it.
      conv_algorithm='direct'))
  for key, value in overrides.items():
    if key.startswith('sweep_'):
      config.sweep[key[len('sweep_'):]] = value
    else:
      config[key] = value
  return config


@pytest.fixture(name='small_config')
def small_config_fixture():
  """`small_run_config`, for tests."""
  return small_run_config


@pytest.fixture(scope='session')
def small_images():
  """A 32x32 content, a 40x40 style and a 32x32 noise image (RGB 0-255)."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:32, 0:32]
  content = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).astype(np.float32)
  style = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  noise = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
  return content, style, noise


@pytest.fixture(scope='module')
def problem_spec(variables, small_images):
  """(descent.Problem, spec): the small images' invariant loss."""
  from nst_jax.core import descent, losses, objective  # pylint: disable=g-import-not-at-top
  content, style, _ = small_images
  spec = losses.LossSpec(normalization='invariant')
  targets = objective.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 1.0, 1e-3)
  return descent.Problem(variables, targets, weights), spec
