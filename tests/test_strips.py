"""Row strips: the same losses, gradient and targets as the whole image,
in less memory; the memory estimate's choice of strips and L-BFGS pairs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import descent, losses, objective, strips
from nst_jax.engine import config_files, memory, programs as programs_lib
from nst_jax.engine import settings as settings_lib


def _targets(variables, spec, content, style):
  # The weights are arguments, not constants folded into the program.
  return jax.jit(lambda v, c, s: objective.make_targets(v, c, [s], spec))(
      variables, content, style)


def _evaluation(variables, spec, targets, pixels):
  """(loss terms, gradient) of `spec`."""
  weights = losses.loss_weights(spec, 1.0, 1e3, tv_weight=1e-3)

  def terms(p, variables, targets):
    terms = objective.loss_terms(p, variables, targets, weights, spec)
    return terms['total'], terms
  (_, terms), grad = jax.jit(jax.value_and_grad(terms, has_aux=True))(
      pixels, variables, targets)
  return terms, grad


def _assert_same(whole, split):
  """Every loss term (rtol 1e-5) and the gradient equal to rounding."""
  (terms, grad), (split_terms, split_grad) = whole, split
  for a, b in zip(jax.tree_util.tree_leaves(terms),
                  jax.tree_util.tree_leaves(split_terms)):
    np.testing.assert_allclose(b, a, rtol=1e-5)
  np.testing.assert_allclose(split_grad, grad, rtol=1e-4,
                             atol=1e-5 * float(jnp.max(jnp.abs(grad))))


def test_strips_give_the_whole_images_loss_gradient_and_targets(variables):
  # The paper's layers, 4 strips after pool2 of a 100-row image: 25 rows at
  # the split, so the last strip runs past the image's edge (7 + 7 + 7 + 4
  # rows), and the top and bottom strips' halos lie outside it (zero
  # padding at every layer). The style has another size.
  rng = np.random.default_rng(0)
  content = rng.uniform(0, 255, (100, 128, 3)).astype(np.float32)
  style = rng.uniform(0, 255, (90, 120, 3)).astype(np.float32)
  pixels = rng.uniform(0, 255, (100, 128, 3)).astype(np.float32)
  whole = losses.LossSpec(normalization='paper')
  split = dataclasses.replace(whole, row_strips=4, strip_split='pool2')
  assert strips.make_plan(100, 4, 'pool2', whole.layers).count == 4
  targets = _targets(variables, whole, content, style)
  split_targets = _targets(variables, split, content, style)
  for a, b in zip(jax.tree_util.tree_leaves(targets),
                  jax.tree_util.tree_leaves(split_targets)):
    np.testing.assert_allclose(b, a, rtol=2e-5,
                               atol=2e-6 * float(jnp.max(jnp.abs(a))))
  _assert_same(_evaluation(variables, whole, targets, pixels),
               _evaluation(variables, split, split_targets, pixels))


@pytest.mark.parametrize('padding,pooling,split,deepest', [
    ('reflect', 'avg', 'pool3', 'conv3_1'),
    ('replicate', 'max', 'pool1', 'conv2_2')])
def test_strips_are_exact_with_every_padding(variables, padding, pooling,
                                             split, deepest):
  # Invariant losses, an odd height (each pooling drops a row) and shallow
  # layers to keep it quick; a content layer inside the strips.
  rng = np.random.default_rng(1)
  content, pixels = rng.uniform(0, 255, (2, 45, 24, 3)).astype(np.float32)
  style = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  whole = losses.LossSpec(content_layers=('conv2_1', deepest),
                          style_layers=('conv1_1', deepest),
                          padding=padding, pooling=pooling)
  split_spec = dataclasses.replace(whole, row_strips=3, strip_split=split)
  targets = _targets(variables, whole, content, style)
  _assert_same(_evaluation(variables, whole, targets, pixels),
               _evaluation(variables, split_spec, targets, pixels))


def test_strips_hold_one_strips_maps_at_a_time(variables):
  # XLA's buffers: each strip is checkpointed, so the backward pass holds
  # one strip's maps, not every strip's.
  spec = losses.LossSpec(content_layers=('conv2_1',),
                         style_layers=('conv1_1', 'conv2_1'))
  pixels = jax.ShapeDtypeStruct((256, 256, 3), jnp.float32)

  def temp_bytes(spec):
    targets = jax.eval_shape(lambda c: objective.make_targets(
        variables, c, [c], spec), pixels)
    problem = descent.Problem(variables, targets, losses.loss_weights(spec))
    return descent.loss_and_grad_jit.lower(
        pixels, problem, spec).compile().memory_analysis().temp_size_in_bytes
  whole = temp_bytes(spec)
  assert temp_bytes(dataclasses.replace(spec, row_strips=8)) < whole / 3


def _settings(**fields):
  config = config_files.make_config(None, dict(fields, content='c', style='s'))
  return settings_lib.check(config, from_files=False)


def test_automatic_strips_only_where_the_whole_image_does_not_fit():
  spec = losses.LossSpec()
  # As fit counts it here.
  donated, copy = (memory.loop_state_donated(),
                   memory.checkpoint_shares_memory())
  whole = memory.estimate_bytes(1536, 2048, spec, 'adam', donated=donated,
                                checkpoint_copy=copy)
  settings = _settings(optimizer='adam', max_memory_gb=whole / 2 / 2**30)
  fit = memory.fit(settings, 1536, 2048)
  assert fit.row_strips > 1 and fit.needed <= fit.limit < whole
  assert fit.strip_split in strips.SPLITS and not fit.warnings
  # Room for the whole image: no strips.
  roomy = memory.fit(_settings(optimizer='adam',
                               max_memory_gb=whole / 2**30), 1536, 2048)
  assert roomy.row_strips == 1
  # Refused only when even the leanest strips do not fit.
  least = min(memory.estimate_bytes(1536, 2048, dataclasses.replace(
      spec, row_strips=count, strip_split=split), 'adam', donated=donated,
                                    checkpoint_copy=copy)
              for count, split in memory.choices(spec, 1536, 2048))
  memory.fit(_settings(optimizer='adam', max_memory_gb=least / 2**30),
             1536, 2048)
  with pytest.raises(nst_jax.UserError, match='even in .* row strips'):
    memory.fit(_settings(optimizer='adam',
                         max_memory_gb=0.99 * least / 2**30), 1536, 2048)
  # Forced: never strips, or that many.
  with pytest.raises(nst_jax.UserError, match='row_strips=0'):
    memory.fit(_settings(optimizer='adam', row_strips=1,
                         max_memory_gb=whole / 2 / 2**30), 1536, 2048)
  assert memory.fit(_settings(optimizer='adam', row_strips=4),
                    1536, 2048).row_strips == 4


def test_lbfgs_keeps_fewer_pairs_when_they_do_not_fit():
  # 4096 x 3072 on a 16 GB accelerator (the loop's state donated): 100
  # pairs are 2 x 100 x 144 MiB.
  settings = _settings(max_memory_gb=16e9 / 2**30)
  fit = memory.fit(settings, 3072, 4096, donated=True, checkpoint_copy=False)
  assert memory.LBFGS_MIN_PAIRS <= fit.lbfgs_memory < 100
  assert fit.row_strips > 1 and fit.needed <= fit.limit
  assert 'L-BFGS pairs do not fit' in fit.warnings[0]
  bigger = dataclasses.replace(settings.spec, row_strips=fit.row_strips,
                               strip_split=fit.strip_split)
  assert memory.estimate_bytes(3072, 4096, bigger, 'lbfgs',
                               lbfgs_memory=fit.lbfgs_memory + 1) > fit.limit
  # Fewer than the minimum: refused.
  with pytest.raises(nst_jax.UserError, match='needs about'):
    memory.fit(_settings(max_memory_gb=4.0), 3072, 4096, donated=True,
               checkpoint_copy=False)


def test_stylize_in_strips_with_fewer_pairs(small_config, tmp_path):
  config = small_config(tmp_path, image_size=64)  # lbfgs_nols
  spec = losses.LossSpec(content_layers=('conv2_1',),
                         style_layers=('conv1_1', 'conv2_1'), row_strips=2,
                         strip_split='pool1')
  # Room for the run in 2 strips with 20 pairs, not 100.
  limit = memory.estimate_bytes(
      64, 64, spec, 'lbfgs_nols', lbfgs_memory=20,
      donated=memory.loop_state_donated(),
      checkpoint_copy=memory.checkpoint_shares_memory())
  result = nst_jax.stylize('builtin:scene', 'builtin:painting',
                           config=config, row_strips=2,
                           max_memory_gb=limit / 2**30,
                           programs=programs_lib.Programs())
  device = result.manifest['device']
  assert device['row_strips'] == 2 and device['strip_split'] == 'pool1'
  assert device['lbfgs_memory_used'] == 20
  assert any('L-BFGS pairs' in w for w in result.manifest['warnings'])
  assert result.manifest['stop_reason'] == 'iterations'
  assert np.isfinite(result.manifest['final']['total'])


@pytest.mark.parametrize('fields,match', [
    (dict(row_strips=-1), 'row_strips: must be >= 0'),
    (dict(row_strips=2, style_loss='mean_std'), "row_strips: strips need "
     "style_loss='gram'"),
    (dict(row_strips=2, shard_rows=True), 'row_strips: not with shard_rows'),
])
def test_strips_refuse_what_they_cannot_do_exactly(fields, match):
  with pytest.raises(nst_jax.UserError, match=match):
    nst_jax.stylize('builtin:scene', 'builtin:painting', weights='random',
                    **fields)
