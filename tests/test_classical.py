"""The Otsu + watershed baseline on hand-made images whose answer is known."""

import numpy as np

from spiralnet_jax import classical


def _disc(shape, centre, radius):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_two_apart_discs_are_two_instances_and_a_speck_is_dropped():
  shape = (60, 80)
  image = 0.1 * np.ones(shape)
  image[_disc(shape, (30, 20), 9)] = 0.9
  image[_disc(shape, (30, 60), 9)] = 0.9
  image[5:7, 75:77] = 0.9  # 4 px: below min_size 15.
  semantic, instances = classical.otsu_watershed(image)
  assert instances.dtype == np.int32 and instances.max() == 2
  assert instances[30, 20] != instances[30, 60] and instances[6, 76] == 0
  assert semantic.sum() == np.count_nonzero(instances)


def test_touching_discs_are_split_by_the_watershed():
  shape = (60, 80)
  touching = _disc(shape, (30, 30), 10) | _disc(shape, (30, 48), 10)  # Centres 18 px apart.
  _, instances = classical.otsu_watershed(np.where(touching, 0.9, 0.1))
  assert instances.max() == 2 and instances[30, 30] != instances[30, 48]
  assert instances[30, 30] > 0 and instances[30, 48] > 0


def test_constant_image_has_no_nuclei():
  semantic, instances = classical.otsu_watershed(np.full((20, 30), 0.5))
  assert not semantic.any() and not instances.any()
