"""L-BFGS's parts as optax transformations, for one pixel array.

`scale_by_lbfgs_fixed_step` is torch.optim.LBFGS's direction and step
without line search (`LbfgsState` is its state); `pyramid_preconditioner`
is the initial inverse Hessian it may take. `nst_jax.core.line_search`
searches along its updates for `lbfgs`, and `nst_jax.core.optimizers` puts
the parts together.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import optax


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


def vdot(a, b):
  """The inner product of two arrays of one size, in full float32."""
  return _dot(a.ravel(), b.ravel())


def pyramid_preconditioner(levels: int):
  """A smoothing preconditioner for images: M = sum_l U_l U_l^T.

  U_0 = I and U_l upsamples (bilinear) an image of 2^-l the size (rounded
  up) to full size; U_l^T is its exact transpose. M is symmetric positive
  definite. L-BFGS with initial inverse Hessian gamma M is L-BFGS on
  coefficients z of a Laplacian-like pyramid, x = sum_l U_l z_l: a step
  moves large areas together as cheaply as single pixels, where plain
  L-BFGS's first steps are dominated by the pixel-scale part of VGG's
  gradient. It acts on the last three axes (height, width, channels) of
  any array.

  Args:
    levels: 1 (M = I) or more.
  Returns:
    A linear function x -> M x.

  Example::

    precondition = pyramid_preconditioner(2)
    smoothed = precondition(jnp.ones((64, 64, 3)))
  """

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
      out = out + up(down)
    return out
  return apply


def scale_by_lbfgs_fixed_step(learning_rate, memory_size: int,
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

    opt = scale_by_lbfgs_fixed_step(1.0, memory_size=100)
    state = opt.init(x)
    updates, state = opt.update(grad_at_x, state, x)
    x = optax.apply_updates(x, updates)
  """

  def init(params):
    zeros = jnp.zeros_like(params)
    # Flat pairs, one per row: the products below read the histories as
    # matrices, and image-shaped histories would have XLA copy them each
    # step to reshape the updated ones.
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
    ys = vdot(y, s)
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
