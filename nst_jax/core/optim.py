"""Compiled optimisation of the pixel array with optax.

Optimisers (`OPTIMIZERS`):
  * ``lbfgs``: L-BFGS with a strong Wolfe line search, as torch.optim.LBFGS
    runs it with `line_search_fn='strong_wolfe'`: the direction of
    `scale_by_lbfgs_fixed_step`, then `strong_wolfe_line_search` from its
    step as the first trial (on the first step, with `Optimizer.first_step`
    > 0, a trial that moves the most-changed pixel value by that much).
    Each step spends as many function+gradient evaluations as the search
    needs (usually 1 once it has settled).
  * ``lbfgs_nols``: L-BFGS with a fixed step `learning_rate` and no line
    search, exactly as torch.optim.LBFGS runs it for jcjohnson/neural-style
    (`scale_by_lbfgs_fixed_step`): one evaluation per step, the first step
    scaled by min(1, 1/|g|_1), a curvature pair kept only when s.y > 1e-10.
  * ``adam``: optax.adam(learning_rate).
  * ``sgd``: SGD with momentum 0.9 (the seed post's starting point).

The loop runs compiled: `run_chunk` does up to `chunk_size` steps in one
`lax.while_loop` and hands back the loss of every step, so Python only sees
the state every few steps (for logging, saving and Ctrl-C). The state
carries the value and gradient at the current pixels, so no step evaluates
twice, and a stop flag: once a member stops (iteration budget, non-finite
loss, stop_loss reached, no progress over a window) its steps become no-ops.
A single run's loop ends there; under `vmap` (sweeps) the loop runs until
every member has stopped, and a stopped member's steps are computed and
discarded, so every member keeps exactly its stand-alone trajectory.

Weights, targets, loss weights, learning rate and stop criteria are all
arguments, never constants: changing them does not recompile.

The functions here are pure and unjitted: `nst_jax.engine.programs` compiles them
(placed on devices, batched over sweep members) in one place.

Example::

  init = jax.jit(optim.init_state, static_argnames=('spec', 'optimizer'))
  chunk = jax.jit(optim.run_chunk,
                  static_argnames=('spec', 'optimizer', 'chunk_size'))
  state = init(pixels, problem, spec, 'lbfgs', lr)
  state, values, terms = chunk(state, problem, spec, 'lbfgs', lr, criteria,
                               chunk_size=20)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from nst_jax.core import losses
from nst_jax.errors import UserError

OPTIMIZERS = ('lbfgs', 'lbfgs_nols', 'adam', 'sgd')
# Curvature pairs L-BFGS keeps: torch.optim.LBFGS's and neural-style's 100
# (optax's default is 10; 100 reaches a given loss in fewer evaluations).
LBFGS_MEMORY = 100
# Levels of the pyramid preconditioner a config uses unless it says
# (`pyramid_preconditioner`; 1 would be torch's algorithm): chosen on the
# time-to-quality panel of `scripts/benchmark.py` (docs/performance.md).
LBFGS_PYRAMID = 2
# `lbfgs`'s first line-search trial on a run's first step, in pixel values
# (0-255) of the most-changed pixel (`Optimizer.first_step`; 0 would be
# torch's trial). On the tuned time-to-quality problems the first step's
# search accepted steps of 0.4-16 values after about 6 evaluations from
# torch's tiny trial; from 8 it takes 1 on most.
LBFGS_FIRST_STEP = 8.0
# `learning_rate=0` in a config means these. L-BFGS's step is scaled by its
# curvature estimate, so 1 is its natural step (torch's default). Adam moves
# each pixel value (0-255) by about `learning_rate` per step: 10, as
# jcjohnson/neural-style's Adam. SGD's step is `learning_rate` times the
# gradient, whose scale the losses set: 1e3 suits the invariant losses
# (`scripts/learning_rates.py` compares steps; ten times more diverged
# there), while the paper's un-normalised losses need a far smaller one.
DEFAULT_LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 10.0,
                          'sgd': 1e3}
TOLERANCE_WINDOW = 20  # steps over which `tolerance` measures progress

# Why a run stopped; index into STOP_REASONS.
# 'no_progress': L-BFGS's line search found no lower loss (its trial steps
# fell below the loss's resolution, e.g. in bfloat16, or the gradient
# vanished); it would spend its evaluations on the same point.
STOP_REASONS = ('running', 'iterations', 'non_finite', 'stop_loss',
                'tolerance', 'no_progress')
RUNNING, ITERATIONS, NON_FINITE, STOP_LOSS, TOLERANCE, NO_PROGRESS = range(6)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimiser's static settings (hashable: a static jit argument).

  Functions taking `optimizer` accept this or just a name from `OPTIMIZERS`.
  `pyramid_levels`: L-BFGS's preconditioner (`pyramid_preconditioner`);
  1 = none, torch's algorithm. `first_step`: for `lbfgs`, the line search's
  first trial on a run's first step moves the most-changed pixel value by
  this much (0-255 scale); 0 = torch's trial, `learning_rate` x min(1,
  1/|g|_1) times the direction. `luminance_weight`: c in the
  preconditioner's colour factor (`pyramid_preconditioner`); 0 = none.
  """
  name: str
  lbfgs_memory: int = LBFGS_MEMORY
  pyramid_levels: int = 1
  pyramid_weight: float = 1.0
  first_step: float = 0.0
  luminance_weight: float = 0.0


