"""Tests for nst_jax.io.grids: the labelled figure grids."""

import numpy as np
import pytest

from nst_jax.io import grids


def test_make_grid_size_and_placement():
  red = np.zeros((10, 20, 3), np.float32)
  red[..., 0] = 255
  blue = np.zeros((16, 8, 3), np.float32)
  blue[..., 2] = 255
  grid = grids.make_grid([red, blue, red], columns=2, pad=4)
  # Cells are 20 wide and 16 high: 4 + 2 * (20 + 4) by 4 + 2 * (16 + 4);
  # smaller images are centred in their cells, with white around them.
  assert grid.shape == (44, 52, 3) and grid.dtype == np.float32
  np.testing.assert_array_equal(grid[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(grid[4 + 8, 4 + 10], [255, 0, 0])
  np.testing.assert_array_equal(grid[4 + 8, 28 + 10], [0, 0, 255])
  np.testing.assert_array_equal(grid[4 + 8, 28 + 2], [255, 255, 255])
  np.testing.assert_array_equal(grid[24 + 8, 4 + 10], [255, 0, 0])
  np.testing.assert_array_equal(grid[24 + 1, 4 + 10], [255, 255, 255])
  np.testing.assert_array_equal(grid[24 + 8, 28 + 10], [255, 255, 255])


def test_make_grid_labels_add_space_and_ink():
  tiles = [np.full((32, 32, 3), 255.0)] * 4
  plain = grids.make_grid(tiles, columns=2)
  labelled = grids.make_grid(tiles, labels=['a', 'b', 'c', 'd'],
                             row_labels=['row 1', 'row 2'],
                             column_labels=['left', 'right'])
  assert plain.min() == 255  # White tiles on white: no ink at all.
  assert labelled.shape[0] > plain.shape[0] + 20
  assert labelled.shape[1] > plain.shape[1]
  assert (labelled < 128).any()  # Text was drawn.


def test_make_grid_checks_label_counts():
  tiles = [np.zeros((4, 4, 3))] * 3
  with pytest.raises(ValueError):
    grids.make_grid(tiles, labels=['only one'])
  with pytest.raises(ValueError):
    grids.make_grid(tiles, columns=3, row_labels=['a', 'b'])
