"""Sweeps: the members of a run, one `Member` per setting it stylises.

A sweep runs several settings of one config as one compiled program. The
config's `sweep.FIELD` lists (FIELD in `SWEEP_FIELDS`), which
`settings.check` validates into `Settings.sweep`, vary those fields: by
default the fields given vary together; with `sweep.product=True` every
combination runs. From Python, per-member overrides replace the lists
(`run.run(config, members)`). A run without a sweep has one member.

Example::

  settings = settings_lib.check(config)
  members = sweeps.sweep_members(settings)   # [Member(...), ...]
  sweeps.grid_columns(settings)              # None, or the grid's columns
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Optional, TYPE_CHECKING

from nst_jax.errors import UserError

if TYPE_CHECKING:
  from nst_jax.engine import settings as settings_lib

# The fields a sweep can vary, in the order they combine: with
# sweep.product the first varies slowest (the grid's rows).
SWEEP_FIELDS = ('content_weight', 'style_weight', 'tv_weight', 'seed',
                'style')


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep (a run without a sweep has one member).

  Attributes:
    content_weight, style_weight, tv_weight: alpha, beta and the TV weight.
    seed: seeds the noise start.
    styles: the style images this member matches (their keys: paths, or
      names given to in-memory images), blended by `style_blend_weights`
      when they are the config's own styles, else equally.
    content_layer_weights, style_layer_weights: one weight per configured
      layer, or None for 1/|L| each.
    label: the grid's text under this member's panel ('' for none).
    varied: ((field, value), ...) what this member changes from the config.
  """
  content_weight: float
  style_weight: float
  tv_weight: float
  seed: int
  styles: tuple
  content_layer_weights: Optional[tuple] = None
  style_layer_weights: Optional[tuple] = None
  label: str = ''
  varied: tuple = ()

  @property
  def values(self) -> dict:
    """`varied` as a dict (the manifest's `values`)."""
    return dict(self.varied)


def short_value(value) -> str:
  """A sweep value as a grid label: 3 significant digits, a file's stem."""
  if isinstance(value, str):
    return os.path.splitext(os.path.basename(value))[0] or value
  if isinstance(value, float):
    return f'{value:.3g}'
  return str(value)


def _label(varied) -> str:
  return ', '.join(f'{field}={short_value(value)}' for field, value in varied)


def _combinations(settings: settings_lib.Settings) -> list:
  """The value tuples of `settings.sweep`, one per member ([()] without a
  sweep): every combination with `sweep_product` (the first field varying
  slowest), else the fields' values side by side (equal lengths, which
  `settings.check` ensures)."""
  lists = [values for _, values in settings.sweep]
  if settings.sweep_product:
    return list(itertools.product(*lists))
  return list(zip(*lists)) or [()]


def sweep_members(settings: settings_lib.Settings, overrides=None) -> list:
  """The runs of a sweep, as `Member`s (one member without a sweep).

  Each member takes the config's own settings, changed by one combination
  of the sweep's values (`Settings.sweep`): `sweep.style` sets the
  member's one style image, the other fields their own values.

  Args:
    settings: `settings.check(config)`.
    overrides: None, or (from Python, see `run.run`) what replaces the
      sweep: one dict of member settings each, with any of the `Member`
      fields but `varied` (which the overrides themselves become).
  Returns:
    A list of `Member`.
  Raises:
    UserError: an override with an unknown key or the wrong number of
      layer weights.
  """
  if overrides is not None:
    return [_member_from_overrides(settings, o) for o in overrides]
  fields = [field for field, _ in settings.sweep]
  base = _base_member(settings)
  members = []
  for combination in _combinations(settings):
    changes, varied = {}, []
    for field, value in zip(fields, combination):
      if field == 'style':
        changes['styles'] = (value,)
      else:
        changes[field] = value
      varied.append((field, value))
    members.append(dataclasses.replace(base, **changes, varied=tuple(varied),
                                       label=_label(varied)))
  return members


def grid_columns(settings: settings_lib.Settings) -> Optional[int]:
  """Columns of a sweep's grid: with `sweep.product`, the combinations of
  all fields but the first (its values are the rows); else automatic."""
  if not settings.sweep_product or len(settings.sweep) < 2:
    return None
  return math.prod(len(values) for _, values in settings.sweep[1:])


def _base_member(settings: settings_lib.Settings) -> Member:
  """A member with the config's own settings (what a sweep varies from)."""
  return Member(content_weight=settings.content_weight,
                style_weight=settings.style_weight,
                tv_weight=settings.tv_weight, seed=settings.seed,
                styles=settings.styles,
                style_layer_weights=settings.style_layer_weights,
                content_layer_weights=settings.content_layer_weights)


_MEMBER_KEYS = ('content_weight', 'style_weight', 'tv_weight', 'seed',
                'styles', 'content_layer_weights', 'style_layer_weights',
                'label')


def _member_from_overrides(settings: settings_lib.Settings,
                           override: dict) -> Member:
  """The member one override dict of `sweep_members` describes."""
  unknown = set(override) - set(_MEMBER_KEYS)
  if unknown:
    raise UserError(f'members: unknown keys {sorted(unknown)}; valid are '
                    + ', '.join(_MEMBER_KEYS))
  changes = {}
  for key, value in override.items():
    if key in ('content_layer_weights', 'style_layer_weights'):
      layers = (settings.spec.content_layers if key.startswith('content')
                else settings.spec.style_layers)
      if value is not None and len(value) != len(layers):
        raise UserError(f'members: {key} has {len(value)} weights for '
                        f'{len(layers)} layers')
      value = None if value is None else tuple(float(v) for v in value)
    elif key == 'styles':
      value = tuple(value)
    elif key == 'label':
      value = value or ''
    changes[key] = value
  varied = tuple((k, v) for k, v in changes.items() if k != 'label')
  changes['label'] = changes.get('label') or _label(varied)
  return dataclasses.replace(_base_member(settings), **changes,
                             varied=varied)
