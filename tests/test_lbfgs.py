"""L-BFGS's direction and preconditioner against torch.optim.LBFGS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import lbfgs
import torch_lbfgs


@pytest.mark.parametrize('curvature', ['positive', 'mixed'])
def test_lbfgs_nols_is_torchs_algorithm(curvature):
  """Same iterates as torch.optim.LBFGS (no line search) on non-quadratic
  functions, with a memory small enough that the history wraps around;
  'mixed' starts where the curvature is negative, so pairs are skipped."""
  f, x0 = torch_lbfgs.non_quadratic(curvature)
  value_and_grad = jax.jit(jax.value_and_grad(f))
  numpy_fun_grad = lambda x: tuple(np.asarray(v, np.float64)
                                   for v in value_and_grad(jnp.asarray(x)))
  expected, skipped, _ = torch_lbfgs.lbfgs_reference(
      numpy_fun_grad, x0, lr=0.5, history=3, steps=12)
  assert (skipped > 0) == (curvature == 'mixed')

  opt = lbfgs.scale_by_lbfgs_fixed_step(0.5, memory_size=3)
  x = jnp.asarray(x0, jnp.float32)
  state = opt.init(x)
  _, g = value_and_grad(x)
  got = []
  for _ in range(12):
    updates, state = opt.update(g, state, x)
    x = x + updates
    _, g = value_and_grad(x)
    got.append(np.asarray(x))
  np.testing.assert_allclose(np.stack(got), expected, rtol=2e-3, atol=2e-4)
  assert int(state.stored) == 3  # the history filled and wrapped


@pytest.mark.parametrize('stored,next_index', [(3, 3), (5, 2), (5, 0)])
def test_lbfgs_direction_is_the_two_loop_recursion(stored, next_index):
  """The direction from the kept inner products equals torch's two-loop
  recursion over the pairs, newest first (held in a ring buffer: partly
  filled, and full with the newest pair in the middle or at the end)."""
  memory, size = 5, (4, 3, 2)
  rng = np.random.default_rng(stored + next_index)
  s_history = rng.normal(size=(memory, 24))
  # Positive curvature, and pairs far from each other's multiples.
  y_history = s_history * rng.uniform(0.5, 2.0, s_history.shape)
  held = [(next_index - 1 - i) % memory for i in range(stored)]  # newest 1st
  for slot in set(range(memory)) - set(held):  # slots never written
    s_history[slot] = y_history[slot] = 0
  rho = np.array([1 / (s @ y) if s @ y else 0.0
                  for s, y in zip(s_history, y_history)])
  gamma = (s_history[held[0]] @ y_history[held[0]]) / (
      y_history[held[0]] @ y_history[held[0]])
  grad = rng.normal(size=size)

  oldest_first = held[::-1]
  r = torch_lbfgs.two_loop(grad.ravel(), s_history[oldest_first],
                           y_history[oldest_first], rho[oldest_first], gamma)

  opt = lbfgs.scale_by_lbfgs_fixed_step(1.0, memory_size=memory)
  params = jnp.asarray(rng.normal(size=size), jnp.float32)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  state = opt.init(params)._replace(
      count=jnp.asarray(7), previous_params=params,  # no new pair: s = 0
      previous_grad=f32(grad), s_history=f32(s_history),
      y_history=f32(y_history), rho_history=f32(rho),
      sy_products=f32(s_history @ y_history.T),
      yy_products=f32(y_history @ y_history.T), stored=jnp.asarray(stored),
      next_index=jnp.asarray(next_index), initial_scale=f32(gamma))
  updates, new_state = jax.jit(opt.update)(f32(grad), state, params)
  np.testing.assert_allclose(-np.asarray(updates).ravel(), r, rtol=1e-4,
                             atol=1e-4 * np.abs(r).max())
  assert int(new_state.stored) == stored  # the zero pair was not kept


def test_lbfgs_direction_has_no_loop_bound_known_only_at_run_time():
  """XLA:GPU copies a while loop's condition to the host every iteration:
  the recursion's loops have fixed trip counts (scans, no while)."""
  opt = lbfgs.scale_by_lbfgs_fixed_step(1.0, memory_size=5)
  params = jnp.ones((4, 3, 3))
  jaxpr = str(jax.make_jaxpr(opt.update)(params, opt.init(params), params))
  assert 'scan' in jaxpr and 'while' not in jaxpr


def test_pyramid_preconditioner_is_symmetric_and_per_image():
  """M = sum_l U_l U_l^T: <M a, b> = <a, M b>, <M a, a> > 0, odd sizes
  included; leading axes (video frames) are separate images."""
  precondition = lbfgs.pyramid_preconditioner(3)
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.normal(size=(2, 9, 7, 3)), jnp.float32)
          for _ in range(2))
  m_a, m_b = precondition(a), precondition(b)
  np.testing.assert_allclose(jnp.vdot(m_a, b), jnp.vdot(a, m_b), rtol=1e-5)
  assert float(jnp.vdot(m_a, a)) > float(jnp.vdot(a, a))
  np.testing.assert_allclose(m_a[1], precondition(a[1]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(lbfgs.pyramid_preconditioner(1)(a), a)


def test_preconditioned_lbfgs_is_lbfgs_on_pyramid_coefficients():
  """L-BFGS with H0 = gamma M, M = sum_l U_l U_l^T, takes the same steps
  as plain L-BFGS on pyramid coefficients z with x = sum_l U_l z_l (the
  preconditioner's definition), through a wrapping history."""
  rng = np.random.default_rng(1)
  shape = (8, 6, 3)
  a = rng.normal(size=(144, 144)) / 12
  a = a @ a.T + 0.2 * np.eye(144)
  b = rng.normal(size=144)

  def f(x):
    flat = x.ravel()
    return 0.5 * flat @ a @ flat - b @ flat + 0.05 * jnp.sum(flat ** 4)

  small = (4, 3, 3)
  up = lambda z: jax.image.resize(z, shape, 'linear', antialias=False)

  def from_coefficients(z):
    return z[:144].reshape(shape) + up(z[144:].reshape(small))

  x0 = jnp.asarray(rng.normal(size=shape), jnp.float32)
  fx = jax.jit(jax.value_and_grad(f))
  fz = jax.jit(jax.value_and_grad(lambda z: f(from_coefficients(z))))

  def run(value_and_grad, start, opt, steps=10):
    x = start
    _, g = value_and_grad(x)
    # Past the first step (whose size torch scales by 1/|g|_1, a norm that
    # differs between the two spaces), with no pair yet: H0 = M (= I on z).
    state = opt.init(start)._replace(count=jnp.asarray(1), previous_params=x,
                                     previous_grad=g)
    path, update = [], jax.jit(opt.update)
    for _ in range(steps):
      updates, state = update(g, state, x)
      x = x + updates
      _, g = value_and_grad(x)
      path.append(x)
    return path

  got = run(fx, x0, lbfgs.scale_by_lbfgs_fixed_step(
      0.5, 4, lbfgs.pyramid_preconditioner(2)))
  z0 = jnp.concatenate([x0.ravel(), jnp.zeros(36, jnp.float32)])
  expected = [from_coefficients(z) for z in run(
      fz, z0, lbfgs.scale_by_lbfgs_fixed_step(0.5, 4))]
  np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=1e-3,
                             atol=1e-4)
  # And it is not plain L-BFGS in pixels.
  plain = run(fx, x0, lbfgs.scale_by_lbfgs_fixed_step(0.5, 4))
  assert np.abs(np.stack(plain) - np.stack(expected)).max() > 1e-2
