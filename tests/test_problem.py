"""nst_jax.engine.problem: a problem is a run's, and minimize is its loop."""

import numpy as np
import pytest

import nst_jax
from nst_jax.engine import problem as problem_lib
from nst_jax.errors import UserError
from nst_jax.io import scenes

# conftest's small run (shallow layers, direct convolutions) as fields.
FIELDS = dict(weights='random', image_size=32, iterations=6, log_every=3,
              optimizer='lbfgs_nols', init='content',
              content_layers='conv2_1', style_layers='conv1_1,conv2_1',
              style_weight=1e-2, compilation_cache='', conv_algorithm='direct')


@pytest.fixture(scope='module', name='images')
def images_fixture():
  """The built-in content and style at 32 px, as integers 0-255 (what
  stylize reads from uint8 arrays)."""
  return [np.rint(image(32)).astype(np.float32)
          for image in (scenes.demo_content, scenes.demo_style)]


@pytest.fixture(scope='module', name='stylized')
def stylized_fixture(images):
  content, style = images
  return nst_jax.stylize(content.astype(np.uint8), style.astype(np.uint8),
                         **FIELDS)


@pytest.fixture(scope='module', name='problem')
def problem_fixture(images):
  content, style = images
  return problem_lib.build(FIELDS, content, [style], log=lambda m: None)


def test_loss_is_stylizes_initial_loss(problem, stylized, images):
  np.testing.assert_array_equal(problem.start, images[0])  # init='content'
  value, grad = problem.loss_and_grad(problem.start)
  assert grad.shape == (32, 32, 3)
  np.testing.assert_allclose(float(value),
                             stylized.manifest['initial']['total'],
                             rtol=1e-5)
  assert problem.spec.conv_algorithm == 'direct'
  assert problem.settings.optimizer == 'lbfgs_nols'


def test_minimize_is_the_runs_loop_and_counts_evaluations(problem, stylized):
  """The same compiled loop as the run's: the same losses and counts."""
  seen = []
  done = problem_lib.minimize(problem, on_chunk=lambda *args: seen.append(
      args))
  manifest = stylized.manifest
  assert done.initial_loss == manifest['initial']['total']
  assert done.loss == manifest['final']['total'] < done.initial_loss
  assert (done.steps, done.evaluations) == (6, manifest['evaluations']) == (
      6, 7)
  assert done.stop_reason == 'iterations' and done.compile_s > 0
  assert done.curve == [[4, seen[0][2]], [7, done.loss]]
  assert [(step, evaluations) for step, evaluations, _ in seen] == [(3, 4),
                                                                    (6, 7)]
  np.testing.assert_array_equal(
      np.clip(np.rint(done.pixels), 0, 255).astype(np.uint8),
      stylized.image)
  # Criteria and the start as arguments: stop once the loss is reached.
  again = problem_lib.minimize(problem, iterations=20, chunk_size=1,
                               stop_loss=done.curve[0][1])
  assert again.stop_reason == 'stop_loss' and again.steps == 3
  assert again.loss <= done.curve[0][1]
  later = problem_lib.minimize(problem, iterations=3, chunk_size=3,
                               start=done.pixels)
  assert later.initial_loss == pytest.approx(done.loss, rel=1e-5)


def test_a_sweep_is_no_problem(images):
  with pytest.raises(UserError, match='config.sweep'):
    problem_lib.build(dict(FIELDS, sweep={'seed': (1, 2)}), images[0],
                      [images[1]])
