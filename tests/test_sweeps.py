"""Sweeps: the members a checked config's sweep lists (or per-member
overrides) make, their labels and the grid's columns."""

import pytest

from nst_jax.engine import settings as settings_lib, sweeps
from nst_jax.configs import default
from nst_jax.errors import UserError


def checked(**sweep):
  """The settings of the default config with `config.sweep` fields set."""
  config = default.get_config()
  config.content, config.style = 'builtin:scene', 'builtin:painting'
  config.content_layers, config.style_layers = 'conv4_2', 'conv1_1,conv2_1'
  for field, values in sweep.items():
    config.sweep[field] = values
  return settings_lib.check(config, from_files=False)


def test_sweep_fields_are_the_configs():
  fields = set(default.get_config().sweep) - {'product', 'mode'}
  assert set(sweeps.SWEEP_FIELDS) == fields


def test_without_a_sweep_one_member_with_the_configs_settings():
  settings = checked()
  (member,) = sweeps.sweep_members(settings)
  assert member == sweeps.Member(
      content_weight=settings.content_weight,
      style_weight=settings.style_weight, tv_weight=settings.tv_weight,
      seed=settings.seed, styles=('builtin:painting',))
  assert (member.label, member.varied, member.values) == ('', (), {})
  assert sweeps.grid_columns(settings) is None


def test_fields_given_together_vary_together():
  members = sweeps.sweep_members(checked(style_weight=(1e-3, 1e-2),
                                         seed=(3, 4)))
  assert [(m.style_weight, m.seed) for m in members] == [(1e-3, 3),
                                                         (1e-2, 4)]
  assert [m.content_weight for m in members] == [1.0, 1.0]
  assert members[0].label == 'style_weight=0.001, seed=3'
  assert members[1].values == {'style_weight': 1e-2, 'seed': 4}
  assert sweeps.grid_columns(checked(style_weight=(1e-3, 1e-2),
                                     seed=(3, 4))) is None


def test_product_is_every_combination_the_first_field_slowest():
  settings = checked(content_weight=(1.0, 2.0),
                     style_weight=(1e-3, 1e-2, 0.1), product=True)
  members = sweeps.sweep_members(settings)
  assert [(m.content_weight, m.style_weight) for m in members] == [
      (1.0, 1e-3), (1.0, 1e-2), (1.0, 0.1), (2.0, 1e-3), (2.0, 1e-2),
      (2.0, 0.1)]
  # Rows: the first field's values; columns: the others' combinations.
  assert sweeps.grid_columns(settings) == 3
  assert sweeps.grid_columns(checked(seed=(1, 2), product=True)) is None


def test_style_sweep_sets_each_members_one_style():
  members = sweeps.sweep_members(checked(style='images/a.png, images/b.jpg'))
  assert [m.styles for m in members] == [('images/a.png',), ('images/b.jpg',)]
  assert [m.label for m in members] == ['style=a', 'style=b']


def test_short_value():
  assert sweeps.short_value(0.00123456) == '0.00123'
  assert sweeps.short_value('folder/starry_night.jpg') == 'starry_night'
  assert sweeps.short_value(7) == '7'


def test_overrides_replace_the_sweep():
  settings = checked(style_weight=(1e-3, 1e-2))
  members = sweeps.sweep_members(settings, [
      {'style_weight': 5.0, 'style_layer_weights': (1, 0)},
      {'styles': ['x.png'], 'label': 'x'}])
  assert len(members) == 2
  first, second = members
  assert (first.style_weight, first.style_layer_weights) == (5.0, (1.0, 0.0))
  assert first.varied == (('style_weight', 5.0),
                          ('style_layer_weights', (1.0, 0.0)))
  assert first.label == 'style_weight=5, style_layer_weights=(1.0, 0.0)'
  assert (second.styles, second.label, second.style_weight) == (
      ('x.png',), 'x', settings.style_weight)


@pytest.mark.parametrize('override, match', [
    ({'style_wieght': 1.0}, r"^members: unknown keys \['style_wieght'\]; "
     'valid are content_weight, '),
    ({'style_layer_weights': (1, 1, 1)}, r'^members: style_layer_weights has '
     '3 weights for 2 layers$'),
    ({'content_layer_weights': (1, 1)}, r'^members: content_layer_weights '
     'has 2 weights for 1 layers$'),
])
def test_bad_overrides(override, match):
  with pytest.raises(UserError, match=match):
    sweeps.sweep_members(checked(), [override])
