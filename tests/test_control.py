"""Control over the result: colour modes, regions, style losses, padding."""

import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import run as run_lib
from nst_jax.core import color, losses, objective, vgg
from nst_jax.io import images, scenes
from nst_jax.engine import config_files, inputs, settings as settings_lib

# One VGG block: the runs here compile in a fraction of the full network's
# time.
FIELDS = dict(weights='random', image_size=32, iterations=3, log_every=3,
              optimizer='lbfgs_nols', init='content',
              content_layers='conv1_2', style_layers='conv1_1,conv1_2',
              style_weight=1e-2, compilation_cache='',
              # Direct convolutions compile faster than Winograd's.
              conv_algorithm='direct')
SPEC_LAYERS = dict(content_layers=('conv2_1',),
                   style_layers=('conv1_1', 'conv2_1'))


def _yiq_chroma(pixels):
  pixels = np.asarray(pixels, np.float64)
  i = pixels @ np.array([0.596, -0.274, -0.322])
  q = pixels @ np.array([0.211, -0.523, 0.312])
  return i, q


def _mid_tone_content():
  """The built-in scene squeezed into 64-192: nothing clips when its
  luminance moves a little."""
  return 64 + scenes.demo_content(32) / 2


@pytest.mark.parametrize('mode', ['luminance', 'original_colors'])
def test_colour_modes_keep_the_contents_chroma(mode):
  content = _mid_tone_content()
  plain = nst_jax.stylize(content.astype(np.uint8), 'builtin:painting',
                          **FIELDS)
  result = nst_jax.stylize(content.astype(np.uint8), 'builtin:painting',
                           color_control=mode, **FIELDS)
  i, q = _yiq_chroma(result.image)
  content_i, content_q = _yiq_chroma(content.astype(np.uint8))
  # uint8 rounding of each channel moves I and Q by at most ~0.6.
  assert np.abs(i - content_i).max() < 1.0
  assert np.abs(q - content_q).max() < 1.0
  assert np.abs(_yiq_chroma(plain.image)[0] - content_i).max() > 2.0
  # The luminance did change.
  assert np.abs(color.luminance(result.image.astype(np.float64))
                - color.luminance(content)).max() > 2.0


def test_original_colors_on_numbered_saves(tmp_path, small_config):
  content = tmp_path / 'content.png'
  images.save_image(content, _mid_tone_content())
  manifest = run_lib.run(small_config(
      tmp_path, content=str(content), color_control='original_colors',
      save_every=3, conv_algorithm='direct'))
  saved = images.load_image(tmp_path / 'out' / 'result_iter0003.png')
  i, _ = _yiq_chroma(saved)
  assert np.abs(i - _yiq_chroma(images.load_image(content))[0]).max() < 1.0
  assert manifest['config']['color_control'] == 'original_colors'


@pytest.mark.parametrize('transform', color.COLOR_TRANSFORMS)
def test_histogram_mode_recolours_the_styles_the_network_sees(transform):
  config = config_files.make_config(None, dict(
      FIELDS, color_control='histogram', color_transform=transform))
  config.content, config.style = 'builtin:scene', 'builtin:painting'
  settings = settings_lib.check(config, from_files=False)
  level = inputs.read_level(settings, 'builtin:scene',
                            {'builtin:painting': 'builtin:painting'}, 32)
  style = level.styles['builtin:painting'].reshape(-1, 3) / 255
  content = level.content.reshape(-1, 3) / 255
  np.testing.assert_allclose(style.mean(0), content.mean(0), atol=0.02)
  np.testing.assert_allclose(np.cov(style.T, bias=True),
                             np.cov(content.T, bias=True), atol=0.01)


# ------------------------------------------------------------- regions


@pytest.fixture(scope='module')
def two_styles():
  """A colourful painting and a dark, smooth one, 32 x 32."""
  painting = scenes.demo_style(32)
  smooth = np.broadcast_to(np.linspace(20, 60, 32)[:, None, None],
                           (32, 32, 3)).astype(np.float32)
  return painting, smooth


