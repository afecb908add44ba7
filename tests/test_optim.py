"""Each optimiser lowers the loss; counting, stopping and recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.engine import loop, programs as programs_lib
from nst_jax.core import losses, optim


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
  state = loop.minimize(noise, problem, spec, optimizer,
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
                            problem.loss_weights, spec)
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
    state = jax.jit(lambda pixels, problem: optim.run_chunk(
        optim.init_state(pixels, problem, spec, 'lbfgs', 1.0),
        problem, spec, 'lbfgs', 1.0, optim.stop_criteria(5), 5)[0])(
            jnp.asarray(small_images[2]), problem)
    jax.block_until_ready(state)
  finally:
    optim.losses.loss_terms = original
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

  torch_spent, _, torch_value = first(optim.Optimizer('lbfgs'))
  spent, moved, value = first(optim.Optimizer('lbfgs', first_step=8.0))
  assert torch_spent >= 4
  assert spent == 1
  np.testing.assert_allclose(moved, 8.0, rtol=1e-4)
  start, _ = optim.loss_and_grad_jit(noise, problem, spec)
  assert value < float(start) and torch_value < float(start)


def test_non_finite_loss_keeps_last_finite_image(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  state = loop.minimize(noise, problem, spec, 'adam', 1e30, iterations=10,
                         chunk_size=5)
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'non_finite'
  assert int(state.step) < 10
  assert bool(jnp.all(jnp.isfinite(state.pixels)))
  assert np.isfinite(float(state.value))


def test_stop_loss_and_zero_iterations(problem_spec, small_images):
  problem, spec = problem_spec
  noise = jnp.asarray(small_images[2])
  start, _ = optim.loss_and_grad_jit(noise, problem, spec)
  state = loop.minimize(noise, problem, spec, 'lbfgs_nols', 1.0,
                         iterations=50, chunk_size=5,
                         stop_loss=0.5 * float(start))
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'stop_loss'
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


def _torch_cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
  """torch/optim/lbfgs.py's `_cubic_interpolate`, transcribed."""
  if bounds is not None:
    xmin_bound, xmax_bound = bounds
  else:
    xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
  d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
  d2_square = d1 ** 2 - g1 * g2
  if d2_square >= 0:
    d2 = np.sqrt(d2_square)
    if x1 <= x2:
      min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
      min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(min_pos, xmin_bound), xmax_bound)
  return (xmin_bound + xmax_bound) / 2.0


def _torch_strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9,
                        tolerance_change=1e-9, max_ls=25):
  """torch/optim/lbfgs.py's `_strong_wolfe`, transcribed to NumPy."""
  dot = lambda a, b: float(np.dot(a.ravel(), b.ravel()))
  d_norm = np.abs(d).max()
  f_new, g_new = obj_func(x, t, d)
  ls_func_evals = 1
  gtd_new = dot(g_new, d)
  t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
  done = False
  ls_iter = 0
  while ls_iter < max_ls:
    if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
      bracket, bracket_f = [t_prev, t], [f_prev, f_new]
      bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
      break
    if abs(gtd_new) <= -c2 * gtd:
      bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
      done = True
      break
    if gtd_new >= 0:
      bracket, bracket_f = [t_prev, t], [f_prev, f_new]
      bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
      break
    min_step = t + 0.01 * (t - t_prev)
    max_step = t * 10
    tmp = t
    t = _torch_cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                 bounds=(min_step, max_step))
    t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals += 1
    gtd_new = dot(g_new, d)
    ls_iter += 1
  if ls_iter == max_ls:
    bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
  insuf_progress = False
  low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
  while not done and ls_iter < max_ls:
    if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
      break
    t = _torch_cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                                 bracket[1], bracket_f[1], bracket_gtd[1])
    eps = 0.1 * (max(bracket) - min(bracket))
    if min(max(bracket) - t, t - min(bracket)) < eps:
      if insuf_progress or t >= max(bracket) or t <= min(bracket):
        if abs(t - max(bracket)) < abs(t - min(bracket)):
          t = max(bracket) - eps
        else:
          t = min(bracket) + eps
        insuf_progress = False
      else:
        insuf_progress = True
    else:
      insuf_progress = False
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals += 1
    gtd_new = dot(g_new, d)
    ls_iter += 1
    if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
      bracket[high_pos], bracket_f[high_pos] = t, f_new
      bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
      low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
    else:
      if abs(gtd_new) <= -c2 * gtd:
        done = True
      elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
        bracket[high_pos], bracket_f[high_pos] = (bracket[low_pos],
                                                  bracket_f[low_pos])
        bracket_g[high_pos], bracket_gtd[high_pos] = (bracket_g[low_pos],
                                                      bracket_gtd[low_pos])
      bracket[low_pos], bracket_f[low_pos] = t, f_new
      bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new
  t = bracket[low_pos]
  return bracket_f[low_pos], bracket_g[low_pos], t, ls_func_evals


