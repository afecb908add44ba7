"""The optimisers a run may use, their static settings and defaults.

Optimisers (`OPTIMIZERS`):
  * ``lbfgs``: L-BFGS with a strong Wolfe line search, as torch.optim.LBFGS
    runs it with `line_search_fn='strong_wolfe'`: the direction of
    `lbfgs.scale_by_lbfgs_fixed_step`, then
    `line_search.strong_wolfe_line_search` from its step as the first trial
    (on the first step, with `Optimizer.first_step` > 0, a trial that moves
    the most-changed pixel value by that much). Each step spends as many
    function+gradient evaluations as the search needs (usually 1 once it
    has settled).
  * ``lbfgs_nols``: L-BFGS with a fixed step `learning_rate` and no line
    search, exactly as torch.optim.LBFGS runs it for jcjohnson/neural-style
    (`lbfgs.scale_by_lbfgs_fixed_step`): one evaluation per step, the first
    step scaled by min(1, 1/|g|_1), a curvature pair kept only when
    s.y > 1e-10.
  * ``adam``: optax.adam(learning_rate).
  * ``sgd``: SGD with momentum 0.9 (fixed-step momentum, the simplest
    baseline).

`make_optimizer` gives an optimiser's optax transformation;
`Optimizer.line_search` says whether its step searches along the
transformation's update (`nst_jax.core.descent` runs the steps).
"""

from __future__ import annotations

import dataclasses

import optax

from nst_jax.core import lbfgs

OPTIMIZERS = ('lbfgs', 'lbfgs_nols', 'adam', 'sgd')
# The optimisers whose step is a strong Wolfe line search along the
# transformation's update; the others apply the update as it is.
_LINE_SEARCH_OPTIMIZERS = ('lbfgs',)
# Curvature pairs L-BFGS keeps: torch.optim.LBFGS's and neural-style's 100
# (optax's default is 10; 100 reaches a given loss in fewer evaluations).
LBFGS_MEMORY = 100
# Levels of the pyramid preconditioner a config uses unless it says
# (`lbfgs.pyramid_preconditioner`; 1 would be torch's algorithm): chosen on
# the time-to-quality panel of `scripts/time_to_quality.py`
# (docs/performance.md).
LBFGS_PYRAMID = 2
# `lbfgs`'s first line-search trial on a run's first step, in pixel values
# (0-255) of the most-changed pixel (`Optimizer.first_step`; 0 would be
# torch's trial). torch's trial moves a pixel by a tiny fraction of a value,
# so its first search spends several evaluations extrapolating towards the
# steps of a few values that it accepts; a trial of that size is accepted
# at once on most images. Chosen on the time-to-quality panel of
# `scripts/time_to_quality.py` (docs/performance.md).
LBFGS_FIRST_STEP = 8.0
# `learning_rate=0` in a config means these. L-BFGS's step is scaled by its
# curvature estimate, so 1 is its natural step (torch's default). Adam moves
# each pixel value (0-255) by about `learning_rate` per step: 10, as
# jcjohnson/neural-style's Adam. SGD's step is `learning_rate` times the
# gradient, whose scale the losses set: 1e3 suits the invariant losses
# (`scripts/learning_rates.py` compares steps; much larger ones diverge),
# while the paper's un-normalised losses need a far smaller one.
DEFAULT_LEARNING_RATES = {'lbfgs': 1.0, 'lbfgs_nols': 1.0, 'adam': 10.0,
                          'sgd': 1e3}


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimiser's static settings (hashable: a static jit argument).

  Functions taking `optimizer` accept this or just a name from `OPTIMIZERS`.

  Attributes:
    name: a name from `OPTIMIZERS`.
    lbfgs_memory: curvature pairs L-BFGS keeps.
    pyramid_levels: L-BFGS's preconditioner
      (`lbfgs.pyramid_preconditioner`); 1 = none, torch's algorithm.
    first_step: for `lbfgs`, the line search's first trial on a run's first
      step moves the most-changed pixel value by this much (0-255 scale);
      0 = torch's trial, `learning_rate` x min(1, 1/|g|_1) times the
      direction.
  """
  name: str
  lbfgs_memory: int = LBFGS_MEMORY
  pyramid_levels: int = 1
  first_step: float = 0.0

  @property
  def line_search(self) -> bool:
    """Whether a step runs a strong Wolfe line search along the update
    (from the trial step 1, or from `first_step` on a run's first step),
    instead of applying the update as it is."""
    return self.name in _LINE_SEARCH_OPTIMIZERS


def as_optimizer(optimizer) -> Optimizer:
  """`optimizer` (an `Optimizer` or a name from `OPTIMIZERS`) as an
  `Optimizer`."""
  return optimizer if isinstance(optimizer, Optimizer) else Optimizer(
      optimizer)


def make_optimizer(optimizer, learning_rate) -> optax.GradientTransformation:
  """The optax transformation for an optimiser (see module docstring).

  Args:
    optimizer: a name from `OPTIMIZERS` or an `Optimizer`.
    learning_rate: step size (for `lbfgs` the line search's first trial);
      may be a traced array so it can be swept without recompiling.
  Returns:
    The transformation; for `lbfgs`, the L-BFGS direction that the line
    search then searches along (`Optimizer.line_search`).
  Raises:
    ValueError: for a name not in `OPTIMIZERS`.
  """
  optimizer = as_optimizer(optimizer)
  name = optimizer.name
  if name in ('lbfgs', 'lbfgs_nols'):
    return lbfgs.scale_by_lbfgs_fixed_step(
        learning_rate, optimizer.lbfgs_memory,
        lbfgs.pyramid_preconditioner(optimizer.pyramid_levels))
  if name == 'adam':
    return optax.adam(learning_rate)
  if name == 'sgd':
    return optax.sgd(learning_rate, momentum=0.9)
  raise ValueError(f'optimizer: unknown {name!r}; valid are '
                   + ', '.join(OPTIMIZERS))
