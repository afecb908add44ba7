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
  # So are the loss terms carried for logging.
  terms = losses.loss_terms(state.pixels, problem.variables, problem.targets,
                            problem.weights, spec)
  for name in ('total', 'content', 'style'):
    np.testing.assert_allclose(state.terms[name], terms[name], rtol=1e-4)
  if optimizer != 'lbfgs':  # one evaluation per step, plus the first
    assert int(state.evaluations) == 9


def test_lbfgs_counts_every_evaluation(problem_spec, small_images):
  """The count equals the loss calls actually made (counted from the host)."""
  problem, spec = problem_spec
  calls = []

  original = losses.loss_terms

  def counted(p, *args, **kwargs):
    value = original(p, *args, **kwargs)
    jax.debug.callback(lambda: calls.append(1))
    return value

  optim.losses.loss_terms = counted
  try:
    state = jax.jit(lambda pixels, problem: optim.run_chunk_unjitted(
        optim.init_state(pixels, problem, spec, 'lbfgs', 1.0),
        problem, spec, 'lbfgs', 1.0, optim.stop_criteria(5), 5)[0])(
            jnp.asarray(small_images[2]), problem)
    jax.block_until_ready(state)
  finally:
    optim.losses.loss_terms = original
  assert int(state.step) == 5
  # Every call but one was an evaluation: the chunk's closing forward pass
  # (the line search keeps only the total, so lbfgs recomputes the terms).
  assert int(state.evaluations) == len(calls) - 1
  assert len(calls) >= 7


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


def _torch_lbfgs_reference(fun_grad, x, lr, history, steps):
  """torch.optim.LBFGS's step loop without line search, in NumPy (a
  transcription of torch/optim/lbfgs.py), for comparison."""
  x = x.copy()
  old_dirs, old_stps, ro = [], [], []
  h_diag = 1.0
  value, g = fun_grad(x)
  d = t = prev_g = None
  path, skipped = [], 0
  for n_iter in range(1, steps + 1):
    if n_iter == 1:
      d = -g
    else:
      y = g - prev_g
      s = d * t
      ys = float(np.dot(y.ravel(), s.ravel()))
      if ys > 1e-10:
        if len(old_dirs) == history:
          old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
        old_dirs.append(y), old_stps.append(s), ro.append(1.0 / ys)
        h_diag = ys / float(np.dot(y.ravel(), y.ravel()))
      else:
        skipped += 1
      q = -g
      al = [0.0] * len(old_dirs)
      for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = float(np.dot(old_stps[i].ravel(), q.ravel())) * ro[i]
        q = q - al[i] * old_dirs[i]
      r = q * h_diag
      for i in range(len(old_dirs)):
        be_i = float(np.dot(old_dirs[i].ravel(), r.ravel())) * ro[i]
        r = r + (al[i] - be_i) * old_stps[i]
      d = r
    prev_g = g.copy()
    t = min(1.0, 1.0 / np.abs(g).sum()) * lr if n_iter == 1 else lr
    x = x + t * d
    value, g = fun_grad(x)
    path.append(x.copy())
  return np.stack(path), skipped


@pytest.mark.parametrize('curvature', ['positive', 'mixed'])
def test_lbfgs_nols_is_torchs_algorithm(curvature):
  """Same iterates as torch.optim.LBFGS (no line search) on non-quadratic
  functions, with a memory small enough that the history wraps around;
  'mixed' starts where the curvature is negative, so pairs are skipped."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  a = a @ a.T / 6 + 0.1 * np.eye(6)
  b = rng.normal(size=6)

  def f(x):
    flat = x.ravel()
    if curvature == 'mixed':  # concave near 0, convex far out
      return jnp.sum(jnp.cos(flat)) + 0.01 * jnp.sum(flat ** 4) - b @ flat
    return (0.5 * flat @ a @ flat - b @ flat + 0.05 * jnp.sum(flat ** 4)
            - 0.3 * jnp.sum(jnp.cos(2.0 * flat)))

  value_and_grad = jax.jit(jax.value_and_grad(f))
  numpy_fun_grad = lambda x: tuple(np.asarray(v, np.float64)
                                   for v in value_and_grad(jnp.asarray(x)))
  x0 = rng.normal(size=(2, 3)) * (0.1 if curvature == 'mixed' else 1.0)
  expected, skipped = _torch_lbfgs_reference(numpy_fun_grad, x0, lr=0.5,
                                             history=3, steps=12)
  assert (skipped > 0) == (curvature == 'mixed')

  opt = optim.scale_by_lbfgs_fixed_step(0.5, memory_size=3)
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
