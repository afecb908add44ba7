"""Each optimiser lowers the loss; counting, stopping and recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import losses, optim


@pytest.fixture(scope='module')
def problem_spec(variables, small_images):
  content, style, _ = small_images
  spec = losses.LossSpec(normalization='invariant')
  targets = losses.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 1.0, 1e-3)
  return optim.Problem(variables, targets, weights), spec


LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 5.0, 'sgd': 1e3}


@pytest.mark.parametrize('optimizer', optim.OPTIMIZERS)
def test_optimizer_lowers_loss(problem_spec, small_images, optimizer):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  start, _ = optim.loss_and_grad_jit(noise, problem, spec)
  state = optim.minimize(noise, problem, spec, optimizer,
                         LEARNING_RATES[optimizer], iterations=8,
                         chunk_size=4)
  assert int(state.step) == 8
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'iterations'
  assert float(state.value) < 0.8 * float(start)
  # The value carried in the state is the loss of the carried pixels.
  recomputed, _ = optim.loss_and_grad_jit(state.pixels, problem, spec)
  np.testing.assert_allclose(state.value, recomputed, rtol=1e-4)
  if optimizer != 'lbfgs':  # one evaluation per step, plus the first
    assert int(state.evaluations) == 9


def test_lbfgs_counts_every_evaluation(problem_spec, small_images):
  """The count equals the loss calls actually made (counted from the host)."""
  problem, spec = problem_spec
  calls = []

  original = losses.total_loss

  def counted(p, *args, **kwargs):
    value = original(p, *args, **kwargs)
    jax.debug.callback(lambda: calls.append(1))
    return value

  optim.losses.total_loss = counted
  try:
    state = jax.jit(lambda pixels, problem: optim.run_chunk_unjitted(
        optim.init_state(pixels, problem, spec, 'lbfgs', 1.0),
        problem, spec, 'lbfgs', 1.0, optim.stop_criteria(5), 5)[0])(
            jnp.asarray(small_images[2]), problem)
    jax.block_until_ready(state)
  finally:
    optim.losses.total_loss = original
  assert int(state.step) == 5
  assert int(state.evaluations) == len(calls)
  assert len(calls) >= 6


def test_non_finite_loss_keeps_last_finite_image(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  state = optim.minimize(noise, problem, spec, 'adam', 1e30, iterations=10,
                         chunk_size=5)
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'non_finite'
  assert int(state.step) < 10
  assert bool(jnp.all(jnp.isfinite(state.pixels)))
  assert np.isfinite(float(state.value))


def test_stop_loss_and_zero_iterations(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  start, _ = optim.loss_and_grad_jit(noise, problem, spec)
  state = optim.minimize(noise, problem, spec, 'lbfgs_nols', 1.0,
                         iterations=50, chunk_size=5,
                         stop_loss=0.5 * float(start))
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'stop_loss'
  assert float(state.value) <= 0.5 * float(start)
  assert int(state.step) < 50
  state = optim.minimize(noise, problem, spec, 'lbfgs_nols', 1.0,
                         iterations=0, chunk_size=5)
  assert int(state.step) == 0 and int(state.evaluations) == 1
  np.testing.assert_array_equal(state.pixels, noise)


def test_changing_numbers_does_not_recompile(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  lr = jnp.asarray(1.0)
  criteria = optim.stop_criteria(3)
  state = optim.init_state_jit(noise, problem, spec, 'lbfgs_nols', lr)
  optim.run_chunk(state, problem, spec, 'lbfgs_nols', lr, criteria, 3)
  compiled = optim.run_chunk._cache_size()
  other = problem.replace(
      weights=losses.loss_weights(spec, 7.0, 2e-2, tv_weight=1.0),
      variables=jax.tree_util.tree_map(lambda x: x * 1.01, problem.variables))
  optim.run_chunk(state, other, spec, 'lbfgs_nols', jnp.asarray(0.5),
                  optim.stop_criteria(2, 1.0, 1e-3), 3)
  assert optim.run_chunk._cache_size() == compiled
