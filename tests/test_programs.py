"""The optimisation programs' XLA options."""

import jax
import jax.numpy as jnp
import pytest

from nst_jax.engine import loop, programs as programs_lib


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
