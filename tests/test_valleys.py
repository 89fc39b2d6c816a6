"""Valley splitting of assembled instances (spiralnet_jax.valleys), on hand-made labels."""

import numpy as np
import pytest

from spiralnet_jax import assembly
from spiralnet_jax import defaults
from spiralnet_jax import valleys

# Two discs of radius 8, centres 15 px apart on one row: one instance with a 5-px neck, its two
# distance-transform maxima at the centres and the watershed border between columns 17 and 18.
SHAPE = (24, 40)
CENTRES = ((11, 10), (11, 25))
NUMBERS = dict(min_distance=4, min_depth=2.0, ratio=0.86, level_percentile=75.0, min_size=15)


def _discs(radius: int = 8) -> np.ndarray:
  yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
  return np.any([(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2 for y, x in CENTRES], axis=0)


def _intensity(valley: float) -> np.ndarray:
  """1 everywhere but a 4-px band (columns 16..19) of `valley` around the border."""
  image = np.ones(SHAPE, np.float64)
  image[:, 16:20] = valley
  return image


def _split(mask, intensity, **changes):
  return valleys.split_instances(mask.astype(np.int32), intensity, **{**NUMBERS, **changes})


def test_two_nuclei_with_a_dim_valley_split_at_the_border():
  out = _split(_discs(), _intensity(0.5))
  assert out.max() == 2
  assert out[CENTRES[0]] == 1 and out[CENTRES[1]] == 2  # Raster order of first pixels.
  np.testing.assert_array_equal(out > 0, _discs())  # Foreground untouched.
  # Symmetric discs: the watershed gives each its own half, columns < 18 and ≥ 18.
  cols = np.nonzero(out)[1]
  assert (out[np.nonzero(out)] == np.where(cols < 18, 1, 2)).all()


def test_uniform_intensity_keeps_one_instance():
  out = _split(_discs(), np.ones(SHAPE))
  np.testing.assert_array_equal(out, _discs().astype(np.int32))


def test_the_ratio_is_the_threshold_valley_at_it_stays_joined():
  # The parts' 75th-percentile level is 1 (the band is under a quarter of each part), and
  # every border pair lies in the band, so the valley is exactly the band's intensity.
  assert _split(_discs(), _intensity(0.86)).max() == 1
  assert _split(_discs(), _intensity(0.85)).max() == 2
  assert _split(_discs(), _intensity(0.5), ratio=0.5).max() == 1
  assert _split(_discs(), _intensity(0.5), ratio=0.51).max() == 2


def test_one_distance_maximum_is_never_split():
  disc = np.zeros(SHAPE, bool)
  yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
  disc[(yy - 11) ** 2 + (xx - 17) ** 2 <= 64] = True
  out = _split(disc, _intensity(0.1))  # However dark the band, one nucleus.
  np.testing.assert_array_equal(out, disc.astype(np.int32))


def test_maxima_closer_than_min_distance_or_shallower_than_min_depth_give_no_parts():
  assert _split(_discs(), _intensity(0.5), min_distance=16).max() == 1
  assert _split(_discs(), _intensity(0.5), min_depth=9.0).max() == 1


def test_a_part_below_min_size_cancels_the_split():
  area = int(_discs().sum())
  assert _split(_discs(), _intensity(0.5), min_size=area // 2 - 10).max() == 2
  assert _split(_discs(), _intensity(0.5), min_size=area // 2 + 10).max() == 1


def test_other_instances_keep_their_pixels_and_ids_follow_raster_order():
  labels = np.zeros((30, 40), np.int32)
  labels[:SHAPE[0], :] = _discs() * 2  # The pair, id 2.
  labels[26:29, 2:6] = 1  # A small instance below it, id 1.
  image = np.ones((30, 40))
  image[:SHAPE[0]] = _intensity(0.5)
  out = valleys.split_instances(labels, image, **NUMBERS)
  assert sorted(np.unique(out)) == [0, 1, 2, 3]
  assert out[CENTRES[0]] == 1 and out[CENTRES[1]] == 2 and out[27, 3] == 3
  np.testing.assert_array_equal(out > 0, labels > 0)


def test_raster_ids_number_by_first_pixel_in_place():
  labels = np.array([[0, 7, 7], [3, 0, 9], [3, 9, 0]], np.int32)
  flat = labels.reshape(-1)
  assert assembly.raster_ids(flat, 0) is flat
  np.testing.assert_array_equal(labels, [[0, 1, 1], [2, 0, 3], [2, 3, 0]])
  groups = np.array([-1, 4, 4, 0, -1], np.int32)  # Assembly's groups: -1 is background.
  np.testing.assert_array_equal(assembly.raster_ids(groups, -1), [0, 1, 1, 2, 0])


def test_valley_pairs_average_the_brighter_pixel_of_each_border_pair():
  parts = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]], np.int32)
  intensity = np.array([[0, 1, 4, 0], [0, 3, 2, 0], [5, 6, 7, 8]], np.float64)
  pairs, valley = valleys._valleys(parts, intensity)  # pylint: disable=protected-access
  # 1|2: (1,4)→4, (3,2)→3; 1|3: (0,5)→5, (3,6)→6; 2|3: (2,7)→7, (0,8)→8.
  np.testing.assert_array_equal(pairs, [[1, 2], [1, 3], [2, 3]])
  np.testing.assert_allclose(valley, [3.5, 5.5, 7.5])


@pytest.mark.parametrize("enabled", [False, True])
def test_split_from_config_reads_the_assembly_section(enabled):
  config = defaults.get_config().assembly
  config.split_valleys = enabled
  config.valley_ratio = 0.86
  out = valleys.split_from_config(_discs().astype(np.int32), _intensity(0.5), config)
  assert out.max() == (2 if enabled else 1)


def test_defaults_keep_the_thesis_assembly():
  assert defaults.get_config().assembly.split_valleys is False
