"""Nucleus size: diameters, nearest-neighbour label resizing, prediction at another scale."""

import numpy as np
import pytest

from spiralnet_jax import scale


def test_equivalent_diameter_is_that_of_the_disk_of_the_same_area():
  labels = np.zeros((20, 20), np.int32)
  labels[0:2, 0:2] = 3  # Area 4: d = sqrt(16/π).
  labels[10:20, 10:20] = 1  # Area 100: d = sqrt(400/π).
  np.testing.assert_allclose(scale.equivalent_diameters(labels),
                             [np.sqrt(400 / np.pi), np.sqrt(16 / np.pi)])  # Ids ascending.
  other = np.zeros((5, 5), np.int32)
  other[:3, :3] = 7  # Area 9.
  assert scale.median_diameter([labels, other]) == pytest.approx(np.sqrt(36 / np.pi))
  with pytest.raises(ValueError, match="no labelled nuclei"):
    scale.median_diameter([np.zeros((3, 3), np.int32)])


def test_scale_factor_and_its_limits():
  assert scale.scale_factor(14.0, 28.0) == 2.0
  assert scale.scale_factor(56.0, 28.0) == 0.5
  assert scale.scale_factor(28.0 / 8, 28.0) == 8.0  # The limits themselves are accepted.
  for diameter, message in ((0.0, "positive number"), (-3.0, "positive number"),
                            (float("nan"), "positive number"), (3.0, "accepted: 3.5 to 224"),
                            (300.0, "too far from the model's 28 px")):
    with pytest.raises(ValueError, match=message):
      scale.scale_factor(diameter, 28.0)
  with pytest.raises(ValueError, match="records no training nucleus diameter"):
    scale.scale_factor(20.0, 0.0)


def test_resize_nearest_by_hand():
  mask = np.array([[1, 2], [3, 4]], np.uint16)
  np.testing.assert_array_equal(scale.resize_nearest(mask, (4, 4)),
                                [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
  big = np.arange(36).reshape(6, 6)
  # Pixel centres: output row i samples input row floor((i + 0.5) · 6 / 3) = 1, 3, 5.
  np.testing.assert_array_equal(scale.resize_nearest(big, (3, 3)), big[1::2, 1::2])
  assert scale.resize_nearest(mask, (4, 4)).dtype == np.uint16
  np.testing.assert_array_equal(scale.resize_nearest(big, (6, 6)), big)


def test_rescaled_shapes_round_and_stay_at_least_one_pixel():
  assert scale.rescaled_shape((520, 696), 0.5) == (260, 348)
  assert scale.rescaled_shape((3, 5), 0.125) == (1, 1)
  image = np.random.default_rng(0).random((30, 40)).astype(np.float32)
  out = scale.rescale(image, 2.0)
  assert out.shape == (60, 80) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0  # Bilinear stays in the normalised range.


def test_at_diameter_runs_the_model_at_its_own_scale_and_returns_the_input_shape():
  seen = []

  def model(image):  # Finds "nuclei" as bright pixels; records the size it is given.
    seen.append(image.shape)
    return image > 0.5, (image > 0.5).astype(np.int32)

  image = np.zeros((40, 60), np.float32)
  image[10:20, 10:20] = 1.0
  semantic, instances = scale.at_diameter(model, image, diameter=14.0, reference=28.0)
  assert seen == [(80, 120)]
  assert semantic.shape == instances.shape == image.shape
  np.testing.assert_array_equal(instances, image > 0.5)  # Round trip ×2 then ÷2: exact here.
  seen.clear()
  scale.at_diameter(model, image, diameter=28.0, reference=28.0)
  assert seen == [(40, 60)]  # The model's own size: nothing rescaled.
