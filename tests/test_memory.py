"""The memory estimate: what it counts, and a sweep's members."""

import pytest

import nst_jax
from nst_jax.core import losses
from nst_jax.engine import memory


def test_sweep_members_and_vmap_raise_the_estimate():
  spec = losses.LossSpec()
  one = memory.estimate_bytes(512, 512, spec, 'lbfgs')
  mapped = memory.estimate_bytes(512, 512, spec, 'lbfgs', members=4)
  batched = memory.estimate_bytes(512, 512, spec, 'lbfgs', members=4,
                                  batched=True)
  # Each member's L-BFGS state, and its content target (conv4_2's map).
  per_member = 4 * ((2 * 100 + 6) * 512 * 512 * 3 + 64 * 64 * 512)
  assert mapped - one == 3 * per_member
  assert batched > mapped  # and every member's activations at once
  # Rows over 4 devices: a quarter of the image-sized buffers each.
  split = memory.estimate_bytes(512, 512, spec, 'lbfgs', shards=4)
  assert split < one / 2


def test_a_sweep_that_does_not_fit_is_refused_before_it_runs():
  # adam and row_strips=1: no fewer L-BFGS pairs or strips to fit instead.
  fields = dict(weights='random', image_size=64, iterations=1,
                compilation_cache='', optimizer='adam', row_strips=1)
  spec = losses.LossSpec()
  one, four = (memory.estimate_bytes(64, 64, spec, 'adam', members=k,
                                     use_winograd=True, batched=k > 1,
                                     donated=memory.loop_state_donated(),
                                     checkpoint_copy=(
                                         memory.checkpoint_shares_memory()))
               for k in (1, 4))
  limit_gb = (one + four) / 2 / 2**30  # one member fits, four do not
  with pytest.raises(nst_jax.UserError,
                     match='with 4 sweep members per device needs about'):
    nst_jax.stylize('builtin:scene', 'builtin:painting',
                    max_memory_gb=limit_gb,
                    sweep={'style_weight': (1e-3, 1e-2, 0.1, 1.0)},
                    **fields)


def test_a_checkpoint_copy_counts_the_loop_state_once_more():
  """On a CPU the checkpoint's host copy of the state shares the memory:
  L-BFGS's 2 x 100 pairs plus the points and gradients once more."""
  spec = losses.LossSpec()
  plain = memory.estimate_bytes(512, 512, spec, 'lbfgs')
  copied = memory.estimate_bytes(512, 512, spec, 'lbfgs',
                                 checkpoint_copy=True)
  assert copied - plain == 4 * (2 * 100 + 4) * 512 * 512 * 3
