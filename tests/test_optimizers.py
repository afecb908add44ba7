"""The optimisers' static settings and their transformations."""

import pytest

from nst_jax.core import optimizers


def test_only_lbfgs_searches_along_its_update():
  assert [name for name in optimizers.OPTIMIZERS
          if optimizers.Optimizer(name).line_search] == ['lbfgs']
  assert optimizers.as_optimizer('lbfgs') == optimizers.Optimizer('lbfgs')


def test_unknown_optimizer_is_a_value_error():
  """The core raises no UserError: the engine's settings check refuses an
  unknown name first (tests/test_bad_input.py)."""
  with pytest.raises(ValueError, match="unknown 'rmsprop'; valid are lbfgs"):
    optimizers.make_optimizer('rmsprop', 1.0)