def _torch_two_loop(g, old_stps, old_dirs, ro, h_diag):
  """H g by torch/optim/lbfgs.py's two-loop recursion, transcribed; the
  pairs (s, y, 1 / y.s) oldest first."""
  q = g
  al = [0.0] * len(old_dirs)
  for i in range(len(old_dirs) - 1, -1, -1):
    al[i] = float(np.dot(old_stps[i].ravel(), q.ravel())) * ro[i]
    q = q - al[i] * old_dirs[i]
  r = q * h_diag
  for i in range(len(old_dirs)):
    be_i = float(np.dot(old_dirs[i].ravel(), r.ravel())) * ro[i]
    r = r + (al[i] - be_i) * old_stps[i]
  return r


def _torch_lbfgs_reference(fun_grad, x, lr, history, steps,
                           line_search=False):
  """torch.optim.LBFGS's step loop, without line search or with
  `line_search_fn='strong_wolfe'`, in NumPy (a transcription of
  torch/optim/lbfgs.py), for comparison. Returns the iterates, the pairs
  skipped and the evaluations of each step."""
  x = x.copy()
  old_dirs, old_stps, ro = [], [], []
  h_diag = 1.0
  value, g = fun_grad(x)
  d = t = prev_g = None
  path, skipped, evaluations = [], 0, []
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
      d = _torch_two_loop(-g, old_stps, old_dirs, ro, h_diag)
    prev_g = g.copy()
    t = min(1.0, 1.0 / np.abs(g).sum()) * lr if n_iter == 1 else lr
    if line_search:
      gtd = float(np.dot(g.ravel(), d.ravel()))
      value, g, t, spent = _torch_strong_wolfe(
          lambda x, t, d: fun_grad(x + t * d), x, t, d, value, g, gtd)
      x = x + t * d
    else:
      x = x + t * d
      value, g = fun_grad(x)
      spent = 1
    path.append(x.copy())
    evaluations.append(spent)
  return np.stack(path), skipped, evaluations