@pytest.mark.parametrize('style_loss', ['gram', 'mean_std', 'mean_cov'])
def test_all_ones_mask_gives_the_unmasked_loss(variables, small_images,
                                               style_loss):
  content, style, noise = small_images
  plain = losses.LossSpec(style_loss=style_loss, **SPEC_LAYERS)
  masked = losses.LossSpec(style_loss=style_loss, regions=1, **SPEC_LAYERS)
  values = []
  for spec, masks in ((plain, None), (masked, np.ones((1, 32, 32)))):
    targets = objective.make_targets(variables, content, [style], spec,
                                     content_masks=masks)
    values.append(objective.loss_terms(noise, variables, targets,
                                       losses.loss_weights(spec, 1.0, 1.0),
                                       spec)['style'])
  np.testing.assert_allclose(values[1], values[0], rtol=1e-5)


def test_each_region_takes_its_own_style(variables, two_styles):
  """An image painted on the left and smooth on the right matches the
  masks that put the painting left better than the swapped masks."""
  painting, smooth = two_styles
  pixels = np.concatenate([painting[:, :16], smooth[:, 16:]], axis=1)
  left = np.zeros((32, 32), np.float32)
  left[:, :16] = 1
  spec = losses.LossSpec(regions=2, **SPEC_LAYERS)
  weights = losses.loss_weights(spec, 0.0, 1.0)

  def style_loss(masks):
    targets = objective.make_targets(variables, pixels, [painting, smooth],
                                     spec, content_masks=masks)
    return float(objective.loss_terms(pixels, variables, targets, weights,
                                      spec)['style'])
  matched = style_loss(np.stack([left, 1 - left]))
  swapped = style_loss(np.stack([1 - left, left]))
  assert matched < 0.5 * swapped


def test_layer_masks_follow_the_poolings_and_are_normalised():
  masks = np.zeros((2, 8, 8), np.float32)
  masks[0, :, :4] = 1
  masks[1, 0, 0] = 1  # one pixel: a quarter of one position at conv3_1
  by_layer = losses.layer_masks(masks, ('conv1_1', 'pool1', 'conv3_1'))
  assert by_layer['conv1_1'].shape == (2, 8, 8)
  assert by_layer['pool1'].shape == (2, 4, 4)
  assert by_layer['conv3_1'].shape == (2, 2, 2)
  for t in by_layer.values():
    np.testing.assert_allclose(jnp.mean(jnp.square(t), axis=(1, 2)), 1.0,
                               rtol=1e-5)
  assert np.count_nonzero(by_layer['conv3_1'][1]) == 1
  empty = losses.layer_masks(np.zeros((1, 8, 8)), ('conv1_1',))
  assert not np.any(empty['conv1_1'])


def test_masks_run_end_to_end_and_bad_masks_are_refused(tmp_path,
                                                        two_styles):
  left = np.zeros((32, 32, 3), np.uint8)
  left[:, :16] = 255
  result = nst_jax.stylize('builtin:scene', [two_styles[0].astype(np.uint8),
                                             two_styles[1].astype(np.uint8)],
                           content_masks=[left, 255 - left], **FIELDS)
  assert result.manifest['final']['total'] < result.manifest['initial'][
      'total']
  assert result.manifest['config']['content_masks'] == (
      '<array 32x32x3>,<array 32x32x3>')
  cases = [
      (dict(content_masks=[left]), r'^config.content_masks: 1 masks for 2 '),
      (dict(content_masks=[left[:, :20], left[:, :20]]),
       r'^content mask .*another aspect ratio'),
      (dict(content_masks=[left, left]), r'^config.content_masks: the masks '
       'leave 512 of 1024 pixels uncovered'),
      (dict(content_masks=[left, 255 - left], region_weights='1'),
       r'^config.region_weights: 1 weights for 2 regions'),
      (dict(content_masks=[left, 255 - left],
            style_loss='sliced_wasserstein'), r'^config.content_masks: not '),
  ]
  for fields, match in cases:
    with pytest.raises(nst_jax.UserError, match=match) as error:
      nst_jax.stylize('builtin:scene', ['builtin:painting', 'builtin:scene'],
                      **dict(FIELDS, **fields))
    assert '\n' not in str(error.value)


# ------------------------------------------------------------- style losses


