"""torch/optim/lbfgs.py's L-BFGS and strong Wolfe line search, transcribed
to NumPy, and the functions the tests compare them on.

For tests/test_lbfgs.py and tests/test_line_search.py, which import it as
`import torch_lbfgs`: pytest's default ('prepend') import mode puts tests/,
which has no __init__.py, on sys.path.
"""

import jax.numpy as jnp
import numpy as np


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
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


def strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9,
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
    t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
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
    t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
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


def two_loop(g, old_stps, old_dirs, ro, h_diag):
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


def lbfgs_reference(fun_grad, x, lr, history, steps,
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
      d = two_loop(-g, old_stps, old_dirs, ro, h_diag)
    prev_g = g.copy()
    t = min(1.0, 1.0 / np.abs(g).sum()) * lr if n_iter == 1 else lr
    if line_search:
      gtd = float(np.dot(g.ravel(), d.ravel()))
      value, g, t, spent = strong_wolfe(
          lambda x, t, d: fun_grad(x + t * d), x, t, d, value, g, gtd)
      x = x + t * d
    else:
      x = x + t * d
      value, g = fun_grad(x)
      spent = 1
    path.append(x.copy())
    evaluations.append(spent)
  return np.stack(path), skipped, evaluations


def non_quadratic(curvature, seed=0):
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
