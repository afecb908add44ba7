"""settings.check on configs, without running: every bad value is one line
naming its field, the defaults are configs/default.py's, nothing is
written for a refused config."""

import copy
import math
import os

import numpy as np
import pytest

from nst_jax.core import optimizers
from nst_jax.engine import settings as settings_lib
from nst_jax.configs import default
from nst_jax.errors import UserError


def config_for(**fields):
  """The default config with in-memory-style inputs (check(from_files=False))
  and `fields` set; dotted names set a group's field."""
  config = default.get_config().to_dict()
  config.update(content='builtin:scene', style='builtin:painting')
  for name, value in fields.items():
    _set(config, name, value)
  return config


def video_config(tmp_path, **fields):
  """A config whose content is a video (check reads no file)."""
  return config_for(**dict(dict(content=str(tmp_path / 'clip.mp4'),
                                output=str(tmp_path / 'out' / 'clip.mp4')),
                           **fields))


def _set(config, name, value):
  *groups, leaf = name.split('.')
  for group in groups:
    config = config[group]
  config[leaf] = value


def _delete(config, name):
  *groups, leaf = name.split('.')
  for group in groups:
    config = config[group]
  del config[leaf]


def _leaf_fields(config, prefix=''):
  for name, value in config.items():
    if isinstance(value, dict):
      yield from _leaf_fields(value, f'{prefix}{name}.')
    else:
      yield prefix + name


def refused(config, match, from_files=False) -> str:
  """The one-line message `check` refuses `config` with."""
  with pytest.raises(UserError, match=match) as error:
    settings_lib.check(config, from_files=from_files)
  message = str(error.value)
  assert '\n' not in message
  return message


# ---------------------------------------------------------------------------
# Defaults: configs/default.py's, and only there.

