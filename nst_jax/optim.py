"""Compiled optimisation of the pixel array with optax.

Optimisers (`OPTIMIZERS`):
  * ``lbfgs``: optax L-BFGS with its zoom line search (strong Wolfe); each
    step spends as many function+gradient evaluations as the line search
    needs (usually 1-2 once it has settled).
  * ``lbfgs_nols``: L-BFGS with a fixed step `learning_rate` and no line
    search, exactly as torch.optim.LBFGS runs it for jcjohnson/neural-style
    (`scale_by_lbfgs_fixed_step`): one evaluation per step, the first step
    scaled by min(1, 1/|g|_1), a curvature pair kept only when s.y > 1e-10.
  * ``adam``: optax.adam(learning_rate).
  * ``sgd``: SGD with momentum 0.9 (the seed post's starting point).

The loop runs compiled: `run_chunk` does `chunk_size` steps in one
`lax.scan` and hands back the loss of every step, so Python only sees the
state every few steps (for logging, saving and Ctrl-C). The state carries the
value and gradient at the current pixels, so no step evaluates twice, and a
stop flag: once a member stops (iteration budget, non-finite loss, stop_loss
reached, no progress over a window) its steps become no-ops. A single run
skips them with `lax.cond`; under `vmap` (sweeps) they are computed and
discarded, so every member keeps exactly its stand-alone trajectory.

Weights, targets, loss weights, learning rate and stop criteria are all
arguments, never constants: changing them does not recompile.

Example::

  state = optim.init_state(pixels, problem, 'lbfgs', lr)
  state, values, terms = optim.run_chunk(state, problem, 'lbfgs', lr,
                                         criteria, chunk_size=20)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import optax

from nst_jax import losses
from nst_jax.errors import UserError

OPTIMIZERS = ('lbfgs', 'lbfgs_nols', 'adam', 'sgd')
# Curvature pairs L-BFGS keeps: torch.optim.LBFGS's and neural-style's 100
# (optax's default is 10; 100 reaches a given loss in fewer evaluations).
LBFGS_MEMORY = 100
TOLERANCE_WINDOW = 20  # steps over which `tolerance` measures progress

# Why a run stopped; index into STOP_REASONS.
STOP_REASONS = ('running', 'iterations', 'non_finite', 'stop_loss',
                'tolerance')
RUNNING, ITERATIONS, NON_FINITE, STOP_LOSS, TOLERANCE = range(5)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimiser's static settings (hashable: a static jit argument).

  Functions taking `optimizer` accept this or just a name from `OPTIMIZERS`.
  """
  name: str
  lbfgs_memory: int = LBFGS_MEMORY


def as_optimizer(optimizer) -> Optimizer:
  return optimizer if isinstance(optimizer, Optimizer) else Optimizer(
      optimizer)


class LbfgsState(NamedTuple):
  """`scale_by_lbfgs_fixed_step`'s state; the newest pair is at
  `(next_index - 1) % memory`."""
  count: jax.Array            # steps taken
  previous_params: jax.Array
  previous_grad: jax.Array
  s_history: jax.Array        # (memory, *params.shape) parameter changes
  y_history: jax.Array        # (memory, *params.shape) gradient changes
  rho_history: jax.Array      # (memory,) 1 / (y . s)
  stored: jax.Array           # pairs held, <= memory
  next_index: jax.Array
  initial_scale: jax.Array    # gamma = s.y / y.y of the newest pair


