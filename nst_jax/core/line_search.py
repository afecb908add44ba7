"""A strong Wolfe line search, as torch.optim.LBFGS's `_strong_wolfe`.

`strong_wolfe_line_search` finds a step along a descent direction by
torch's trials and decisions (`line_search_fn='strong_wolfe'`), compiled as
one `lax.while_loop`; the `lbfgs` optimiser runs it along each L-BFGS
direction (`nst_jax.core.descent`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax.core import lbfgs

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
  slope = lbfgs.vdot(grad, direction)
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
    new = _Point(search.t, new_value, lbfgs.vdot(new_grad, direction),
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