@pytest.mark.parametrize('style_loss', losses.STYLE_LOSSES)
def test_style_loss_is_zero_at_the_style_image_and_falls(variables,
                                                         small_images,
                                                         style_loss):
  content, style, noise = small_images
  style = style[:32, :32]
  spec = losses.LossSpec(style_loss=style_loss, **SPEC_LAYERS)
  targets = objective.make_targets(variables, content, [style], spec)
  weights = losses.loss_weights(spec, 0.0, 1.0)
  at_style = objective.loss_terms(style, variables, targets, weights, spec)
  at_noise = objective.loss_terms(noise, variables, targets, weights, spec)
  assert float(at_style['style']) < 1e-4 * float(at_noise['style'])
  result = nst_jax.stylize(
      content.astype(np.uint8), style.astype(np.uint8),
      **dict(FIELDS, style_loss=style_loss, init='noise', iterations=6,
             content_weight=0.0, style_weight=1.0))
  manifest = result.manifest
  assert manifest['final']['style'] < 0.7 * manifest['initial']['style']


# ------------------------------------------------------------- padding


@pytest.mark.parametrize('padding', ['reflect', 'replicate'])
def test_padding_sees_no_frame_around_a_flat_image(variables, padding):
  """A flat grey image: with zeros beyond the edge the border features
  differ from the interior's (the dark frame); mirrored or repeated edges
  leave every position alike."""
  flat = jnp.full((1, 24, 24, 3), 20.0)
  def features(pad):
    return vgg.extract_features(variables, flat, ('conv2_1',),
                                padding=pad)['conv2_1'][0]
  zeros, other = features('zeros'), features(padding)
  assert float(jnp.abs(zeros[0, 0] - zeros[6, 6]).max()) > 1e-2
  np.testing.assert_allclose(other, jnp.broadcast_to(other[6, 6],
                                                     other.shape), atol=1e-4)


def test_padding_reaches_the_run():
  results = [nst_jax.stylize('builtin:scene', 'builtin:painting',
                             padding=pad, **dict(FIELDS, iterations=0))
             for pad in vgg.PADDINGS]
  totals = [r.manifest['initial']['total'] for r in results]
  assert len(set(totals)) == 3


def test_sliced_redraw_draws_new_directions_every_step(variables,
                                                      small_images):
  content, style, _ = small_images
  spec = losses.LossSpec(style_loss='sliced_wasserstein', sliced_redraw=True,
                         **SPEC_LAYERS)
  targets = objective.make_targets(variables, content, [style], spec, seed=3)
  first, second = (objective.redrawn(targets, spec, step) for step in (1, 2))
  assert not np.allclose(first.directions['conv1_1'],
                         second.directions['conv1_1'])
  again = objective.redrawn(targets, spec, 1)
  np.testing.assert_array_equal(first.directions['conv1_1'],
                                again.directions['conv1_1'])
  fields = dict(FIELDS, style_loss='sliced_wasserstein', optimizer='adam',
                init='noise', iterations=6, content_weight=0.0,
                style_weight=1.0)
  fixed = nst_jax.stylize(content.astype(np.uint8), style.astype(np.uint8),
                          **fields).manifest
  redraw = nst_jax.stylize(content.astype(np.uint8), style.astype(np.uint8),
                           sliced_redraw=True, **fields).manifest
  assert redraw['final']['style'] < 0.7 * redraw['initial']['style']
  assert redraw['final']['style'] != fixed['final']['style']
  with pytest.raises(nst_jax.UserError, match='sliced_redraw: needs'):
    nst_jax.stylize('builtin:scene', 'builtin:painting', **dict(
        fields, optimizer='lbfgs', sliced_redraw=True))


def test_mask_files_from_the_command_lines_config_and_no_recompile(
    tmp_path, small_config):
  """Masks as files through run(config); new masks of the same size are
  new arguments of the same compiled programs."""
  from nst_jax.engine import programs as programs_lib  # pylint: disable=g-import-not-at-top
  paths = {}
  for name, column in (('left', slice(0, 16)), ('right', slice(16, 32))):
    mask = np.zeros((32, 32, 3), np.float32)
    mask[:, column] = 255
    paths[name] = str(tmp_path / f'{name}.png')
    images.save_image(paths[name], mask)
  programs = programs_lib.Programs()
  finals, compiled = [], []
  for masks in ((paths['left'], paths['right']),
                (paths['right'], paths['left'])):
    manifest = run_lib.run(small_config(
        tmp_path / masks[0][-9:-4], style='builtin:painting,builtin:scene',
        content_masks=','.join(masks), region_weights='2,1',
        conv_algorithm='direct'),
                           programs=programs)
    finals.append(manifest['final']['total'])
    compiled.append(programs.compilations)
  assert compiled == [2, 2]  # init and chunk, once
  assert finals[0] != finals[1]