def _test_function(curvature, seed=0):
  """(f, x0): a non-quadratic function of a (2, 3) array and its start;
  'mixed' is concave near 0, so L-BFGS meets negative curvature."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(6, 6))
  a = a @ a.T / 6 + 0.1 * np.eye(6)
  b = rng.normal(size=6)

  def f(x):
    flat = x.ravel()
    if curvature == 'mixed':  # concave near 0, convex far out
      return jnp.sum(jnp.cos(flat)) + 0.01 * jnp.sum(flat ** 4) - b @ flat
    return (0.5 * flat @ a @ flat - b @ flat + 0.05 * jnp.sum(flat ** 4)
            - 0.3 * jnp.sum(jnp.cos(2.0 * flat)))
  x0 = rng.normal(size=(2, 3)) * (0.1 if curvature == 'mixed' else 1.0)
  return f, x0


@pytest.mark.parametrize('curvature', ['positive', 'mixed'])
def test_lbfgs_nols_is_torchs_algorithm(curvature):
  """Same iterates as torch.optim.LBFGS (no line search) on non-quadratic
  functions, with a memory small enough that the history wraps around;
  'mixed' starts where the curvature is negative, so pairs are skipped."""
  f, x0 = _test_function(curvature)
  value_and_grad = jax.jit(jax.value_and_grad(f))
  numpy_fun_grad = lambda x: tuple(np.asarray(v, np.float64)
                                   for v in value_and_grad(jnp.asarray(x)))
  expected, skipped, _ = _torch_lbfgs_reference(numpy_fun_grad, x0, lr=0.5,
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
  r = _torch_two_loop(grad.ravel(), s_history[oldest_first],
                      y_history[oldest_first], rho[oldest_first], gamma)

  opt = optim.scale_by_lbfgs_fixed_step(1.0, memory_size=memory)
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
  opt = optim.scale_by_lbfgs_fixed_step(1.0, memory_size=5)
  params = jnp.ones((4, 3, 3))
  jaxpr = str(jax.make_jaxpr(opt.update)(params, opt.init(params), params))
  assert 'scan' in jaxpr and 'while' not in jaxpr


@pytest.mark.parametrize('curvature,lr', [('positive', 1.0), ('mixed', 1.0),
                                          ('positive', 30.0),
                                          ('mixed', 0.3)])
def test_lbfgs_line_search_is_torchs_strong_wolfe(curvature, lr):
  """Same iterates and evaluation counts as torch.optim.LBFGS with
  line_search_fn='strong_wolfe'. lr 30 makes the first trials far too
  long, so the searches zoom; on 'mixed' (negative curvature near the
  start) the first searches extrapolate (by 10x, then 40x at lr 0.3) and
  zoom."""
  f, x0 = _test_function(curvature)
  plain = jax.jit(jax.value_and_grad(f))
  numpy_fun_grad = lambda x: tuple(np.asarray(v, np.float64)
                                   for v in plain(jnp.asarray(x)))
  expected, _, expected_evaluations = _torch_lbfgs_reference(
      numpy_fun_grad, x0, lr=lr, history=3, steps=8, line_search=True)
  # The searches did work (lr 1 on the convex function: first trials pass).
  assert max(expected_evaluations) > 1 or (curvature, lr) == ('positive', 1.0)

  value_and_grad = jax.value_and_grad(lambda x: (f(x), {'f': f(x)}),
                                      has_aux=True)
  opt = optim.scale_by_lbfgs_fixed_step(lr, memory_size=3)

  @jax.jit
  def step(x, state, value, grad, aux):
    updates, state = opt.update(grad, state, x)
    t, value, grad, aux, spent = optim.strong_wolfe_line_search(
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
      lambda d: optim.strong_wolfe_line_search(value_and_grad, x, d, value,
                                               grad, aux, initial_step=10.0)
  )(-grad)
  assert np.isfinite(float(new_value)) and float(new_value) < float(value)
  assert 0 < float(t) * 2 <= 3.0 and int(spent) > 1


def test_compiler_options_are_valid_and_reach_minimize(problem_spec,
                                                       small_images,
                                                       monkeypatch):
  # XLA rejects unknown option names and values, so compiling with the CPU
  # options checks them; options this jaxlib lacks are left out, and other
  # platforms keep XLA's defaults.
  options = programs_lib.compiler_options('cpu')
  assert options.items() <= programs_lib.CPU_COMPILER_OPTIONS.items()
  assert 'xla_cpu_scheduler_type' in options
  jax.jit(lambda x: 2 * x, compiler_options=options).lower(
      jnp.ones(3)).compile()
  assert not programs_lib._accepted('xla_cpu_no_such_option', '1')
  assert not programs_lib._accepted('xla_cpu_scheduler_type',
                                    'NOT_A_SCHEDULER')
  assert (programs_lib.compiler_options('gpu')
          == programs_lib.compiler_options('tpu') == {})
  # minimize compiles its loop with them: a bad value fails there.
  problem, spec = problem_spec
  monkeypatch.setattr(programs_lib, 'compiler_options', lambda platform: {
      'xla_cpu_scheduler_type': 'NOT_A_SCHEDULER'})
  with pytest.raises(Exception, match='xla_cpu_scheduler_type'):
    loop.minimize(jnp.asarray(small_images[2]), problem, spec, 'lbfgs_nols',
                  iterations=1, programs=programs_lib.Programs())


def test_lbfgs_stops_when_its_line_search_finds_no_lower_loss(
    variables, small_images):
  """At a minimum (content and style both the image itself) the gradient
  vanishes: the line search cannot lower the loss, and the run stops with
  the reason instead of spending evaluations on the same point."""
  image = jnp.asarray(small_images[1][:32, :32])
  spec = losses.LossSpec(content_layers=('conv2_1',),
                         style_layers=('conv1_1', 'conv2_1'))
  targets = losses.make_targets(variables, image, [image], spec)
  problem = optim.Problem(variables, targets,
                          losses.loss_weights(spec, 1.0, 1.0))
  state = loop.minimize(image, problem, spec, 'lbfgs', iterations=5,
                        chunk_size=5)
  assert optim.STOP_REASONS[int(state.stop_reason)] == 'no_progress'
  assert int(state.step) < 5  # rounding may leave a step or two


def test_pyramid_preconditioner_is_symmetric_and_per_image():
  """M = sum_l U_l U_l^T: <M a, b> = <a, M b>, <M a, a> > 0, odd sizes
  included; leading axes (video frames) are separate images."""
  precondition = optim.pyramid_preconditioner(3, 0.8)
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.normal(size=(2, 9, 7, 3)), jnp.float32)
          for _ in range(2))
  m_a, m_b = precondition(a), precondition(b)
  np.testing.assert_allclose(jnp.vdot(m_a, b), jnp.vdot(a, m_b), rtol=1e-5)
  assert float(jnp.vdot(m_a, a)) > float(jnp.vdot(a, a))
  np.testing.assert_allclose(m_a[1], precondition(a[1]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(optim.pyramid_preconditioner(1)(a), a)


def test_luminance_weight_scales_only_the_grey_direction():
  """With luminance c, M's colour factor is I + c 1 1^T / 3: a grey change
  (all channels equal) is scaled by 1 + c, a colour difference (channels
  summing to 0) kept; M stays symmetric; c <= -1 is refused."""
  grey = jnp.ones((5, 4, 3)) * jnp.arange(20.0).reshape(5, 4, 1)
  colour = grey * jnp.asarray([1.0, -2.0, 1.0])
  precondition = optim.pyramid_preconditioner(1, luminance=-0.5)
  np.testing.assert_allclose(precondition(grey), 0.5 * grey, rtol=1e-6)
  np.testing.assert_allclose(precondition(colour), colour, rtol=1e-6)
  with_pyramid = optim.pyramid_preconditioner(2, luminance=2.0)
  rng = np.random.default_rng(2)
  a, b = (jnp.asarray(rng.normal(size=(7, 5, 3)), jnp.float32)
          for _ in range(2))
  np.testing.assert_allclose(jnp.vdot(with_pyramid(a), b),
                             jnp.vdot(a, with_pyramid(b)), rtol=1e-5)
  with pytest.raises(ValueError, match='luminance'):
    optim.pyramid_preconditioner(2, luminance=-1.0)


def test_preconditioned_lbfgs_is_lbfgs_on_pyramid_coefficients():
  """L-BFGS with H0 = gamma M, M = sum_l w^(2l) U_l U_l^T, takes the same
  steps as plain L-BFGS on pyramid coefficients z with x = sum_l w^l U_l
  z_l (the preconditioner's definition), through a wrapping history."""
  rng = np.random.default_rng(1)
  shape, weight = (8, 6, 3), 0.7
  a = rng.normal(size=(144, 144)) / 12
  a = a @ a.T + 0.2 * np.eye(144)
  b = rng.normal(size=144)

  def f(x):
    flat = x.ravel()
    return 0.5 * flat @ a @ flat - b @ flat + 0.05 * jnp.sum(flat ** 4)

  small = (4, 3, 3)
  up = lambda z: jax.image.resize(z, shape, 'linear', antialias=False)

  def from_coefficients(z):
    return z[:144].reshape(shape) + weight * up(z[144:].reshape(small))

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

  got = run(fx, x0, optim.scale_by_lbfgs_fixed_step(
      0.5, 4, optim.pyramid_preconditioner(2, weight)))
  z0 = jnp.concatenate([x0.ravel(), jnp.zeros(36, jnp.float32)])
  expected = [from_coefficients(z) for z in run(
      fz, z0, optim.scale_by_lbfgs_fixed_step(0.5, 4))]
  np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=1e-3,
                             atol=1e-4)
  # And it is not plain L-BFGS in pixels.
  plain = run(fx, x0, optim.scale_by_lbfgs_fixed_step(0.5, 4))
  assert np.abs(np.stack(plain) - np.stack(expected)).max() > 1e-2
