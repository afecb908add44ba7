"""The strong Wolfe line search against torch.optim.LBFGS's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import lbfgs, line_search
import torch_lbfgs


@pytest.mark.parametrize('curvature,lr', [('positive', 1.0), ('mixed', 1.0),
                                          ('positive', 30.0),
                                          ('mixed', 0.3)])
def test_lbfgs_line_search_is_torchs_strong_wolfe(curvature, lr):
  """Same iterates and evaluation counts as torch.optim.LBFGS with
  line_search_fn='strong_wolfe'. lr 30 makes the first trials far too
  long, so the searches zoom; on 'mixed' (negative curvature near the
  start) the first searches extrapolate (by 10x, then 40x at lr 0.3) and
  zoom."""
  f, x0 = torch_lbfgs.non_quadratic(curvature)
  plain = jax.jit(jax.value_and_grad(f))
  numpy_fun_grad = lambda x: tuple(np.asarray(v, np.float64)
                                   for v in plain(jnp.asarray(x)))
  expected, _, expected_evaluations = torch_lbfgs.lbfgs_reference(
      numpy_fun_grad, x0, lr=lr, history=3, steps=8, line_search=True)
  # The searches did work (lr 1 on the convex function: first trials pass).
  assert max(expected_evaluations) > 1 or (curvature, lr) == ('positive', 1.0)

  value_and_grad = jax.value_and_grad(lambda x: (f(x), {'f': f(x)}),
                                      has_aux=True)
  opt = lbfgs.scale_by_lbfgs_fixed_step(lr, memory_size=3)

  @jax.jit
  def step(x, state, value, grad, aux):
    updates, state = opt.update(grad, state, x)
    t, value, grad, aux, spent = line_search.strong_wolfe_line_search(
        value_and_grad, x, updates, value, grad, aux)
    return x + t * updates, state, value, grad, aux, spent

  x = jnp.asarray(x0, jnp.float32)
  state = opt.init(x)
  (value, aux), grad = value_and_grad(x)
  got, evaluations = [], []
  for _ in range(8):
    x, state, value, grad, aux, spent = step(x, state, value, grad, aux)
    got.append(np.asarray(x))
    evaluations.append(int(spent))
    np.testing.assert_allclose(aux['f'], value, rtol=1e-6)
  assert evaluations == expected_evaluations
  np.testing.assert_allclose(np.stack(got), expected, rtol=2e-3, atol=2e-4)


def test_line_search_backs_off_non_finite_trials():
  """A trial where the objective is not finite counts as too high: the
  search zooms back to a finite, lower point."""
  def f(x):
    value = jnp.sum((x - 1.0) ** 2)
    return jnp.where(jnp.max(x) > 3.0, jnp.inf, value), ()
  value_and_grad = jax.value_and_grad(f, has_aux=True)
  x = jnp.zeros((3,))
  (value, aux), grad = value_and_grad(x)
  t, new_value, _, _, spent = jax.jit(
      lambda d: line_search.strong_wolfe_line_search(
          value_and_grad, x, d, value, grad, aux, initial_step=10.0)
  )(-grad)
  assert np.isfinite(float(new_value)) and float(new_value) < float(value)
  assert 0 < float(t) * 2 <= 3.0 and int(spent) > 1
