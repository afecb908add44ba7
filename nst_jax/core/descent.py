"""The compiled descent of the pixels: one step, chunks of steps, sweeps.

`init_state` evaluates the loss at the start; `run_chunk` does up to
`chunk_size` optimiser steps (`nst_jax.core.optimizers`) in one
`lax.while_loop` and hands back the loss of every step, so Python only sees
the state every few steps (for logging, saving and Ctrl-C). The state
carries the value and gradient at the current pixels, so no step evaluates
twice, and a stop flag: once a member stops (iteration budget, non-finite
loss, stop_loss reached, no progress over a window) its steps become no-ops.
A single run's loop ends there; under `vmap` (sweeps: `init_state_batched`,
`run_chunk_batched`) the loop runs until every member has stopped, and a
stopped member's steps are computed and discarded, so every member keeps
exactly its stand-alone trajectory.

Weights, targets, loss weights, learning rate and stop criteria are all
arguments, never constants: changing them does not recompile.

The functions here are pure and unjitted: `nst_jax.engine.programs`
compiles them (placed on devices, batched over sweep members) in one place.

Example::

  init = jax.jit(descent.init_state, static_argnames=('spec', 'optimizer'))
  chunk = jax.jit(descent.run_chunk,
                  static_argnames=('spec', 'optimizer', 'chunk_size'))
  state = init(pixels, problem, spec, 'lbfgs', lr)
  state, values, terms = chunk(state, problem, spec, 'lbfgs', lr, criteria,
                               chunk_size=20)
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from nst_jax.core import lbfgs, line_search, losses, objective, optimizers

TOLERANCE_WINDOW = 20  # steps over which `tolerance` measures progress

# Why a run stopped; index into STOP_REASONS.
# 'no_progress': L-BFGS's line search found no lower loss (its trial steps
# fell below the loss's resolution, e.g. in bfloat16, or the gradient
# vanished); it would spend its evaluations on the same point.
STOP_REASONS = ('running', 'iterations', 'non_finite', 'stop_loss',
                'tolerance', 'no_progress')
RUNNING, ITERATIONS, NON_FINITE, STOP_LOSS, TOLERANCE, NO_PROGRESS = range(6)


@flax.struct.dataclass
class Problem:
  """Everything the loss needs besides the pixels (all arrays)."""
  variables: Any
  targets: objective.Targets
  loss_weights: losses.LossWeights


@flax.struct.dataclass
class StopCriteria:
  """When to stop, as arrays so sweeps can differ.

  Attributes:
    iterations: number of optimiser steps.
    stop_loss: stop once the total loss is at or below this (-inf: never).
    tolerance: stop when the loss improved by less than this fraction over
      the last `TOLERANCE_WINDOW` steps (0: never).
  """
  iterations: jax.Array
  stop_loss: jax.Array
  tolerance: jax.Array


def stop_criteria(iterations, stop_loss=None, tolerance=0.0) -> StopCriteria:
  """`StopCriteria` from numbers.

  Args:
    iterations: number of optimiser steps.
    stop_loss: stop at or below this total loss; None: never.
    tolerance: see `StopCriteria.tolerance`.
  Returns:
    The criteria as NumPy scalars.
  """
  # NumPy scalars: jnp.asarray would compile a small program per dtype,
  # which adds to start-up.
  return StopCriteria(
      iterations=np.asarray(iterations, np.int32),
      stop_loss=np.asarray(-np.inf if stop_loss is None else stop_loss,
                           np.float32),
      tolerance=np.asarray(tolerance, np.float32))


@flax.struct.dataclass
class LoopState:
  """The optimisation state of one run (a leading axis in sweeps).

  `value` and `grad` are the loss and gradient at `pixels`, `terms` its
  `objective.loss_terms` (the evaluation returns them alongside, so logging
  needs no extra forward pass).
  """
  pixels: jax.Array
  opt_state: Any
  value: jax.Array
  grad: jax.Array
  step: jax.Array
  evaluations: jax.Array
  stop_reason: jax.Array
  recent_values: jax.Array  # ring buffer of the last TOLERANCE_WINDOW values
  terms: Any


def _objective(problem: Problem, spec: losses.LossSpec):
  return lambda pixels: objective.total_loss(
      pixels, problem.variables, problem.targets, problem.loss_weights, spec)


def _value_terms_and_grad(pixels, problem: Problem, spec: losses.LossSpec,
                          step=0):
  """((total loss, loss terms), gradient) at `pixels`: one evaluation,
  belonging to optimiser step `step` (see `objective.loss_terms`)."""
  def value_and_terms(p):
    terms = objective.loss_terms(p, problem.variables, problem.targets,
                                 problem.loss_weights, spec, step)
    return terms['total'], terms
  return jax.value_and_grad(value_and_terms, has_aux=True)(pixels)


def init_state(pixels, problem: Problem, spec: losses.LossSpec,
               optimizer: str, learning_rate) -> LoopState:
  """Optimiser state plus the loss and gradient at the initial pixels.

  Args:
    pixels: the starting image, RGB 0-255.
    problem: `Problem` (VGG variables, targets, loss weights).
    spec: `losses.LossSpec` (static).
    optimizer: name from `optimizers.OPTIMIZERS` or an
      `optimizers.Optimizer` (static).
    learning_rate: scalar array.
  Returns:
    A running `LoopState` at step 0 (one evaluation spent).
  """
  (value, terms), grad = _value_terms_and_grad(pixels, problem, spec)
  opt_state = optimizers.make_optimizer(optimizer, learning_rate).init(
      pixels)
  return LoopState(
      pixels=pixels, opt_state=opt_state, value=value, grad=grad,
      step=jnp.zeros((), jnp.int32), evaluations=jnp.ones((), jnp.int32),
      stop_reason=jnp.asarray(RUNNING, jnp.int32),
      recent_values=jnp.full((TOLERANCE_WINDOW,), jnp.inf, jnp.float32),
      terms=terms)


def _step(state: LoopState, problem, spec, optimizer, learning_rate,
          criteria: StopCriteria) -> LoopState:
  """One optimiser step from `state` (which must be running)."""
  optimizer = optimizers.as_optimizer(optimizer)
  # The step this one's evaluations belong to (a redrawn sliced loss draws
  # its directions for it).
  step = state.step + 1
  opt = optimizers.make_optimizer(optimizer, learning_rate)
  updates, opt_state = opt.update(state.grad, state.opt_state, state.pixels)
  if optimizer.line_search:
    # The line search returns the value, gradient and terms at the point
    # it accepts: nothing is evaluated twice.
    downhill = lbfgs.vdot(state.grad, updates) < 0
    direction = jnp.where(downhill, updates, -state.grad * (
        jnp.linalg.norm(updates) / jnp.maximum(jnp.linalg.norm(state.grad),
                                               1e-30)))
    trial = 1.0
    if optimizer.first_step > 0:
      # torch's first trial, 1/|g|_1 of the gradient, moves a pixel value by
      # a tiny fraction, and the search then extrapolates at most tenfold
      # per evaluation; a trial of a few values' change is accepted at once
      # on most images.
      trial = jnp.where(state.step == 0, optimizer.first_step / jnp.maximum(
          jnp.max(jnp.abs(direction)), 1e-30), 1.0)
    step_size, value, grad, terms, spent = (
        line_search.strong_wolfe_line_search(
            lambda p: _value_terms_and_grad(p, problem, spec, step),
            state.pixels,
            direction, state.value, state.grad, state.terms,
            initial_step=trial))
    pixels = state.pixels + step_size * direction
  else:
    pixels = optax.apply_updates(state.pixels, updates)
    (value, terms), grad = _value_terms_and_grad(pixels, problem, spec,
                                                 step)
    spent = 1

  finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(pixels))
  value_window_ago = state.recent_values[step % TOLERANCE_WINDOW]
  improvement = (value_window_ago - value) / jnp.abs(value_window_ago)
  # A strong Wolfe step always lowers the loss: one that does not is a
  # line search that failed.
  stalled = optimizer.line_search & (value >= state.value)
  reason = jnp.select(
      [~finite, value <= criteria.stop_loss,
       (criteria.tolerance > 0) & (improvement < criteria.tolerance),
       stalled, step >= criteria.iterations],
      [NON_FINITE, STOP_LOSS, TOLERANCE, NO_PROGRESS, ITERATIONS], RUNNING)
  advanced = LoopState(
      pixels=pixels, opt_state=opt_state, value=value, grad=grad, step=step,
      evaluations=state.evaluations + spent, stop_reason=reason,
      recent_values=state.recent_values.at[step % TOLERANCE_WINDOW].set(value),
      terms=terms)
  # A non-finite step is not taken: the last finite image, its loss,
  # gradient and terms are kept, and the run stops. The optimiser's state
  # is not reverted: its update read only the kept point, so it is finite,
  # and selecting over it would copy L-BFGS's whole history every step.
  kept = state.replace(step=step, evaluations=advanced.evaluations,
                       stop_reason=reason)
  chosen = jax.tree_util.tree_map(
      lambda new, old: jnp.where(finite, new, old),
      advanced.replace(opt_state=None), kept.replace(opt_state=None))
  return chosen.replace(opt_state=opt_state)


def _stopped_at_start(state, criteria):
  """Stops before any step when the budget is 0 or the start already
  qualifies."""
  reason = jnp.select(
      [~jnp.isfinite(state.value), state.value <= criteria.stop_loss,
       state.step >= criteria.iterations],
      [NON_FINITE, STOP_LOSS, ITERATIONS], state.stop_reason)
  return state.replace(stop_reason=reason)


def run_chunk(state: LoopState, problem: Problem, spec: losses.LossSpec,
              optimizer, learning_rate, criteria: StopCriteria,
              chunk_size: int):
  """Runs up to `chunk_size` steps (a `lax.while_loop`; jit it).

  Args:
    state: `LoopState` from `init_state` or a previous chunk.
    problem: `Problem` (VGG variables, targets, loss weights).
    spec: `losses.LossSpec` (static).
    optimizer: name from `optimizers.OPTIMIZERS` or an
      `optimizers.Optimizer` (static).
    learning_rate: scalar array.
    criteria: `StopCriteria`.
    chunk_size: most steps per call (static); the loop ends early once the
      run stops.
  Returns:
    (state, values, terms): the new state, the loss after each of the
    chunk's steps (repeating once stopped), and `objective.loss_terms` at the
    final pixels (`state.terms`, carried with each evaluation).
  """
  state = _stopped_at_start(state, criteria)

  # A while loop, not a scan over a `lax.cond(running, step, identity)`:
  # XLA copies L-BFGS's history into the cond's branch before updating it
  # in place (2 x memory images each step; under vmap the cond becomes a
  # select over every member's history), and a while loop ends when the run
  # stops.
  def running(carry):
    taken, state, _ = carry
    return (taken < chunk_size) & (state.stop_reason == RUNNING)

  def body(carry):
    taken, state, values = carry
    state = _step(state, problem, spec, optimizer, learning_rate, criteria)
    return taken + 1, state, values.at[taken].set(state.value)

  taken, state, values = lax.while_loop(
      running, body, (jnp.zeros((), jnp.int32), state,
                      jnp.zeros((chunk_size,), state.value.dtype)))
  # After a stop the chunk's values repeat the final loss.
  values = jnp.where(jnp.arange(chunk_size) < taken, values, state.value)
  return state, values, state.terms


def loss_and_grad(pixels, problem: Problem, spec: losses.LossSpec):
  """The total loss and its gradient with respect to the pixels.

  Args:
    pixels: the image, RGB 0-255.
    problem: `Problem`.
    spec: `losses.LossSpec` (static).
  Returns:
    (loss, gradient shaped as `pixels`).
  """
  return jax.value_and_grad(_objective(problem, spec))(pixels)


loss_and_grad_jit = jax.jit(loss_and_grad, static_argnames=('spec',))


# ---------------------------------------------------------------------------
# Sweeps: several members (a leading axis on state, targets, loss weights,
# learning rate and criteria) in one compiled program.

# How a device runs its sweep members: 'vmap' batches them (their
# convolutions fill a GPU or TPU, and on a CPU a batched evaluation uses the
# cores better than several small ones); results match the stand-alone runs
# up to floating-point reassociation. 'map' runs them one after another and
# gives each member its stand-alone program exactly. Under 'vmap' `lbfgs`
# batches too: its line search is one while_loop evaluating once per
# iteration, so a step costs the most evaluations any member's search needs
# (no cond evaluating both branches). One member per device always runs
# unbatched.
SWEEP_MODES = ('vmap', 'map')


def _batched(fn, mode):
  """`fn` over a leading member axis: vmap or lax.map; one member runs
  unbatched (no batched loop condition, no loop around the chunk)."""
  def batched(*xs):
    if jax.tree_util.tree_leaves(xs)[0].shape[0] == 1:
      out = fn(*jax.tree_util.tree_map(lambda x: x[0], xs))
      return jax.tree_util.tree_map(lambda x: x[None], out)
    if mode == 'vmap':
      return jax.vmap(fn)(*xs)
    return lax.map(lambda args: fn(*args), xs)
  return batched


def init_state_batched(pixels, problem: Problem, spec, optimizer,
                       learning_rate, mode='vmap'):
  """`init_state` for every member; `problem.variables` is shared.

  Args:
    pixels, learning_rate: a leading member axis.
    problem: `Problem` whose targets and loss weights have a leading member
      axis.
    spec, optimizer: as `init_state` (static).
    mode: one of `SWEEP_MODES`.
  Returns:
    A `LoopState` with a leading member axis.
  """
  fn = lambda p, t, w, lr: init_state(
      p, Problem(problem.variables, t, w), spec, optimizer, lr)
  return _batched(fn, mode)(pixels, problem.targets, problem.loss_weights,
                            learning_rate)


def run_chunk_batched(state, problem: Problem, spec, optimizer, learning_rate,
                      criteria, chunk_size, mode='vmap'):
  """`run_chunk` for every member (see `SWEEP_MODES`).

  Args:
    state: `LoopState` with a leading member axis.
    problem: as `init_state_batched`.
    spec, optimizer, chunk_size: as `run_chunk` (static).
    learning_rate, criteria: a leading member axis.
    mode: one of `SWEEP_MODES`.
  Returns:
    (state, values, terms) as `run_chunk`'s, each with a leading member
    axis (values: (members, chunk_size)).
  """
  if mode == 'vmap' and state.step.shape[0] > 1:
    return _run_chunk_vmap(state, problem, spec, optimizer, learning_rate,
                           criteria, chunk_size)
  fn = lambda s, t, w, lr, c: run_chunk(
      s, Problem(problem.variables, t, w), spec, optimizer, lr, c, chunk_size)
  return _batched(fn, mode)(state, problem.targets, problem.loss_weights,
                            learning_rate, criteria)


def _run_chunk_vmap(state, problem: Problem, spec, optimizer, learning_rate,
                    criteria, chunk_size):
  """`run_chunk` for a batch of members, with steps batched by vmap.

  Not `vmap(run_chunk)`: a while loop under vmap has a batched condition,
  and JAX keeps a stopped member's whole loop state by selecting over all
  of it every step, L-BFGS's histories included (2 x memory images). Here
  the loop runs while any member runs, and a stopped member's step is
  computed and its result dropped: only its pixels, loss, gradient and
  counters are selected. Its optimiser state does advance, harmlessly: a
  stopped member never steps again in this run (L-BFGS's histories do not
  even change, as its pixels and gradient stay put, so no pair is kept).
  """
  step = jax.vmap(lambda s, t, w, lr, c: _step(
      s, Problem(problem.variables, t, w), spec, optimizer, lr, c))
  state = jax.vmap(_stopped_at_start)(state, criteria)

  def running(carry):
    taken, state, _ = carry
    return (taken < chunk_size) & jnp.any(state.stop_reason == RUNNING)

  def body(carry):
    taken, state, values = carry
    advanced = step(state, problem.targets, problem.loss_weights,
                    learning_rate, criteria)
    was_running = state.stop_reason == RUNNING
    kept = jax.tree_util.tree_map(
        lambda new, old: jnp.where(
            was_running.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
        advanced.replace(opt_state=None), state.replace(opt_state=None))
    state = kept.replace(opt_state=advanced.opt_state)
    return taken + 1, state, values.at[:, taken].set(state.value)

  members = state.step.shape[0]
  taken, state, values = lax.while_loop(
      running, body, (jnp.zeros((), jnp.int32), state,
                      jnp.zeros((members, chunk_size), state.value.dtype)))
  # A member's values after its stop repeat its final loss.
  steps_in_chunk = jnp.arange(chunk_size)[None, :] < taken
  values = jnp.where(steps_in_chunk, values, state.value[:, None])
  return state, values, state.terms
