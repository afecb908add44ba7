"""Each optimiser lowers the loss; counting, stopping and recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.core import descent, losses, objective, optimizers
from nst_jax.engine import loop, programs as programs_lib


LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 5.0, 'sgd': 1e3}


@pytest.mark.parametrize('optimizer', optimizers.OPTIMIZERS)
def test_optimizer_lowers_loss(problem_spec, small_images, optimizer):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  start, _ = descent.loss_and_grad_jit(noise, problem, spec)
  state = loop.minimize(noise, problem, spec, optimizer,
                        LEARNING_RATES[optimizer], iterations=8,
                        chunk_size=4)
  assert int(state.step) == 8
  assert descent.STOP_REASONS[int(state.stop_reason)] == 'iterations'
  assert float(state.value) < 0.8 * float(start)
  # The value carried in the state is the loss of the carried pixels.
  recomputed, _ = descent.loss_and_grad_jit(state.pixels, problem, spec)
  np.testing.assert_allclose(state.value, recomputed, rtol=1e-4)
  # So are the loss terms carried for logging.
  terms = objective.loss_terms(state.pixels, problem.variables,
                               problem.targets, problem.loss_weights, spec)
  for name in ('total', 'content', 'style'):
    np.testing.assert_allclose(state.terms[name], terms[name], rtol=1e-4)
  if optimizer != 'lbfgs':  # one evaluation per step, plus the first
    assert int(state.evaluations) == 9


def test_lbfgs_counts_every_evaluation(problem_spec, small_images):
  """The count equals the loss calls actually made (counted from the host)."""
  problem, spec = problem_spec
  calls = []

  original = objective.loss_terms

  def counted(p, *args, **kwargs):
    value = original(p, *args, **kwargs)
    jax.debug.callback(lambda: calls.append(1))
    return value

  descent.objective.loss_terms = counted
  try:
    state = jax.jit(lambda pixels, problem: descent.run_chunk(
        descent.init_state(pixels, problem, spec, 'lbfgs', 1.0),
        problem, spec, 'lbfgs', 1.0, descent.stop_criteria(5), 5)[0])(
            jnp.asarray(small_images[2]), problem)
    jax.block_until_ready(state)
  finally:
    descent.objective.loss_terms = original
  assert int(state.step) == 5
  # Every call was an evaluation (the line search returns the terms of the
  # point it accepts: no closing forward pass).
  assert int(state.evaluations) == len(calls)
  assert len(calls) >= 7


def test_lbfgs_first_step_is_the_first_trial(problem_spec, small_images):
  """With first_step, the first line search starts from a step that moves
  the most-changed pixel value by first_step and accepts it at once here;
  from torch's tiny trial (first_step 0) it extrapolates over several
  evaluations."""
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])

  def first(optimizer):
    state = loop.minimize(noise, problem, spec, optimizer, 1.0,
                          iterations=1, chunk_size=1)
    return (int(state.evaluations) - 1,
            float(jnp.max(jnp.abs(state.pixels - noise))), float(state.value))

  torch_spent, _, torch_value = first(optimizers.Optimizer('lbfgs'))
  spent, moved, value = first(optimizers.Optimizer('lbfgs', first_step=8.0))
  assert torch_spent >= 4
  assert spent == 1
  np.testing.assert_allclose(moved, 8.0, rtol=1e-4)
  start, _ = descent.loss_and_grad_jit(noise, problem, spec)
  assert value < float(start) and torch_value < float(start)


def test_non_finite_loss_keeps_last_finite_image(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  state = loop.minimize(noise, problem, spec, 'adam', 1e30, iterations=10,
                         chunk_size=5)
  assert descent.STOP_REASONS[int(state.stop_reason)] == 'non_finite'
  assert int(state.step) < 10
  assert bool(jnp.all(jnp.isfinite(state.pixels)))
  assert np.isfinite(float(state.value))


def test_stop_loss_and_zero_iterations(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  start, _ = descent.loss_and_grad_jit(noise, problem, spec)
  state = loop.minimize(noise, problem, spec, 'lbfgs_nols', 1.0,
                         iterations=50, chunk_size=5,
                         stop_loss=0.5 * float(start))
  assert descent.STOP_REASONS[int(state.stop_reason)] == 'stop_loss'
  assert float(state.value) <= 0.5 * float(start)
  assert int(state.step) < 50
  state = loop.minimize(noise, problem, spec, 'lbfgs_nols', 1.0,
                         iterations=0, chunk_size=5)
  assert int(state.step) == 0 and int(state.evaluations) == 1
  np.testing.assert_array_equal(state.pixels, noise)


def test_changing_numbers_does_not_recompile(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  programs = programs_lib.Programs()
  loop.minimize(noise, problem, spec, 'lbfgs_nols', 1.0, iterations=3,
                chunk_size=3, programs=programs)
  compiled = programs.compilations
  assert compiled == 2  # init and chunk
  other = problem.replace(
      loss_weights=losses.loss_weights(spec, 7.0, 2e-2, tv_weight=1.0),
      variables=jax.tree_util.tree_map(lambda x: x * 1.01, problem.variables))
  loop.minimize(noise * 0.5, other, spec, 'lbfgs_nols', 0.5, iterations=2,
                chunk_size=3, stop_loss=1.0, tolerance=1e-3,
                programs=programs)
  assert programs.compilations == compiled


def test_lbfgs_stops_when_its_line_search_finds_no_lower_loss(
    variables, small_images):
  """At a minimum (content and style both the image itself) the gradient
  vanishes: the line search cannot lower the loss, and the run stops with
  the reason instead of spending evaluations on the same point."""
  image = jnp.asarray(small_images[1][:32, :32])
  spec = losses.LossSpec(content_layers=('conv2_1',),
                         style_layers=('conv1_1', 'conv2_1'))
  targets = objective.make_targets(variables, image, [image], spec)
  problem = descent.Problem(variables, targets,
                            losses.loss_weights(spec, 1.0, 1.0))
  state = loop.minimize(image, problem, spec, 'lbfgs', iterations=5,
                        chunk_size=5)
  assert descent.STOP_REASONS[int(state.stop_reason)] == 'no_progress'
  assert int(state.step) < 5  # rounding may leave a step or two
