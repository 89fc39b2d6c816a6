"""Tests for spiralnet_jax.spiral: the pinned spiral of blocks and the step's receptive radius."""

import math

import numpy as np
import pytest

from spiralnet_jax import spiral

SIZES = [((52, 58), 8), ((20, 20), 4), ((33, 17), 4), ((8, 8), 4), ((20, 22), 4), ((5, 3), 4),
         ((1, 1), 8), ((16, 16), 8)]


def _coverage(region_shape, n, offsets):
  count = np.zeros(region_shape, np.int32)
  for y, x in offsets:
    count[max(y, 0):max(y + n, 0), max(x, 0):max(x + n, 0)] += 1
  return count


def test_default_geometry_first_steps_by_hand():
  # design.md: start at (22, 29), then up, left, down, down, right, right, up x3, left x3.
  offsets = spiral.spiral_offsets((52, 58), 8)
  expected = [(22, 29), (14, 29), (14, 21), (22, 21), (30, 21), (30, 29), (30, 37),
              (22, 37), (14, 37), (6, 37), (6, 29), (6, 21), (6, 13)]
  assert offsets.dtype == np.int32
  assert offsets.shape == (56, 2)
  assert [tuple(o) for o in offsets[:len(expected)]] == expected


def test_default_geometry_tiling_origin_and_extent():
  offsets = spiral.spiral_offsets((52, 58), 8)
  # Tile origin (-2, -3): the 7 x 8 tiling overhangs by 2 + 2 rows and 3 + 3 columns.
  assert sorted(set(offsets[:, 0].tolist())) == [-2, 6, 14, 22, 30, 38, 46]
  assert sorted(set(offsets[:, 1].tolist())) == [-3, 5, 13, 21, 29, 37, 45, 53]


@pytest.mark.parametrize("region_shape,n", SIZES)
def test_blocks_cover_every_pixel_exactly_once(region_shape, n):
  offsets = spiral.spiral_offsets(region_shape, n)
  np.testing.assert_array_equal(_coverage(region_shape, n, offsets), 1)
  assert len(offsets) == math.ceil(region_shape[0] / n) * math.ceil(region_shape[1] / n)
  assert len({tuple(o) for o in offsets}) == len(offsets)


@pytest.mark.parametrize("region_shape,n", SIZES)
def test_starts_at_centre_block_then_up_then_left(region_shape, n):
  offsets = spiral.spiral_offsets(region_shape, n)
  centre = np.asarray(region_shape) // 2
  assert np.all(offsets[0] <= centre) and np.all(centre < offsets[0] + n)
  # The second block is n up, the third n left of it (counter-clockwise turn); each exists
  # when the tiling has a block row above the centre block and a block column to its left.
  if offsets[0][0] > 0:
    np.testing.assert_array_equal(offsets[1], offsets[0] + [-n, 0])
    if offsets[0][1] > 0:
      np.testing.assert_array_equal(offsets[2], offsets[0] + [-n, -n])


@pytest.mark.parametrize("region_shape,n", SIZES)
def test_rings_grow_and_tiling_is_centred(region_shape, n):
  offsets = spiral.spiral_offsets(region_shape, n)
  ring = np.abs((offsets - offsets[0]) // n).max(axis=1)
  assert np.all(np.diff(ring) >= 0)
  rows, cols = (math.ceil(s / n) for s in region_shape)
  origin = ((region_shape[0] - n * rows) // 2, (region_shape[1] - n * cols) // 2)
  np.testing.assert_array_equal((offsets - origin) % n, 0)


def test_first_ring_is_counter_clockwise():
  offsets = spiral.spiral_offsets((52, 58), 8)
  steps = ((offsets[1:9] - offsets[0]) // 8).tolist()
  assert steps == [[-1, 0], [-1, -1], [0, -1], [1, -1], [1, 0], [1, 1], [0, 1], [-1, 1]]


def test_small_region_by_hand():
  # 8 x 8, n = 4: a 2 x 2 tiling at (0, 0), centre (4, 4) in block (1, 1).
  offsets = spiral.spiral_offsets((8, 8), 4)
  assert offsets.tolist() == [[4, 4], [0, 4], [0, 0], [4, 0]]


@pytest.mark.parametrize("num_skip_modules", [0, 1, 2, 4, 7])
def test_receptive_radius_counts_3x3_convs(num_skip_modules):
  # design.md: r = number of 3x3 convolutions on the path = 2 + 2K.
  assert spiral.receptive_radius(num_skip_modules) == 2 + 2 * num_skip_modules
  kernels = spiral.step_kernel_sizes(num_skip_modules)
  assert len(kernels) == 3 + 2 * num_skip_modules and kernels[-1] == 1