def as_optimizer(optimizer) -> Optimizer:
  return optimizer if isinstance(optimizer, Optimizer) else Optimizer(
      optimizer)


class LbfgsState(NamedTuple):
  """`scale_by_lbfgs_fixed_step`'s state; the newest pair is at
  `(next_index - 1) % memory`."""
  count: jax.Array            # steps taken
  previous_params: jax.Array
  previous_grad: jax.Array
  s_history: jax.Array        # (memory, params.size) parameter changes
  y_history: jax.Array        # (memory, params.size) gradient changes
  rho_history: jax.Array      # (memory,) 1 / (y . s)
  sy_products: jax.Array      # (memory, memory): [i, j] = s_i . y_j
  yy_products: jax.Array      # (memory, memory): [i, j] = y_i . y_j
  stored: jax.Array           # pairs held, <= memory
  next_index: jax.Array
  initial_scale: jax.Array    # gamma = s.y / y.y of the newest pair


def _dot(a, b):
  # Full float32 on every platform (TPUs and GPUs would round to bf16/TF32).
  return jnp.dot(a, b, precision=lax.Precision.HIGHEST)


def _vdot(a, b):
  return _dot(a.ravel(), b.ravel())


def pyramid_preconditioner(levels: int, weight: float = 1.0,
                           luminance: float = 0.0):
  """A smoothing preconditioner for images: M = sum_l w^(2l) U_l U_l^T.

  U_0 = I and U_l upsamples (bilinear) an image of 2^-l the size (rounded
  up) to full size; U_l^T is its exact transpose. M is symmetric positive
  definite. L-BFGS with initial inverse Hessian gamma M is L-BFGS on
  coefficients z of a Laplacian-like pyramid, x = sum_l w^l U_l z_l: a
  step moves large areas together as cheaply as single pixels, where plain
  L-BFGS's first steps are dominated by the pixel-scale part of VGG's
  gradient. It acts on the last three axes (height, width, channels) of
  any array.

  With `luminance` c, M is multiplied by I + c 1 1^T / C over the C
  channels of each pixel, which scales steps along the grey direction
  (all channels together) by 1 + c and leaves colour differences alone;
  the two factors commute, so M stays symmetric positive definite for
  c > -1. c = 0 is what the configs use (docs/performance.md, "What was
  tried": no c saved evaluations).

  Args:
    levels: 1 (M = I) or more.
    weight: w, each coarser level's weight relative to the finer.
    luminance: c > -1.
  Returns:
    A linear function x -> M x.

  Example::

    precondition = pyramid_preconditioner(2)
    smoothed = precondition(jnp.ones((64, 64, 3)))
  """
  if luminance <= -1:
    raise ValueError(f'luminance weight must exceed -1, not {luminance}')

  def apply(x):
    out = x
    height, width = x.shape[-3:-1]
    for level in range(1, levels):
      small_shape = x.shape[:-3] + (-(-height // 2**level),
                                    -(-width // 2**level), x.shape[-1])
      def up(z):
        return jax.image.resize(z, x.shape, 'linear', antialias=False)
      (down,) = jax.linear_transpose(
          up, jax.ShapeDtypeStruct(small_shape, x.dtype))(x)
      out = out + weight ** (2 * level) * up(down)
    if luminance:
      out = out + luminance * jnp.mean(out, axis=-1, keepdims=True)
    return out
  return apply


def scale_by_lbfgs_fixed_step(learning_rate, memory_size: int = LBFGS_MEMORY,
                              precondition=None
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

  H g is torch's two-loop recursion rewritten on inner products. With the
  pairs numbered newest first, the recursion's alpha_i = rho_i s_i.q_i and
  beta_i = rho_i y_i.r_i need only

    s_i.q_i = s_i.g - sum_{j newer than i} alpha_j s_i.y_j
    y_i.r_i = gamma (y_i.g - sum_j alpha_j y_i.y_j)
              + sum_{j older than i} (alpha_j - beta_j) y_i.s_j

  and H g = gamma (g - sum_i alpha_i y_i) + sum_i (alpha_i - beta_i) s_i.

  With a preconditioner M (symmetric positive definite), H0 = gamma M with
  gamma = s.y / y.M y: y_i.g and y_i.y_j above become y_i.M g and
  y_i.M y_j, and H g = gamma M (g - sum_i alpha_i y_i) + sum_i (alpha_i -
  beta_i) s_i. M = I is torch's algorithm.

  The state keeps the products s_i.y_j and y_i.(M) y_j (a new pair adds a row
  and a column), so a step reads the history twice, in matrix products (its
  products with g and the new pair, then H g), instead of walking it pair
  by pair in 4 x memory small dependent operations; the recursion itself
  runs on memory-sized vectors. The pairs are stored flat, one per row of
  the (memory, params.size) histories.

  Args:
    learning_rate: t, a scalar (may be a traced array).
    memory_size: pairs kept (torch's `history_size`).
    precondition: M as a linear function of an array shaped as the params
      (`pyramid_preconditioner`), or None for M = I.
  Returns:
    A GradientTransformation whose updates are -t H g.

  Example::

    opt = scale_by_lbfgs_fixed_step(1.0)
    state = opt.init(x)
    updates, state = opt.update(grad_at_x, state, x)
    x = optax.apply_updates(x, updates)
  """

  def init(params):
    zeros = jnp.zeros_like(params)
    # Flat pairs, one per row: the products below read the histories as
    # matrices, and with image-shaped histories XLA copied them (three
    # times) each step to reshape the updated ones.
    history = jnp.zeros((memory_size, params.size), params.dtype)
    products = jnp.zeros((memory_size, memory_size), jnp.float32)
    return LbfgsState(
        count=jnp.zeros((), jnp.int32), previous_params=zeros,
        previous_grad=zeros, s_history=history, y_history=history,
        rho_history=jnp.zeros((memory_size,), jnp.float32),
        sy_products=products, yy_products=products,
        stored=jnp.zeros((), jnp.int32), next_index=jnp.zeros((), jnp.int32),
        initial_scale=jnp.ones((), jnp.float32))

  apply_m = precondition or (lambda x: x)

  def update(grad, state, params):
    # Keep the newest pair when its curvature is positive.
    s = params - state.previous_params
    y = grad - state.previous_grad
    ys = _vdot(y, s)
    keep = (state.count > 0) & (ys > 1e-10)
    index = state.next_index
    m_grad, m_y = apply_m(grad).ravel(), apply_m(y).ravel()
    s, y, flat_grad = s.ravel(), y.ravel(), grad.ravel()
    # Writes one slot (itself again when the pair is not kept), not a
    # select over the whole history.
    s_history = state.s_history.at[index].set(
        jnp.where(keep, s, state.s_history[index]))
    y_history = state.y_history.at[index].set(
        jnp.where(keep, y, state.y_history[index]))
    # One pass over each history: its products with g (for the direction)
    # and with the new pair (the new row and column of the products).
    s_products = _dot(s_history, jnp.stack([flat_grad, y], 1))
    y_products = _dot(y_history, jnp.stack([m_grad, s, m_y], 1))
    new_sy = state.sy_products.at[:, index].set(s_products[:, 1]).at[
        index, :].set(y_products[:, 1])
    new_yy = state.yy_products.at[:, index].set(y_products[:, 2]).at[
        index, :].set(y_products[:, 2])
    state = state._replace(
        s_history=s_history, y_history=y_history,
        rho_history=state.rho_history.at[index].set(
            jnp.where(keep, 1.0 / jnp.where(keep, ys, 1.0),
                      state.rho_history[index])),
        sy_products=jnp.where(keep, new_sy, state.sy_products),
        yy_products=jnp.where(keep, new_yy, state.yy_products),
        stored=jnp.where(keep, jnp.minimum(state.stored + 1, memory_size),
                         state.stored),
        next_index=jnp.where(keep, (index + 1) % memory_size, index),
        initial_scale=jnp.where(
            keep, ys / jnp.where(keep, y_products[index, 2], 1.0),
            state.initial_scale))

    # The recursion on scalars, in age order (position 0 = newest pair).
    # Both loops run over every position, a fixed trip count (a loop bound
    # known only at run time compiles to a while loop whose condition
    # XLA:GPU copies to the host every iteration); positions past `stored`
    # keep alpha = beta = 0 and their pairs weigh 0 in the direction.
    positions = jnp.arange(memory_size)
    held = positions < state.stored
    slots = (state.next_index - 1 - positions) % memory_size
    rho = state.rho_history[slots]
    s_grad = s_products[slots, 0]
    y_grad = y_products[slots, 0]
    sy = state.sy_products[slots][:, slots]  # [i, j] = s_i . y_j, by age
    yy = state.yy_products[slots][:, slots]
    gamma = state.initial_scale

    def backward(i, alphas):  # newest first
      newer = jnp.where(positions < i, alphas, 0.0)
      return alphas.at[i].set(jnp.where(
          held[i], rho[i] * (s_grad[i] - _dot(sy[i], newer)), 0.0))

    alphas = lax.fori_loop(0, memory_size, backward,
                           jnp.zeros((memory_size,), jnp.float32))
    y_q = y_grad - _dot(yy, alphas)  # y_i . q, q = g - sum alpha_j y_j

    def forward(k, betas):  # oldest first
      i = memory_size - 1 - k
      older = jnp.where(positions > i, alphas - betas, 0.0)
      return betas.at[i].set(jnp.where(
          held[i], rho[i] * (gamma * y_q[i] + _dot(sy[:, i], older)), 0.0))

    betas = lax.fori_loop(0, memory_size, forward,
                          jnp.zeros((memory_size,), jnp.float32))
    # Back from age order to slots.
    s_weights = jnp.zeros((memory_size,), jnp.float32).at[slots].set(
        alphas - betas)
    y_weights = jnp.zeros((memory_size,), jnp.float32).at[slots].set(
        -gamma * alphas)
    direction = (apply_m(gamma * grad + _dot(y_weights, y_history).reshape(
        grad.shape)) + _dot(s_weights, s_history).reshape(grad.shape))
    step = jnp.where(state.count == 0,
                     learning_rate * jnp.minimum(
                         1.0, 1.0 / jnp.sum(jnp.abs(grad))),
                     learning_rate)
    updates = -step * direction
    return updates, state._replace(count=state.count + 1,
                                   previous_params=params,
                                   previous_grad=grad)

  return optax.GradientTransformation(init, update)


# Strong Wolfe line search (torch.optim.LBFGS's `line_search_fn='strong_wolfe'`).

MAX_LINE_SEARCH_EVALUATIONS = 25  # torch's max_ls
_BRACKETING, _ZOOMING, _DONE = range(3)


class _Point(NamedTuple):
  """A trial step size and what the objective gave there."""
  t: jax.Array
  value: jax.Array
  slope: jax.Array  # directional derivative g(x + t d) . d
  grad: jax.Array
  aux: Any


class _Search(NamedTuple):
  phase: jax.Array        # _BRACKETING, _ZOOMING or _DONE
  evaluations: jax.Array
  t: jax.Array            # the next trial
  previous: _Point        # bracketing: the last trial
  bracket: _Point         # leading axis 2: the interval's ends
  low: jax.Array          # which end has the lower value
  insufficient: jax.Array  # zoom: the last trial was too near an end


def _cubic_minimum(t1, f1, g1, t2, f2, g2, lower, upper):
  """Minimiser of the cubic through (t1, f1, g1) and (t2, f2, g2), clipped
  to [lower, upper]; the interval's middle when the cubic has none."""
  d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
  d2_square = d1 ** 2 - g1 * g2
  d2 = jnp.sqrt(jnp.maximum(d2_square, 0.0))
  minimum = jnp.where(
      t1 <= t2, t2 - (t2 - t1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
      t1 - (t1 - t2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)))
  usable = (d2_square >= 0) & jnp.isfinite(minimum)
  return jnp.where(usable, jnp.minimum(jnp.maximum(minimum, lower), upper),
                   (lower + upper) / 2)


def _take(points: _Point, index) -> _Point:
  return jax.tree_util.tree_map(lambda x: x[index], points)


def _pair(first: _Point, second: _Point) -> _Point:
  return jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), first, second)


def _where(condition, new, old):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), new,
                                old)


def strong_wolfe_line_search(value_and_grad_fn, params, direction, value,
                             grad, aux, initial_step=1.0,
                             max_evaluations=MAX_LINE_SEARCH_EVALUATIONS,
                             c1=1e-4, c2=0.9, tolerance_change=1e-9):
  """A step size t along `direction` satisfying the strong Wolfe conditions

    f(x + t d) <= f(x) + c1 t g.d   and   |g(x + t d).d| <= c2 |g.d|,

  by torch.optim.LBFGS's `_strong_wolfe` (More-Thuente style): extrapolate
  by cubic interpolation until a step brackets a minimum, then zoom into the
  bracket by cubic interpolation, keeping away from its ends. Same trials,
  decisions and result as torch's (up to float rounding), except that a
  trial whose value is not finite counts as too high (torch would accept
  it), so the search backs off from it.

  Written as one `lax.while_loop` whose body evaluates the objective once,
  the phases chosen with `jnp.where`: the compiled program holds a single
  copy of the evaluation (a `lax.cond` between phases would hold one per
  branch), and under `vmap` each iteration costs one batched evaluation.

  Args:
    value_and_grad_fn: params -> ((value, aux), grad).
    params: x.
    direction: d, a descent direction (g.d < 0).
    value, grad, aux: f, g and aux at x.
    initial_step: the first trial t.
    max_evaluations: torch's max_ls.
    c1, c2: the Wolfe constants.
    tolerance_change: stop zooming once the bracket is this narrow (times
      max |d|).
  Returns:
    (t, value, grad, aux, evaluations): the accepted step (0 if none was
    better), f, g and aux at x + t d, and the objective calls made.

  Example::

    value_and_grad_fn = jax.value_and_grad(lambda x: (f(x), ()), has_aux=True)
    (value, aux), grad = value_and_grad_fn(x)
    t, value, grad, aux, spent = strong_wolfe_line_search(
        value_and_grad_fn, x, -grad, value, grad, aux)
    x = x - t * grad
  """
  slope = _vdot(grad, direction)
  direction_norm = jnp.max(jnp.abs(direction))
  start = _Point(jnp.zeros((), jnp.float32), value, slope, grad, aux)
  search = _Search(
      phase=jnp.asarray(_BRACKETING, jnp.int32),
      evaluations=jnp.zeros((), jnp.int32),
      t=jnp.asarray(initial_step, jnp.float32), previous=start,
      bracket=_pair(start, start), low=jnp.zeros((), jnp.int32),
      insufficient=jnp.zeros((), bool))

  def sufficient_decrease_fails(point):
    # A non-finite trial counts as too high: the search backs off from it.
    return ~jnp.isfinite(point.value) | (
        point.value > value + c1 * point.t * slope)

  def body(search):
    (new_value, new_aux), new_grad = value_and_grad_fn(
        params + search.t * direction)
    new = _Point(search.t, new_value, _vdot(new_grad, direction),
                 new_grad, new_aux)
    iteration = search.evaluations  # torch's ls_iter after this evaluation
    bracket, low = search.bracket, search.low

    # Bracketing: look for an interval holding a minimum.
    previous = search.previous
    rises = sufficient_decrease_fails(new) | (
        (iteration > 1) & (new.value >= previous.value))
    wolfe = ~rises & (jnp.abs(new.slope) <= -c2 * slope)
    turned = ~rises & ~wolfe & (new.slope >= 0)
    exhausted = iteration >= max_evaluations  # torch: bracket [0, t]
    bracketed = ~exhausted & (rises | turned)
    extrapolate = ~exhausted & ~rises & ~wolfe & ~turned
    b_bracket = _where(
        exhausted, _pair(start, new),
        _where(bracketed, _pair(previous, new), _pair(new, new)))
    b_low = jnp.where(b_bracket.value[0] <= b_bracket.value[1], 0, 1)
    b_phase = jnp.where(extrapolate, _BRACKETING,
                        jnp.where(wolfe & ~exhausted, _DONE, _ZOOMING))
    b_next_t = _cubic_minimum(
        previous.t, previous.value, previous.slope, new.t, new.value,
        new.slope, new.t + 0.01 * (new.t - previous.t), new.t * 10)

    # Zooming: shrink the bracket around the trial.
    high = 1 - low
    z_rises = sufficient_decrease_fails(new) | (
        new.value >= bracket.value[low])
    z_wolfe = ~z_rises & (jnp.abs(new.slope) <= -c2 * slope)
    flip = ~z_rises & ~z_wolfe & (
        new.slope * (bracket.t[high] - bracket.t[low]) >= 0)
    ends = [_take(bracket, 0), _take(bracket, 1)]
    low_end = _take(bracket, low)
    for index in range(2):
      is_low, is_high = low == index, high == index
      ends[index] = _where(
          (z_rises & is_high) | (~z_rises & is_low), new,
          _where(flip & is_high, low_end, ends[index]))
    z_bracket = _pair(*ends)
    z_low = jnp.where(z_rises, jnp.where(
        z_bracket.value[0] <= z_bracket.value[1], 0, 1), low)
    z_phase = jnp.where(z_wolfe, _DONE, _ZOOMING)

    zooming = search.phase == _ZOOMING
    bracket = _where(zooming, z_bracket, b_bracket)
    low = jnp.where(zooming, z_low, b_low)
    phase = jnp.where(zooming, z_phase, b_phase)
    insufficient = search.insufficient & zooming

    # The next zoom trial: the cubic's minimum inside the bracket, moved
    # off its ends when the last trials crept towards one.
    narrow = (jnp.abs(bracket.t[1] - bracket.t[0]) * direction_norm
              < tolerance_change)
    lower = jnp.minimum(bracket.t[0], bracket.t[1])
    upper = jnp.maximum(bracket.t[0], bracket.t[1])
    z_next_t = _cubic_minimum(bracket.t[0], bracket.value[0],
                              bracket.slope[0], bracket.t[1],
                              bracket.value[1], bracket.slope[1], lower,
                              upper)
    margin = 0.1 * (upper - lower)
    near_end = jnp.minimum(upper - z_next_t, z_next_t - lower) < margin
    moved = near_end & (insufficient | (z_next_t >= upper)
                        | (z_next_t <= lower))
    z_next_t = jnp.where(
        moved, jnp.where(jnp.abs(z_next_t - upper) < jnp.abs(z_next_t - lower),
                         upper - margin, lower + margin), z_next_t)
    insufficient = near_end & ~moved
    phase = jnp.where(
        (phase == _ZOOMING) & (narrow | (iteration >= max_evaluations)),
        _DONE, phase)
    return _Search(
        phase=phase, evaluations=search.evaluations + 1,
        t=jnp.where(phase == _BRACKETING, b_next_t, z_next_t),
        previous=_where(phase == _BRACKETING, new, previous),
        bracket=bracket, low=low, insufficient=insufficient)

  search = lax.while_loop(lambda s: s.phase != _DONE, body, search)
  accepted = _take(search.bracket, search.low)
  return (accepted.t, accepted.value, accepted.grad, accepted.aux,
          search.evaluations)


def make_optimizer(optimizer, learning_rate) -> optax.GradientTransformation:
  """The optax transformation for an optimiser (see module docstring).

  Args:
    optimizer: a name from `OPTIMIZERS` or an `Optimizer`.
    learning_rate: step size (for `lbfgs` the line search's first trial);
      may be a traced array so it can be swept without recompiling.
  """
  optimizer = as_optimizer(optimizer)
  name = optimizer.name
  if name in ('lbfgs', 'lbfgs_nols'):
    # For lbfgs this is the first trial of the line search (`_step`).
    return scale_by_lbfgs_fixed_step(
        learning_rate, optimizer.lbfgs_memory, pyramid_preconditioner(
            optimizer.pyramid_levels, optimizer.pyramid_weight,
            optimizer.luminance_weight))
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
  # NumPy scalars: jnp.asarray would compile a small program per dtype,
  # tenths of a second at start-up.
  return StopCriteria(
      iterations=np.asarray(iterations, np.int32),
      stop_loss=np.asarray(-np.inf if stop_loss is None else stop_loss,
                           np.float32),
      tolerance=np.asarray(tolerance, np.float32))


@flax.struct.dataclass
class LoopState:
  """The optimisation state of one run (a leading axis in sweeps).

  `value` and `grad` are the loss and gradient at `pixels`, `terms` its
  `losses.loss_terms` (the evaluation returns them alongside, so logging
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
  return lambda pixels: losses.total_loss(
      pixels, problem.variables, problem.targets, problem.loss_weights, spec)


def _value_terms_and_grad(pixels, problem: Problem, spec: losses.LossSpec):
  """((total loss, loss terms), gradient) at `pixels`: one evaluation."""
  def objective(p):
    terms = losses.loss_terms(p, problem.variables, problem.targets,
                              problem.loss_weights, spec)
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
  if spec.sliced_redraw:  # This step's evaluation draws its own directions.
    problem = problem.replace(targets=problem.targets.replace(
        redraw=dict(problem.targets.redraw, step=state.step + 1)))
  opt = make_optimizer(optimizer, learning_rate)
  updates, opt_state = opt.update(state.grad, state.opt_state, state.pixels)
  if as_optimizer(optimizer).name == 'lbfgs':
    # The line search returns the value, gradient and terms at the point
    # it accepts: nothing is evaluated twice.
    descent = _vdot(state.grad, updates) < 0
    direction = jnp.where(descent, updates, -state.grad * (
        jnp.linalg.norm(updates) / jnp.maximum(jnp.linalg.norm(state.grad),
                                               1e-30)))
    first_step = as_optimizer(optimizer).first_step
    trial = 1.0
    if first_step > 0:
      # torch's first trial, 1/|g|_1 of the gradient, moves a pixel value by
      # a tiny fraction, and the search then extrapolates at most tenfold
      # per evaluation (about 6 evaluations for the first step); a trial of
      # a few values' change is accepted at once on most images.
      trial = jnp.where(state.step == 0, first_step / jnp.maximum(
          jnp.max(jnp.abs(direction)), 1e-30), 1.0)
    step_size, value, grad, terms, spent = strong_wolfe_line_search(
        lambda p: _value_terms_and_grad(p, problem, spec), state.pixels,
        direction, state.value, state.grad, state.terms, initial_step=trial)
    pixels = state.pixels + step_size * direction
  else:
    pixels = optax.apply_updates(state.pixels, updates)
    (value, terms), grad = _value_terms_and_grad(pixels, problem, spec)
    spent = 1

  step = state.step + 1
  finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(pixels))
  value_window_ago = state.recent_values[step % TOLERANCE_WINDOW]
  improvement = (value_window_ago - value) / jnp.abs(value_window_ago)
  # A strong Wolfe step always lowers the loss: one that does not is a
  # line search that failed.
  stalled = (as_optimizer(optimizer).name == 'lbfgs') & (value >= state.value)
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
  """Stop before any step when the budget is 0 or the start already qualifies."""
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
    optimizer: name from `OPTIMIZERS` or an `Optimizer` (static).
    learning_rate: scalar array.
    criteria: `StopCriteria`.
    chunk_size: most steps per call (static); the loop ends early once the
      run stops.
  Returns:
    (state, values, terms): the new state, the loss after each of the
    chunk's steps (repeating once stopped), and `losses.loss_terms` at the
    final pixels (`state.terms`, carried with each evaluation).
  """
  state = _stopped_at_start(state, criteria)

  # A while loop, not a scan over a `lax.cond(running, step, identity)`:
  # XLA copied L-BFGS's history into the cond's branch before updating it
  # in place (2 x 100 images each step; under vmap the cond became a select
  # over every member's history), and a while loop ends when the run stops.
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
  """The total loss and its gradient with respect to the pixels."""
  return jax.value_and_grad(_objective(problem, spec))(pixels)


loss_and_grad_jit = jax.jit(loss_and_grad, static_argnames=('spec',))


# ---------------------------------------------------------------------------
# Sweeps: several members (a leading axis on state, targets, loss weights,
# learning rate and criteria) in one compiled program.

SWEEP_MODES = ('vmap', 'map')


def default_sweep_mode(optimizer: str, platform: str) -> str:
  """How a device runs its members: 'vmap' (batched) on every platform.

  'vmap' batches the members' convolutions: on GPUs and TPUs to fill the
  chip, and on a CPU too, where a batched evaluation uses the cores better
  than several small ones (`scripts/benchmark.py --sweep`: 4 members at
  64 px cost about two thirds of 4 runs batched, about as much as 4 runs
  one after another).
  Results match the stand-alone runs up to floating-point reassociation;
  'map' (one after another) gives each member its stand-alone program
  exactly. That holds for `lbfgs` too: its line search is one while_loop
  evaluating once per iteration, so under vmap a step costs the most
  evaluations any member's search needs (no cond evaluating both
  branches). One member per device always runs unbatched.
  """
  del optimizer, platform  # every optimiser and platform batches alike
  return 'vmap'


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
  """`init_state` for every member; `problem.variables` is shared."""
  fn = lambda p, t, w, lr: init_state(
      p, Problem(problem.variables, t, w), spec, optimizer, lr)
  return _batched(fn, mode)(pixels, problem.targets, problem.loss_weights,
                            learning_rate)


def run_chunk_batched(state, problem: Problem, spec, optimizer, learning_rate,
                      criteria, chunk_size, mode='vmap'):
  """`run_chunk` for every member (see `default_sweep_mode`)."""
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