def scale_by_lbfgs_fixed_step(learning_rate, memory_size: int = LBFGS_MEMORY
                              ) -> optax.GradientTransformation:
  """torch.optim.LBFGS's step without line search, as an optax transformation.

  With g the gradient at x and H the L-BFGS inverse Hessian (two-loop
  recursion over the kept pairs, H0 = gamma I with gamma = s.y / y.y of the
  newest pair):

    x_{k+1} = x_k - t_k H g_k,  t_0 = learning_rate * min(1, 1 / |g_0|_1),
                                t_k = learning_rate (k > 0).

  The pair (s, y) = (x_k - x_{k-1}, g_k - g_{k-1}) is kept only when
  y.s > 1e-10 (torch's test), so a step into negative curvature does not
  corrupt H. Params must be one array (the pixels).

  Args:
    learning_rate: t, a scalar (may be a traced array).
    memory_size: pairs kept (torch's `history_size`).
  Returns:
    A GradientTransformation whose updates are -t H g.
  """

  def init(params):
    zeros = jnp.zeros_like(params)
    history = jnp.zeros((memory_size,) + params.shape, params.dtype)
    return LbfgsState(
        count=jnp.zeros((), jnp.int32), previous_params=zeros,
        previous_grad=zeros, s_history=history, y_history=history,
        rho_history=jnp.zeros((memory_size,), jnp.float32),
        stored=jnp.zeros((), jnp.int32), next_index=jnp.zeros((), jnp.int32),
        initial_scale=jnp.ones((), jnp.float32))

  def update(grad, state, params):
    # Keep the newest pair when its curvature is positive.
    s = params - state.previous_params
    y = grad - state.previous_grad
    ys = jnp.vdot(y, s)
    keep = (state.count > 0) & (ys > 1e-10)
    index = state.next_index
    # Writes one slot (itself again when the pair is not kept), not a
    # select over the whole history.
    state = state._replace(
        s_history=state.s_history.at[index].set(
            jnp.where(keep, s, state.s_history[index])),
        y_history=state.y_history.at[index].set(
            jnp.where(keep, y, state.y_history[index])),
        rho_history=state.rho_history.at[index].set(
            jnp.where(keep, 1.0 / jnp.where(keep, ys, 1.0),
                      state.rho_history[index])),
        stored=jnp.where(keep, jnp.minimum(state.stored + 1, memory_size),
                         state.stored),
        next_index=jnp.where(keep, (index + 1) % memory_size, index),
        initial_scale=jnp.where(
            keep, ys / jnp.where(keep, jnp.vdot(y, y), 1.0),
            state.initial_scale))

    # Two-loop recursion, newest pair first, then oldest first; only the
    # pairs held are visited.
    def newest(i):
      return (state.next_index - 1 - i) % memory_size

    def backward(i, carry):
      q, alphas = carry
      j = newest(i)
      alpha = state.rho_history[j] * jnp.vdot(state.s_history[j], q)
      return q - alpha * state.y_history[j], alphas.at[j].set(alpha)

    q, alphas = lax.fori_loop(0, state.stored, backward,
                              (grad, jnp.zeros((memory_size,), jnp.float32)))
    r = state.initial_scale * q

    def forward(i, r):
      j = newest(state.stored - 1 - i)
      beta = state.rho_history[j] * jnp.vdot(state.y_history[j], r)
      return r + (alphas[j] - beta) * state.s_history[j]

    direction = lax.fori_loop(0, state.stored, forward, r)
    step = jnp.where(state.count == 0,
                     learning_rate * jnp.minimum(
                         1.0, 1.0 / jnp.sum(jnp.abs(grad))),
                     learning_rate)
    updates = -step * direction
    return updates, state._replace(count=state.count + 1,
                                   previous_params=params,
                                   previous_grad=grad)

  return optax.GradientTransformation(init, update)


def make_optimizer(optimizer, learning_rate) -> optax.GradientTransformation:
  """The optax transformation for an optimiser (see module docstring).

  Args:
    optimizer: a name from `OPTIMIZERS` or an `Optimizer`.
    learning_rate: step size (unused by `lbfgs`, whose line search picks it);
      may be a traced array so it can be swept without recompiling.
  """
  optimizer = as_optimizer(optimizer)
  name = optimizer.name
  if name == 'lbfgs':
    return optax.lbfgs(
        memory_size=optimizer.lbfgs_memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=20, initial_guess_strategy='one'))
  if name == 'lbfgs_nols':
    return scale_by_lbfgs_fixed_step(learning_rate, optimizer.lbfgs_memory)
  if name == 'adam':
    return optax.adam(learning_rate)
  if name == 'sgd':
    return optax.sgd(learning_rate, momentum=0.9)
  raise UserError(f'optimizer: unknown {name!r}; valid are '
                  + ', '.join(OPTIMIZERS))


@flax.struct.dataclass
class Problem:
  """Everything the loss needs besides the pixels (all arrays)."""
  variables: Any
  targets: losses.Targets
  weights: losses.LossWeights


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
  return StopCriteria(
      iterations=jnp.asarray(iterations, jnp.int32),
      stop_loss=jnp.asarray(-jnp.inf if stop_loss is None else stop_loss,
                            jnp.float32),
      tolerance=jnp.asarray(tolerance, jnp.float32))


