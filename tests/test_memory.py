"""The memory estimate: what it counts, and a sweep's members."""

import pytest

import nst_jax
from nst_jax import losses, memory


def test_sweep_members_and_vmap_raise_the_estimate():
  spec = losses.LossSpec()
  one = memory.estimate_bytes(512, 512, spec, 'lbfgs')
  mapped = memory.estimate_bytes(512, 512, spec, 'lbfgs', members=4)
  batched = memory.estimate_bytes(512, 512, spec, 'lbfgs', members=4,
                                  batched=True)
  history = 4 * (2 * 100 + 6) * 512 * 512 * 3  # each member's L-BFGS state
  assert mapped - one == 3 * history
  assert batched > mapped  # and every member's activations at once
  # Rows over 4 devices: a quarter of the image-sized buffers each.
  split = memory.estimate_bytes(512, 512, spec, 'lbfgs', shards=4)
  assert split < one / 2


def test_a_sweep_that_does_not_fit_is_refused_before_it_runs():
  fields = dict(weights='random', image_size=64, iterations=1,
                compilation_cache='', optimizer='lbfgs')
  spec = losses.LossSpec()
  one, four = (memory.estimate_bytes(64, 64, spec, 'lbfgs', members=k,
                                     use_winograd=True) for k in (1, 4))
  limit_gb = (one + four) / 2 / 2**30  # one member fits, four do not
  with pytest.raises(nst_jax.UserError,
                     match='with 4 sweep members per device needs about'):
    nst_jax.stylize('builtin:scene', 'builtin:painting',
                    max_memory_gb=limit_gb,
                    sweep={'style_weight': (1e-3, 1e-2, 0.1, 1.0)},
                    **fields)
