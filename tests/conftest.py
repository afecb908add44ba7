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
  from nst_jax import vgg  # pylint: disable=g-import-not-at-top
  return vgg.prepare_variables(random_params)


@pytest.fixture(scope='session')
def small_images():
  """A 32x32 content, a 40x40 style and a 32x32 noise image (RGB 0-255)."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:32, 0:32]
  content = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).astype(np.float32)
  style = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  noise = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
  return content, style, noise