def test_default_config_gives_the_documented_settings():
  settings = settings_lib.check(config_for(), from_files=False)
  expected = dict(
      content='builtin:scene', styles=('builtin:painting',),
      style_blend_weights=(1.0,), output='out/result.png',
      manifest='out/result.json', weights='auto', image_size=512,
      style_scale=1.0, content_layer_weights=None, style_layer_weights=None,
      content_weight=1.0, style_weight=1e-3, tv_weight=0.0,
      optimizer='lbfgs', learning_rate=optimizers.DEFAULT_LEARNING_RATES[
          'lbfgs'], iterations=500, stop_loss=-math.inf, tolerance=0.0,
      init='noise', init_image='', seed=0, save_every=0, log_every=10,
      checkpoint_every=100, resume='auto', compilation_cache='auto', max_memory_gb=0.0, sweep_mode='auto',
      coarse_to_fine=0, coarse_iterations=100, shard_rows=False,
      lbfgs_memory=optimizers.LBFGS_MEMORY,
      lbfgs_pyramid=optimizers.LBFGS_PYRAMID,
      lbfgs_first_step=optimizers.LBFGS_FIRST_STEP, distributed=False,
      conv_algorithm='auto', sweep=(), sweep_product=False,
      color_control='none', match_luminance=True, color_transform='pca',
      content_masks=(), style_masks=(), region_weights=(),
      sliced_redraw=False, allow_random_weights=False, video=None,
      warnings=())
  assert {name: getattr(settings, name) for name in expected} == expected
  spec = settings.spec
  assert (spec.content_layers, spec.style_layers) == (
      ('conv4_2',), ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1'))
  assert (spec.normalization, spec.pooling, spec.dtype, spec.padding,
          spec.style_loss, spec.regions, spec.sliced_redraw,
          spec.row_strips) == ('invariant', 'avg', 'float32', 'zeros', 'gram',
                               0, False, 0)


def test_default_video_settings(tmp_path):
  video = settings_lib.check(video_config(tmp_path)).video
  assert video == settings_lib.VideoSettings(
      temporal_weight=0.3, temporal_blur=1.0, flow='dis', init='warped',
      long_term=(1,), first_iterations=0, warp='bicubic', fill='noise',
      mode='sequential',
      window=4, fps=0.0)


def test_a_config_lacking_a_field_is_refused_by_name(tmp_path):
  """Every field of configs/default.py is read from the config (none has a
  second default in the code); the video fields for a video content."""
  base = video_config(tmp_path, style=str(tmp_path / 'style.png'))
  fields = list(_leaf_fields(base))
  assert len(fields) > 60 and 'video.window' in fields
  for field in fields:
    config = copy.deepcopy(base)
    _delete(config, field)
    refused(config, rf'^config\.{field}: missing; a config needs every '
            'field of configs/default.py$', from_files=True)
  assert not os.path.exists(tmp_path / 'out')
  assert settings_lib.check(base).video is not None


def test_an_image_content_needs_no_video_fields():
  config = config_for()
  del config['video']
  assert settings_lib.check(config, from_files=False).video is None


def test_a_group_that_is_not_a_dict_is_refused():
  refused(config_for(sweep=None), r'^config.sweep: expected a dict of fields')


def test_dicts_and_config_dicts_check_alike():
  config = default.get_config()
  config.content, config.style = 'builtin:scene', 'builtin:painting'
  config.sweep.style_weight = (1e-3, 1e-2)
  assert settings_lib.check(config, from_files=False) == settings_lib.check(
      config.to_dict(), from_files=False)


# ---------------------------------------------------------------------------
# One line per bad value, naming the field.

@pytest.mark.parametrize('field, value, match', [
    # Choices.
    ('content_layers', 'conv9_1', r'config.content_layers: .*conv4_2'),
    ('style_layers', 'conv1_1,fc7', r'config.style_layers: .*fc7'),
    ('optimizer', 'rmsprop', r"config.optimizer: unknown 'rmsprop'; valid "
     'are lbfgs, lbfgs_nols, adam, sgd$'),
    ('pooling', 'min', r'config.pooling: .*avg, max'),
    ('padding', 'wrap', r'config.padding: .*zeros, reflect, replicate'),
    ('init', 'zeros', r'config.init: .*noise, content, style, image'),
    ('loss_normalization', 'mean', r'config.loss_normalization: .*paper'),
    ('style_loss', 'l1', r'config.style_loss: .*gram, mean_std'),
    ('dtype', 'int8', r'config.dtype: .*float32'),
    ('dtype', 'float16', r'config.dtype: unknown .*bfloat16$'),
    ('conv_algorithm', 'fft', r'config.conv_algorithm: .*winograd'),
    ('color_control', 'sepia', r'config.color_control: .*luminance'),
    ('color_transform', 'lab', r'config.color_transform: .*cholesky'),
    ('sweep.mode', 'pmap', r'config.sweep.mode: unknown .*auto, '),
    # Numbers.
    ('image_size', 0, r'config.image_size: must be > 0'),
    ('image_size', -5, r'config.image_size: must be > 0'),
    ('image_size', 'big', r"config.image_size: must be an integer, got 'big'"),
    ('image_size', 32.5, r'config.image_size: must be an integer'),
    ('iterations', -1, r'config.iterations: must be >= 0'),
    ('learning_rate', -1.0, r'config.learning_rate: must be >= 0'),
    ('style_weight', -1.0, r'config.style_weight: must be >= 0'),
    ('style_weight', float('nan'), r'config.style_weight: must be a number, '
     'got nan'),
    ('content_weight', -1.0, r'config.content_weight: must be >= 0'),
    ('tv_weight', -1.0, r'config.tv_weight: must be >= 0'),
    ('style_scale', 0.0, r'config.style_scale: must be > 0'),
    ('log_every', 0, r'config.log_every: must be > 0'),
    ('save_every', -1, r'config.save_every: must be >= 0'),
    ('checkpoint_every', -1, r'config.checkpoint_every: must be >= 0'),
    ('checkpoint_every', 2.5, r'config.checkpoint_every: must be an integer'),
    ('resume', 'yes', r"config.resume: unknown 'yes'; valid are auto, never"),
    ('seed', 1.5, r'config.seed: must be an integer'),
    ('tolerance', -0.1, r'config.tolerance: must be >= 0'),
    ('stop_loss', float('nan'), r'config.stop_loss: must be a number, got '
     'nan'),
    ('stop_loss', 'low', r'config.stop_loss: must be a number'),
    ('max_memory_gb', -1.0, r'config.max_memory_gb: must be >= 0'),
    ('coarse_to_fine', -1, r'config.coarse_to_fine: must be >= 0'),
    ('coarse_iterations', -1, r'config.coarse_iterations: must be >= 0'),
    ('row_strips', -1, r'config.row_strips: must be >= 0'),
    ('lbfgs_memory', 0, r'config.lbfgs_memory: must be > 0'),
    ('lbfgs_pyramid', 0, r'config.lbfgs_pyramid: must be > 0'),
    ('lbfgs_first_step', -1.0, r'config.lbfgs_first_step: must be >= 0'),
    ('lbfgs_first_step', float('inf'),
     r'config.lbfgs_first_step: must be finite'),
    # Flags.
    ('shard_rows', 'yes', r"config.shard_rows: must be True or False, got "
     "'yes'"),
    ('distributed', 'yes', r'config.distributed: must be True or False'),
    ('match_luminance', 2, r'config.match_luminance: must be True or False'),
    ('sliced_redraw', 'no', r'config.sliced_redraw: must be True or False'),
    ('allow_random_weights', 'yes',
     r'config.allow_random_weights: must be True or False'),
    ('sweep.product', 'yes', r'config.sweep.product: must be True or False'),
    # Lists.
    ('style_blend_weights', '1,2', r'config.style_blend_weights: 2 weights '
     'for 1 style'),
    ('style_blend_weights', '-1', r'config.style_blend_weights: must be >= 0 '
     'with a positive sum'),
    ('style_blend_weights', 'a', r'config.style_blend_weights: expected '
     'numbers separated by commas'),
    ('style_layer_weights', '1,2', r'config.style_layer_weights: 2 weights '
     'for 5 layers'),
    ('style_layer_weights', '1,1,1,1,-1', r'config.style_layer_weights: '
     'weights must be finite and >= 0'),
    ('style_masks', 'm.png', r'config.style_masks: needs config.'
     'content_masks'),
    ('region_weights', '1', r'config.region_weights: needs config.'
     'content_masks'),
    ('content_masks', 'a.png,b.png', r'config.content_masks: 2 masks for 1 '
     'style images'),
    # Sweeps.
    ('sweep.style_weight', (1e-3, -1.0), r'config.sweep.style_weight: must '
     'be >= 0, got -1.0'),
    ('sweep.seed', (1, 2.5), r'config.sweep.seed: must be an integer'),
    ('sweep.tv_weight', 3, r'config.sweep.tv_weight: expected a list of '
     'values, got 3'),
])
def test_bad_field(field, value, match):
  message = refused(config_for(**{field: value}), match)
  assert message.startswith(f'config.{field}: ')


@pytest.mark.parametrize('fields, match', [
    (dict(content_layers='', style_layers=''),
     r'^config.style_layers: no content or style layers given'),
    (dict(init='image'),
     r"^config.init_image: required when config.init='image'"),
    (dict(sliced_redraw=True),
     r"^config.sliced_redraw: only with config.style_loss="),
    (dict(sliced_redraw=True, style_loss='sliced_wasserstein'),
     r'^config.sliced_redraw: needs optimizer adam or sgd'),
    (dict(row_strips=2, shard_rows=True), r'^config.row_strips: not with '
     'shard_rows'),
    (dict(row_strips=2, style_loss='mean_std'),
     r"^config.row_strips: strips need style_loss='gram'"),
    (dict(style='a.png,b.png', content_masks='a.png,b.png',
          region_weights='1'),
     r'^config.region_weights: 1 weights for 2 regions'),
    (dict(style='a.png,b.png', content_masks='a.png,b.png',
          region_weights='0,0'),
     r'^config.region_weights: must be finite and >= 0 with a positive sum'),
    (dict(style='a.png,b.png', content_masks='a.png,b.png',
          style_masks='a.png'), r'^config.style_masks: 1 masks for 2 style'),
    (dict(style='a.png,b.png', content_masks='a.png,b.png',
          style_loss='sliced_wasserstein'), r'^config.content_masks: not '
     "with style_loss='sliced_wasserstein'"),
    (dict(content_masks='a.png', **{'sweep.style': 'a.png,b.png'}),
     r'^config.content_masks: not with config.sweep.style'),
    ({'sweep.content_weight': (1.0, 2.0),
      'sweep.style_weight': (1e-3, 1e-2, 0.1)},
     r'^config.sweep: fields that vary together need equal lengths \(or set '
     r'config.sweep.product=True\), got content_weight=2, style_weight=3$'),
])
def test_fields_that_do_not_combine(fields, match):
  refused(config_for(**fields), match)


@pytest.mark.parametrize('fields, match', [
    ({'video.flow': 'deepflow'}, r"^config.video.flow: unknown 'deepflow'; "
     'valid are dis, farneback, none$'),
    ({'video.init': 'style'}, r'^config.video.init: .*warped'),
    ({'video.mode': 'parallel'}, r'^config.video.mode: .*joint'),
    ({'video.temporal_weight': -1.0},
     r'^config.video.temporal_weight: must be >= 0'),
    ({'video.temporal_weight': 'strong'},
     r'^config.video.temporal_weight: must be a number'),
    ({'video.first_iterations': 1.5},
     r'^config.video.first_iterations: must be an integer'),
    ({'video.window': 1}, r'^config.video.window: must be >= 2'),
    ({'video.fps': float('nan')}, r'^config.video.fps: must be a number, got '
     'nan'),
    ({'video.long_term': (0, 10)},
     r'^config.video.long_term: offsets must be >= 1'),
    ({'video.long_term': (10, 20)}, r'^config.video.long_term: must include '
     '1'),
    ({'video.long_term': 'a,b'}, r'^config.video.long_term: frame offsets '
     'like'),
    ({'video.mode': 'joint', 'video.long_term': (1, 10)},
     r"^config.video.long_term: video.mode='joint' couples"),
    ({'sweep.style_weight': (1.0, 2.0)}, r'^config.sweep: a video run'),
    ({'coarse_to_fine': 1}, r'^config.coarse_to_fine: not with a video'),
    ({'shard_rows': True}, r'^config.shard_rows: not with a video'),
    ({'output': 'clip.png'}, r'^config.output: .*video extension'),
])
def test_bad_video_field(tmp_path, fields, match):
  refused(video_config(tmp_path, **fields), match, from_files=True)
  assert not os.path.exists(tmp_path / 'out')


def test_the_video_fields_are_only_checked_for_a_video_content():
  config = config_for(**{'video.flow': 'deepflow', 'video.window': 1})
  assert settings_lib.check(config, from_files=False).video is None


# ---------------------------------------------------------------------------
# Paths and the output.

@pytest.mark.parametrize('field', ['content', 'style', 'output'])
def test_paths_are_required_from_files(field):
  refused(config_for(**{field: ''}), rf'^config.{field}: required \(e.g. '
          rf'--config.{field}=path\)$', from_files=True)


def test_paths_may_be_empty_for_images_in_memory():
  settings = settings_lib.check(config_for(content='', style='', output=''),
                                from_files=False)
  assert (settings.content, settings.styles, settings.manifest) == ('', (),
                                                                    '')


def test_output_is_checked_and_its_folder_made(tmp_path):
  output = tmp_path / 'new' / 'result.png'
  settings = settings_lib.check(config_for(output=str(output)))
  assert settings.manifest == str(tmp_path / 'new' / 'result.json')
  assert os.path.isdir(tmp_path / 'new')
  refused(config_for(output=str(tmp_path / 'r.txt')),
          r'^config.output: .* needs an image extension', from_files=True)
  (tmp_path / 'dir.png').mkdir()
  refused(config_for(output=str(tmp_path / 'dir.png')),
          r'^config.output: .* is a directory', from_files=True)
  content = str(tmp_path / 'c.png')
  refused(config_for(content=content, output=content),
          r'^config.output: .* would overwrite the input', from_files=True)
  refused(config_for(output=str(tmp_path / 'r.png'),
                     init='image', init_image=str(tmp_path / 'r.json')),
          r'would overwrite the input', from_files=True)


def test_a_sweeps_styles_are_inputs_too(tmp_path):
  output = str(tmp_path / 'r.png')
  refused(config_for(output=output, **{'sweep.style': f'a.png,{output}'}),
          r'^config.output: .* would overwrite the input', from_files=True)


def test_a_refused_config_makes_no_folder(tmp_path):
  refused(config_for(output=str(tmp_path / 'out' / 'r.png'),
                     style_loss='l1'), r'^config.style_loss: ',
          from_files=True)
  refused(config_for(output=str(tmp_path / 'out' / 'r.png'),
                     lbfgs_memory=0), r'^config.lbfgs_memory: ',
          from_files=True)
  assert not os.path.exists(tmp_path / 'out')


# ---------------------------------------------------------------------------
# What the checked values become.

def test_learning_rate_zero_is_the_optimizers_default():
  for optimizer, rate in optimizers.DEFAULT_LEARNING_RATES.items():
    settings = settings_lib.check(config_for(optimizer=optimizer),
                                  from_files=False)
    assert settings.learning_rate == rate
  assert settings_lib.check(config_for(learning_rate=0.5),
                            from_files=False).learning_rate == 0.5


def test_lists_and_weights():
  settings = settings_lib.check(config_for(
      style='a.png, b.png', style_blend_weights='3,1',
      content_layers='conv4_2', style_layers='conv1_1,conv2_1',
      style_layer_weights=(1, 0), content_masks='m1.png,m2.png',
      region_weights='1,3'), from_files=False)
  assert settings.styles == ('a.png', 'b.png')
  assert settings.style_blend_weights == (3.0, 1.0)
  assert settings.style_layer_weights == (1.0, 0.0)
  assert settings.content_masks == ('m1.png', 'm2.png')
  assert settings.region_weights == (0.25, 0.75)
  assert settings.spec.regions == 2
  equal = settings_lib.check(config_for(
      style='a.png,b.png', content_masks='m1.png,m2.png'), from_files=False)
  assert equal.region_weights == (0.5, 0.5)
  assert equal.style_blend_weights == (1.0, 1.0)


def test_flags_take_booleans_and_zero_or_one():
  for value, expected in ((True, True), (np.bool_(True), True), (0, False),
                          (1, True)):
    assert settings_lib.check(config_for(shard_rows=value),
                              from_files=False).shard_rows is expected


def test_init_image_without_init_image_is_a_warning():
  settings = settings_lib.check(config_for(init_image='start.png'),
                                from_files=False)
  assert settings.init_image == 'start.png'
  (warning,) = settings.warnings
  assert warning.startswith("config.init_image is ignored: config.init is "
                            "'noise'")


def test_sweep_values_are_checked_into_settings():
  settings = settings_lib.check(config_for(**{
      'sweep.style_weight': '1e-3, 1e-2', 'sweep.seed': (1.0, 2),
      'sweep.style': 'a.png,b.png'}), from_files=False)
  assert settings.sweep == (('style_weight', (1e-3, 1e-2)), ('seed', (1, 2)),
                            ('style', ('a.png', 'b.png')))
  assert all(isinstance(seed, int) for seed in settings.sweep[1][1])