@flax.struct.dataclass
class LoopState:
  """The optimisation state of one run (a leading axis in sweeps).

  `value` and `grad` are the loss and gradient at `pixels`, `terms` its
  `losses.loss_terms` (the evaluation returns them alongside, so logging
  needs no extra forward pass; `lbfgs`, whose line search evaluates only the
  total, refreshes them at the end of each chunk).
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
  return lambda pixels: losses.total_loss(
      pixels, problem.variables, problem.targets, problem.weights, spec)


def _value_terms_and_grad(pixels, problem: Problem, spec: losses.LossSpec):
  """((total loss, loss terms), gradient) at `pixels`: one evaluation."""
  def objective(p):
    terms = losses.loss_terms(p, problem.variables, problem.targets,
                              problem.weights, spec)
    return terms['total'], terms
  return jax.value_and_grad(objective, has_aux=True)(pixels)


def init_state(pixels, problem: Problem, spec: losses.LossSpec,
               optimizer: str, learning_rate) -> LoopState:
  """Optimiser state plus the loss and gradient at the initial pixels."""
  (value, terms), grad = _value_terms_and_grad(pixels, problem, spec)
  opt_state = make_optimizer(optimizer, learning_rate).init(pixels)
  return LoopState(
      pixels=pixels, opt_state=opt_state, value=value, grad=grad,
      step=jnp.zeros((), jnp.int32), evaluations=jnp.ones((), jnp.int32),
      stop_reason=jnp.asarray(RUNNING, jnp.int32),
      recent_values=jnp.full((TOLERANCE_WINDOW,), jnp.inf, jnp.float32),
      terms=terms)


def _step(state: LoopState, problem, spec, optimizer, learning_rate,
          criteria: StopCriteria) -> LoopState:
  """One optimiser step from `state` (which must be running)."""
  objective = _objective(problem, spec)
  opt = make_optimizer(optimizer, learning_rate)
  if as_optimizer(optimizer).name == 'lbfgs':
    updates, opt_state = opt.update(
        state.grad, state.opt_state, state.pixels, value=state.value,
        grad=state.grad, value_fn=objective)
    pixels = optax.apply_updates(state.pixels, updates)
    # The line search evaluated the accepted point: reuse its value and grad.
    value = optax.tree.get(opt_state, 'value')
    grad = optax.tree.get(opt_state, 'grad')
    spent = optax.tree.get(opt_state, 'num_linesearch_steps')
    terms = state.terms  # refreshed at the end of the chunk
  else:
    updates, opt_state = opt.update(state.grad, state.opt_state, state.pixels)
    pixels = optax.apply_updates(state.pixels, updates)
    (value, terms), grad = _value_terms_and_grad(pixels, problem, spec)
    spent = 1

  step = state.step + 1
  finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(pixels))
  value_window_ago = state.recent_values[step % TOLERANCE_WINDOW]
  improvement = (value_window_ago - value) / jnp.abs(value_window_ago)
  reason = jnp.select(
      [~finite, value <= criteria.stop_loss,
       (criteria.tolerance > 0) & (improvement < criteria.tolerance),
       step >= criteria.iterations],
      [NON_FINITE, STOP_LOSS, TOLERANCE, ITERATIONS], RUNNING)
  advanced = LoopState(
      pixels=pixels, opt_state=opt_state, value=value, grad=grad, step=step,
      evaluations=state.evaluations + spent, stop_reason=reason,
      recent_values=state.recent_values.at[step % TOLERANCE_WINDOW].set(value),
      terms=terms)
  # A non-finite step is not taken: the last finite image is kept.
  kept = state.replace(step=step, evaluations=advanced.evaluations,
                       stop_reason=reason)
  return jax.tree_util.tree_map(
      lambda new, old: jnp.where(finite, new, old), advanced, kept)


def _stopped_at_start(state, criteria):
  """Stop before any step when the budget is 0 or the start already qualifies."""
  reason = jnp.select(
      [~jnp.isfinite(state.value), state.value <= criteria.stop_loss,
       state.step >= criteria.iterations],
      [NON_FINITE, STOP_LOSS, ITERATIONS], state.stop_reason)
  return state.replace(stop_reason=reason)


def run_chunk_unjitted(state: LoopState, problem: Problem,
                       spec: losses.LossSpec, optimizer: str, learning_rate,
                       criteria: StopCriteria, chunk_size: int):
  """Up to `chunk_size` steps; see `run_chunk`."""
  state = _stopped_at_start(state, criteria)

  def body(state, _):
    state = lax.cond(
        state.stop_reason == RUNNING,
        lambda s: _step(s, problem, spec, optimizer, learning_rate, criteria),
        lambda s: s, state)
    return state, state.value

  state, values = lax.scan(body, state, None, length=chunk_size)
  if as_optimizer(optimizer).name == 'lbfgs':
    # One forward pass: the line search kept only the total.
    state = state.replace(terms=losses.loss_terms(
        state.pixels, problem.variables, problem.targets, problem.weights,
        spec))
  return state, values, state.terms


_STATIC = ('spec', 'optimizer', 'chunk_size')


@functools.partial(jax.jit, static_argnames=_STATIC)
def run_chunk(state, problem, spec, optimizer, learning_rate, criteria,
              chunk_size):
  """Runs up to `chunk_size` compiled steps.

  Args:
    state: `LoopState` from `init_state` or a previous chunk.
    problem: `Problem` (VGG variables, targets, loss weights).
    spec: `losses.LossSpec` (static).
    optimizer: name from `OPTIMIZERS` (static).
    learning_rate: scalar array.
    criteria: `StopCriteria`.
    chunk_size: steps per call (static); steps past a stop are no-ops.
  Returns:
    (state, values, terms): the new state, the loss after each of the
    chunk's steps (repeating once stopped), and `losses.loss_terms` at the
    final pixels (`state.terms`: free for one-evaluation steps, one forward
    pass for `lbfgs`).
  """
  return run_chunk_unjitted(state, problem, spec, optimizer, learning_rate,
                            criteria, chunk_size)


init_state_jit = jax.jit(init_state, static_argnames=('spec', 'optimizer'))


def loss_and_grad(pixels, problem: Problem, spec: losses.LossSpec):
  """The total loss and its gradient with respect to the pixels."""
  return jax.value_and_grad(_objective(problem, spec))(pixels)


loss_and_grad_jit = jax.jit(loss_and_grad, static_argnames=('spec',))


def minimize(pixels, problem, spec, optimizer='lbfgs', learning_rate=1.0,
             iterations=100, chunk_size=20, stop_loss=None, tolerance=0.0):
  """Convenience: optimise `pixels` and return the final `LoopState`.

  Example::

    state = optim.minimize(noise, problem, spec, 'lbfgs', iterations=50)
    result = state.pixels
  """
  learning_rate = jnp.asarray(learning_rate, jnp.float32)
  criteria = stop_criteria(iterations, stop_loss, tolerance)
  state = init_state_jit(jnp.asarray(pixels, jnp.float32), problem, spec,
                         optimizer, learning_rate)
  while True:
    state, _, _ = run_chunk(state, problem, spec, optimizer, learning_rate,
                            criteria, chunk_size)
    if int(state.stop_reason) != RUNNING:
      return state


# ---------------------------------------------------------------------------
# Sweeps: several members (a leading axis on state, targets, loss weights,
# learning rate and criteria) in one compiled program.

SWEEP_MODES = ('vmap', 'map')


def default_sweep_mode(optimizer: str, platform: str) -> str:
  """How a device runs its members: 'map' (one after another) or 'vmap'.

  'map' runs each member's exact stand-alone program, so a member's result
  is bit-identical to its own run and K members cost K runs. It is the
  choice on CPU (batching buys nothing on 2 cores) and for the line-search
  L-BFGS everywhere: under vmap its while_loop runs until the slowest member
  is done and its conds evaluate every branch (measured 28-31x one run for
  4 members). Elsewhere (GPU/TPU, fixed-step optimisers) 'vmap' batches the
  members' convolutions to fill the chip; results then match the stand-alone
  runs up to floating-point reassociation.
  """
  if as_optimizer(optimizer).name == 'lbfgs' or platform == 'cpu':
    return 'map'
  return 'vmap'


def _batched(fn, mode):
  return jax.vmap(fn) if mode == 'vmap' else (lambda *xs: lax.map(
      lambda args: fn(*args), xs))


def init_state_batched(pixels, problem: Problem, spec, optimizer,
                       learning_rate, mode='vmap'):
  """`init_state` for every member; `problem.variables` is shared."""
  fn = lambda p, t, w, lr: init_state(
      p, Problem(problem.variables, t, w), spec, optimizer, lr)
  return _batched(fn, mode)(pixels, problem.targets, problem.weights,
                            learning_rate)


def run_chunk_batched(state, problem: Problem, spec, optimizer, learning_rate,
                      criteria, chunk_size, mode='vmap'):
  """`run_chunk` for every member (see `default_sweep_mode`)."""
  fn = lambda s, t, w, lr, c: run_chunk_unjitted(
      s, Problem(problem.variables, t, w), spec, optimizer, lr, c, chunk_size)
  return _batched(fn, mode)(state, problem.targets, problem.weights,
                            learning_rate, criteria)


init_state_batched_jit = jax.jit(
    init_state_batched, static_argnames=('spec', 'optimizer', 'mode'))
run_chunk_batched_jit = jax.jit(
    run_chunk_batched,
    static_argnames=('spec', 'optimizer', 'chunk_size', 'mode'))
