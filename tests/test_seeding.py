"""Tests for spiralnet_jax.seeding: grid cells, score-map peaks, lobes of candidates."""

import numpy as np
import pytest

from spiralnet_jax import regions as regions_lib
from spiralnet_jax import seeding

GEOM = regions_lib.RegionGeometry(height=52, width=58, stride=4, pad=28, score_window=5)


def _disk(shape, centre, radius):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_grid_cells_are_the_passing_cells_in_raster_order():
  scores = np.array([[0.1, 0.5, 0.9], [0.6, 0.4, 0.2]])
  np.testing.assert_array_equal(seeding.grid_cells(scores, 0.4), [[0, 1], [0, 2], [1, 0]])
  assert seeding.grid_cells(scores, 0.95).shape == (0, 2)


def test_peak_cells_one_per_blob_at_its_centre():
  scores = np.zeros((20, 30))
  scores[2:9, 3:10] = 1.0  # A 7×7 blob: its distance transform peaks at the middle cell.
  scores[12:17, 20:25] = 0.8  # A 5×5 blob.
  np.testing.assert_array_equal(seeding.peak_cells(scores, 0.4, 1), [[5, 6], [14, 22]])
  assert seeding.peak_cells(np.zeros((5, 5)), 0.4, 1).shape == (0, 2)


def test_peak_cells_split_a_dumbbell_and_keep_a_plateau_to_one_peak():
  scores = np.zeros((15, 30))
  scores[2:13, 2:13] = 1.0  # Two 11×11 squares joined by a 1-cell-high neck.
  scores[2:13, 16:27] = 1.0
  scores[7, 13:16] = 1.0
  np.testing.assert_array_equal(seeding.peak_cells(scores, 0.4, 2), [[7, 7], [7, 21]])
  # A 2×4 blob is a plateau of equal distances (1); the higher score breaks the tie, and the
  # plateau's far end, 2 cells away, is a second peak only when min_distance allows it.
  plateau = np.zeros((6, 8))
  plateau[2:4, 2:6] = 0.5
  plateau[3, 4] = 0.6
  np.testing.assert_array_equal(seeding.peak_cells(plateau, 0.4, 2), [[3, 4]])
  assert [3, 4] in seeding.peak_cells(plateau, 0.4, 1).tolist()
  assert len(seeding.peak_cells(plateau, 0.4, 1)) > 1


def test_cell_and_centre_origins():
  # Cell (i, j) of the stride-4 grid is the region at padded (4i, 4j): image (4i − 28, 4j − 28).
  np.testing.assert_array_equal(seeding.cell_origins([[0, 0], [3, 5]], GEOM),
                                [[-28, -28], [-16, -8]])
  # A region centred on pixel (y, x) starts at (y − 26, x − 29): its centre pixel is (y, x).
  origins = seeding.centre_origins([[100, 200]], GEOM)
  np.testing.assert_array_equal(origins + np.array(GEOM.centre), [[100, 200]])


def test_lobe_centres_of_two_touching_disks_and_none_of_one():
  one = _disk((40, 60), (20, 20), 9)
  assert seeding.lobe_centres(one, 6, 3.0, 4, 1.0).shape == (0, 2)
  two = one | _disk((40, 60), (20, 36), 9)  # Centres 16 px apart: they overlap by 2 px.
  np.testing.assert_array_equal(np.sort(seeding.lobe_centres(two, 6, 3.0, 4, 1.0), axis=0),
                                [[20, 20], [20, 36]])
  # Lobes closer than min_distance are one; a lobe shallower than min_depth does not count.
  assert seeding.lobe_centres(two, 20, 3.0, 4, 1.0).shape == (0, 2)
  assert seeding.lobe_centres(two, 6, 12.0, 4, 1.0).shape == (0, 2)


def test_a_convex_candidate_gets_no_lobes_under_a_solidity_bound_a_necked_one_does():
  yy, xx = np.mgrid[:40, :90]
  # A stadium (a 50×18 bar with round ends): convex, its distance ridge is flat along the bar.
  stadium = ((np.abs(yy - 20) <= 9) & (np.abs(xx - 45) <= 25)
             | ((yy - 20) ** 2 + (xx - 20) ** 2 <= 81) | ((yy - 20) ** 2 + (xx - 70) ** 2 <= 81))
  assert len(seeding.lobe_centres(stadium, 6, 3.0, 4, 1.0)) >= 2  # Ridge maxima, no neck.
  assert seeding.solidity(stadium) > 0.98  # Convex up to pixelisation.
  assert seeding.lobe_centres(stadium, 6, 3.0, 4, 0.95).shape == (0, 2)
  two = _disk((40, 60), (20, 20), 9) | _disk((40, 60), (20, 36), 9)
  assert 0.85 < seeding.solidity(two) < 0.95  # The neck between the two disks.
  assert len(seeding.lobe_centres(two, 6, 3.0, 4, 0.95)) == 2
  square = np.ones((5, 7), bool)
  assert seeding.solidity(square) == 1.0  # By hand: 35 of 35 hull pixels.


def test_lobe_centres_keep_the_deepest_up_to_max_lobes():
  shape = (40, 100)
  mask = (_disk(shape, (20, 15), 10) | _disk(shape, (20, 40), 12) | _disk(shape, (20, 67), 11)
          | np.pad(np.ones((3, 60), bool), ((18, 19), (15, 25))))  # A bar joins the three.
  np.testing.assert_array_equal(seeding.lobe_centres(mask, 6, 3.0, 2, 1.0), [[20, 40], [20, 67]])
  assert len(seeding.lobe_centres(mask, 6, 3.0, 4, 1.0)) == 3


@pytest.mark.parametrize("width", [60, 61])
def test_object_lobes_from_claims_in_image_coordinates(width):
  shape = (50, width)
  two = _disk(shape, (25, 12), 8) | _disk(shape, (25, 26), 8)
  one = _disk(shape, (8, 50), 5)
  pixel = np.r_[np.flatnonzero(one), np.flatnonzero(two)]
  object_id = np.r_[np.full(one.sum(), 7), np.full(two.sum(), 3)]
  centres, parents, index = seeding.object_lobes(pixel, object_id, width, 6, 3.0, 4, 1.0)
  order = np.argsort(centres[:, 1])
  np.testing.assert_array_equal(centres[order], [[25, 12], [25, 26]])
  np.testing.assert_array_equal(parents, [3, 3])
  np.testing.assert_array_equal(np.sort(index), [0, 1])
  empty = seeding.object_lobes(np.zeros(0, int), np.zeros(0, int), width, 6, 3.0,
                                4, 1.0)
  assert [a.shape for a in empty] == [(0, 2), (0,), (0,)]
