"""Synthetic nuclei: determinism, label/image consistency, BBBC039-like geometry."""


import numpy as np
import pytest
import scipy.ndimage
import skimage.measure

from spiralnet_jax.data import synthetic

SEEDS = range(8)


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
  pairs = set()
  for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
    touch = (a > 0) & (b > 0) & (a != b)
    pairs |= {tuple(sorted(p)) for p in zip(a[touch].tolist(), b[touch].tolist())}
  return pairs


@pytest.fixture(scope="module")
def fields():
  return [synthetic.generate(seed) for seed in SEEDS]


def test_deterministic_per_seed():
  a_image, a_labels = synthetic.generate(3, shape=(64, 80))
  b_image, b_labels = synthetic.generate(3, shape=(64, 80))
  np.testing.assert_array_equal(a_image, b_image)
  np.testing.assert_array_equal(a_labels, b_labels)
  c_image, _ = synthetic.generate(4, shape=(64, 80))
  assert not np.array_equal(a_image, c_image)


def test_types_shapes_and_range(fields):
  for image, labels in fields:
    assert image.shape == labels.shape == synthetic.DEFAULT_SHAPE
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    assert image.max() <= synthetic.MAX_VALUE


def test_ids_consecutive_and_each_one_component(fields):
  for image, labels in fields:
    n = labels.max()
    assert n >= 1
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    for i in range(1, n + 1):
      assert skimage.measure.label(labels == i, connectivity=1).max() == 1


def test_nuclei_brighter_than_background(fields):
  for image, labels in fields:
    image = image.astype(np.float64)
    fg = labels > 0
    background = image[~fg].mean()
    # Background ring 3-6 px away from every nucleus (outside the blur's reach).
    near = scipy.ndimage.binary_dilation(fg, iterations=6)
    ring_all = near & ~scipy.ndimage.binary_dilation(fg, iterations=3)
    for i in range(1, labels.max() + 1):
      nucleus = labels == i
      mean = image[nucleus].mean()
      assert mean > background + 100
      ring = scipy.ndimage.binary_dilation(nucleus, iterations=6) & ring_all
      if ring.any():
        assert mean > image[ring].mean() + 100


def test_bbbc039_like_geometry(fields):
  diameters, touching = [], 0
  for _, labels in fields:
    props = skimage.measure.regionprops(labels)
    diameters += [p.equivalent_diameter_area for p in props]
    # No nucleus is larger than the largest drawn ellipse (30 px across).
    assert all(p.feret_diameter_max <= 31 for p in props)
    touching += len(_touching_pairs(labels))
  assert 12 <= np.median(diameters) <= 30
  assert touching >= len(SEEDS)  # Some nuclei touch (drawn overlapping or adjacent).


def test_uneven_background(fields):
  for image, labels in fields:
    smooth = scipy.ndimage.uniform_filter(image.astype(np.float64), 9)
    far = scipy.ndimage.distance_transform_edt(labels == 0) >= 15  # Beyond any blur.
    values = smooth[far]
    # A flat background gives a spread of ~15-20 grey levels here (noise of a 9x9 mean over
    # ~10^4 windows); the uneven illumination gives ~60-90.
    assert values.max() - values.min() > 35


def test_num_nuclei_and_overlap_partition():
  image, labels = synthetic.generate(0, shape=(96, 96), num_nuclei=0)
  assert labels.max() == 0 and image.max() < 1000
  _, labels = synthetic.generate(1, shape=(96, 96), num_nuclei=40, touch_probability=0.5)
  # Half of forty nuclei are placed against earlier ones: they touch or overlap, and the
  # labels are still a partition of at most forty ids.
  assert 1 <= labels.max() <= 40
  assert len(_touching_pairs(labels)) > 0


@pytest.mark.parametrize("min_gap", [1.0, 3.0, 6.0])
def test_nuclei_not_placed_touching_keep_the_gap(min_gap):
  _, labels = synthetic.generate(5, shape=(96, 96), num_nuclei=40, touch_probability=0.0,
                                 min_gap=min_gap)
  # A full field: forty 12-30 px nuclei cannot all lie apart in 96 x 96, so some are left out.
  assert 5 <= labels.max() < 40
  for i in range(1, labels.max() + 1):
    distance = scipy.ndimage.distance_transform_edt(labels != i)  # To nucleus i's pixels.
    others = (labels > 0) & (labels != i)
    assert distance[others].min() >= min_gap


