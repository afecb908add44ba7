"""Tests for nst_jax.io.scenes: the built-in images drawn by code."""

import numpy as np
import pytest

from nst_jax.io import scenes


@pytest.mark.parametrize('make', [scenes.demo_content, scenes.demo_style])
def test_demo_images_deterministic_and_not_flat(make):
  a = make(64)
  assert a.dtype == np.float32 and a.shape == (64, 64, 3)
  np.testing.assert_array_equal(a, make(64))
  assert a.min() >= 0 and a.max() <= 255
  assert a.std() > 40
  assert make(17).shape == (17, 17, 3)


def test_demo_content_is_a_landscape():
  content = scenes.demo_content(128)
  sky = content[:6].mean(axis=(0, 1))
  grass = content[-20:, :10].mean(axis=(0, 1))
  assert sky[2] > sky[0] + 50          # Blue sky at the top.
  assert grass[1] > grass[0] + 40 and grass[1] > grass[2] + 40  # Green.


def test_demo_style_is_colourful():
  style = scenes.demo_style(128)
  colours = {tuple(c) for c in (style // 32).astype(int).reshape(-1, 3)}
  assert len(colours) > 60
  assert not np.allclose(style, scenes.demo_content(128), atol=30)
