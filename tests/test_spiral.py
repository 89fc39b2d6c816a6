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


# --- independent steps: the dependency DAG and its wavefront schedule ---------------------------
def test_dependencies_by_hand_neighbours_and_distance():
  # n = 4 blocks in a 12 x 12 region: (0, 0); its right neighbour; its diagonal neighbour;
  # a block one block-width further right; a block far away.
  offsets = np.asarray([[0, 0], [0, 4], [4, 4], [0, 8], [8, 0]])
  deps = spiral.step_dependencies(offsets, (12, 12), n=4, radius=1)
  expected = np.zeros((5, 5), bool)
  expected[1, 0] = True  # side by side: each window reaches 1 px into the other block.
  expected[2, 0] = expected[2, 1] = True  # diagonal (0,0)-(4,4) corners touch within r = 1.
  expected[3, 1] = expected[3, 2] = True  # (0,8) neighbours (0,4) and, diagonally, (4,4).
  # (0,8) vs (0,0): 4 px apart, r = 1 does not bridge them; (8,0) only touches (4,4).
  expected[4, 2] = True
  np.testing.assert_array_equal(deps, expected)


@pytest.mark.parametrize("radius,dependent", [(0, False), (4, False), (5, True)])
def test_gap_of_one_block_is_bridged_only_when_radius_exceeds_it(radius, dependent):
  # Blocks (0, 0) and (0, 8), n = 4: a 4-px gap; the window reaches cols >= 8 - r.
  deps = spiral.step_dependencies(np.asarray([[0, 0], [0, 8]]), (4, 12), n=4, radius=radius)
  assert deps[1, 0] == dependent and not deps[0, 1]


def test_radius_zero_keeps_only_overlapping_blocks_ordered():
  offsets = spiral.spiral_offsets((20, 20), 4)  # a tiling: no two blocks overlap.
  assert not spiral.step_dependencies(offsets, (20, 20), 4, 0).any()


def test_pixels_outside_the_region_are_never_written():
  # Block 0 at (-4, 0) lies wholly above a 4 x 4 region: it writes nothing, so nothing depends
  # on it even though block 1's window (r = 2) reaches into it.
  deps = spiral.step_dependencies(np.asarray([[-4, 0], [0, 0]]), (4, 4), n=4, radius=2)
  assert not deps.any()
  # Partly inside (rows 0..1 written): now ordered.
  deps = spiral.step_dependencies(np.asarray([[-2, 0], [2, 0]]), (4, 4), n=4, radius=1)
  assert deps[1, 0]


def test_dependencies_are_symmetric_conflicts_below_the_diagonal():
  offsets = spiral.spiral_offsets((33, 17), 4)
  deps = spiral.step_dependencies(offsets, (33, 17), 4, 3)
  assert not np.triu(deps).any()
  # Brute force: order matters iff some pixel one step writes lies within r of the other's block.
  for j in range(len(offsets)):
    for i in range(j):
      conflict = False
      for a, b in ((i, j), (j, i)):
        written = np.zeros((33, 17), bool)
        y, x = offsets[a]
        written[max(y, 0):max(y + 4, 0), max(x, 0):max(x + 4, 0)] = True
        y, x = offsets[b] - 3
        conflict |= written[max(y, 0):max(y + 10, 0), max(x, 0):max(x + 10, 0)].any()
      assert deps[j, i] == conflict, (i, j)


def test_schedule_of_a_chain_and_of_independent_steps():
  chain = np.tril(np.ones((4, 4), bool), k=-1) & ~np.tril(np.ones((4, 4), bool), k=-2)
  assert spiral.wavefront_schedule(chain) == ((0,), (1,), (2,), (3,))
  assert spiral.wavefront_schedule(np.zeros((3, 3), bool)) == ((0, 1, 2),)
  diamond = np.zeros((4, 4), bool)
  diamond[1, 0] = diamond[2, 0] = diamond[3, 1] = diamond[3, 2] = True
  assert spiral.wavefront_schedule(diamond) == ((0,), (1, 2), (3,))


def test_schedule_rejects_forward_edges():
  with pytest.raises(ValueError):
    spiral.wavefront_schedule(np.asarray([[False, True], [False, False]]))


@pytest.mark.parametrize("region_shape,n,radius", [((52, 58), 8, 6), ((52, 58), 8, 10),
                                                   ((20, 22), 4, 2), ((33, 17), 4, 6)])
def test_schedule_is_a_valid_asap_order(region_shape, n, radius):
  offsets = spiral.spiral_offsets(region_shape, n)
  deps = spiral.step_dependencies(offsets, region_shape, n, radius)
  schedule = spiral.wavefront_schedule(deps)
  assert sorted(k for level in schedule for k in level) == list(range(len(offsets)))
  level_of = {k: v for v, level in enumerate(schedule) for k in level}
  for j, i in zip(*np.nonzero(deps)):
    assert level_of[i] < level_of[j]
  for v, level in enumerate(schedule[1:], start=1):
    for j in level:  # ASAP: something in the previous level holds j back.
      assert any(level_of[i] == v - 1 for i in np.flatnonzero(deps[j]))


def test_consecutive_spiral_blocks_are_adjacent_except_one_jump():
  # Why the spiral barely parallelises: each step neighbours the one before, except the jump
  # from the top-right corner (step 48) to the unvisited left column (step 49).
  offsets = spiral.spiral_offsets((52, 58), 8)
  jumps = np.abs(np.diff(offsets, axis=0)).max(axis=1)
  assert np.flatnonzero(jumps != 8).tolist() == [48]


def test_default_geometry_critical_path_is_49_of_56():
  # r = 6 (K = 2 skip modules): steps 0..48 form one chain; the left column (steps 49..55)
  # can run beside steps 32..38, each pair in one level.
  offsets = spiral.spiral_offsets((52, 58), 8)
  schedule = spiral.wavefront_schedule(
      spiral.step_dependencies(offsets, (52, 58), 8, spiral.receptive_radius(2)))
  assert len(schedule) == 49
  assert schedule[32:39] == tuple((32 + k, 49 + k) for k in range(7))
  assert all(len(level) == 1 for level in schedule[:32] + schedule[39:])


def test_the_thesis_spiral_visits_five_rings_of_blocks_one_after_another():
  offsets = spiral.spiral_offsets((52, 58), 8)
  rings = spiral.spiral_rings(offsets, 8)
  # The centre block, the 8 around it, then 16 and 24; the 7 x 8 grid leaves one column of 7.
  assert np.bincount(rings).tolist() == [1, 8, 16, 24, 7]
  assert spiral.ring_ends(offsets, 8).tolist() == [1, 9, 25, 49, 56]
  pixels = spiral.pixel_rings(offsets, (52, 58), 8)
  assert pixels.min() == 0  # Every pixel is written by some block.
  assert pixels[26, 29] == 0 and pixels[0, 0] == 4 and pixels[0, 57] == 3 and pixels[51, 5] == 3
  assert (pixels == 0).sum() == 64 and (pixels == 4).sum() == 52 * 5


def test_a_spiral_that_leaves_a_ring_before_it_is_done_is_refused():
  with pytest.raises(ValueError, match="ring by ring"):
    spiral.spiral_rings(np.asarray([[0, 0], [8, 8], [0, 16], [0, 8]]), 8)
