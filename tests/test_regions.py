"""Tests for spiralnet_jax.regions: pinned region geometry, score labels, 3-channel labels."""

import importlib.util
import pathlib

import numpy as np
import pytest
import skimage.io
import skimage.measure

from spiralnet_jax import regions

_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"


def _default_geometry() -> regions.RegionGeometry:
  spec = importlib.util.spec_from_file_location("default_config", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return regions.RegionGeometry.from_config(module.get_config().regions)


GEOM = _default_geometry()
# A 5×5 region with a 3×3 score window: small enough to check every number by hand.
# Centre (2, 2); d_max = √8; in the window M = 1 (centre), 1 − 1/√8 (4-neighbours),
# 1 − √2/√8 = 0.5 (diagonals).
TINY = regions.RegionGeometry(height=5, width=5, stride=1, pad=0, score_window=3)
EDGE_M = 1.0 - 1.0 / np.sqrt(8.0)


def _disc(shape, centre, radius):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _decode_bbbc039_mask(path) -> np.ndarray:
  """Instance ids from an RGBA mask: 4-connected components inside each red value (docs/design.md)."""
  red = skimage.io.imread(path)[..., 0]
  labels = np.zeros(red.shape, np.int32)
  for value in np.unique(red[red > 0]):
    comp = skimage.measure.label(red == value, connectivity=1)
    labels[comp > 0] = comp[comp > 0] + labels.max()
  return labels


# --- geometry ---------------------------------------------------------------------------------


def test_default_geometry_is_pinned():
  assert (GEOM.height, GEOM.width, GEOM.stride, GEOM.pad, GEOM.score_window) == (52, 58, 16, 28, 5)
  assert GEOM.shape == (52, 58)
  assert GEOM.centre == (26, 29)


def test_geometry_rejects_even_score_window():
  with pytest.raises(ValueError):
    regions.RegionGeometry(height=52, width=58, stride=16, pad=28, score_window=4)


def test_bbbc039_image_gives_1452_regions():
  shape = (520, 696)
  assert regions.grid_shape(shape, GEOM) == (33, 44)
  origins = regions.region_origins(shape, GEOM)
  assert origins.shape == (1452, 2)
  np.testing.assert_array_equal(origins[0], [-28, -28])
  np.testing.assert_array_equal(origins[1], [-28, -12])  # Row-major: next column first.
  np.testing.assert_array_equal(origins[44], [-12, -28])
  np.testing.assert_array_equal(origins[-1], [32 * 16 - 28, 43 * 16 - 28])
  image = np.random.default_rng(0).random(shape, dtype=np.float32)
  assert regions.extract_regions(image, GEOM).shape == (1452, 52, 58)


def test_tiny_images():
  # 1 + 56 = 57 < 58 columns: one row fits, no column does.
  assert regions.grid_shape((1, 1), GEOM) == (1, 0)
  assert regions.region_origins((1, 1), GEOM).shape == (0, 2)
  assert regions.extract_regions(np.ones((1, 1), np.float32), GEOM).shape == (0, 52, 58)
  # 2×3 → padded 58×59: exactly one region, the padded top-left corner.
  image = np.arange(6, dtype=np.float32).reshape(2, 3)
  np.testing.assert_array_equal(regions.region_origins(image.shape, GEOM), [[-28, -28]])
  regs = regions.extract_regions(image, GEOM)
  np.testing.assert_array_equal(regs, regions.reflect_pad(image, 28)[None, :52, :58])


# --- reflect padding ----------------------------------------------------------------------------


def _reflect_index(p, n, pad):
  """Source index of padded index p under repeated reflection (period 2(n − 1))."""
  k = (p - pad) % (2 * (n - 1))
  return np.where(k >= n, 2 * (n - 1) - k, k)


def test_reflect_pad_repeats_reflection_when_pad_exceeds_size():
  image = np.arange(6, dtype=np.float32).reshape(2, 3)
  padded = regions.reflect_pad(image, 28)
  assert padded.shape == (58, 59)
  np.testing.assert_array_equal(padded[28, 26:33], [2, 1, 0, 1, 2, 1, 0])  # By hand.
  rows = _reflect_index(np.arange(58), 2, 28)
  cols = _reflect_index(np.arange(59), 3, 28)
  np.testing.assert_array_equal(padded, image[rows[:, None], cols[None, :]])


def test_reflect_pad_of_length_one_axes_uses_edge():
  np.testing.assert_array_equal(regions.reflect_pad(np.array([[7.0]]), 28), np.full((57, 57), 7.0))
  row = np.array([[1.0, 2.0, 3.0]])
  padded = regions.reflect_pad(row, 4)
  assert padded.shape == (9, 11)
  expected = row[0, _reflect_index(np.arange(11), 3, 4)]
  np.testing.assert_array_equal(padded, np.broadcast_to(expected, (9, 11)))


def test_reflect_pad_leaves_channels_alone():
  image = np.random.default_rng(0).random((4, 5, 2))
  padded = regions.reflect_pad(image, 3)
  assert padded.shape == (10, 11, 2)
  for c in range(2):
    np.testing.assert_array_equal(padded[..., c], regions.reflect_pad(image[..., c], 3))


# --- extraction and coordinates -----------------------------------------------------------------


def test_extracted_region_is_the_padded_slice():
  image = np.random.default_rng(1).random((520, 696), dtype=np.float32)
  padded = regions.reflect_pad(image, 28)
  regs = regions.extract_regions(image, GEOM)
  rows, cols = regions.grid_shape(image.shape, GEOM)
  for i in range(rows):
    for j in range(cols):
      expected = padded[16 * i:16 * i + 52, 16 * j:16 * j + 58]
      np.testing.assert_array_equal(regs[i * cols + j], expected)


def test_extract_regions_with_channel_axis():
  image = np.random.default_rng(2).random((61, 83, 2), dtype=np.float32)
  regs = regions.extract_regions(image, GEOM)
  rows, cols = regions.grid_shape(image.shape, GEOM)
  assert regs.shape == (rows * cols, 52, 58, 2)
  for c in range(2):
    np.testing.assert_array_equal(regs[..., c], regions.extract_regions(image[..., c], GEOM))


# --- reverse distance matrix and score labels ----------------------------------------------------


def test_reverse_distance_matrix_hand_values():
  m = regions.reverse_distance_matrix(GEOM)
  assert m.shape == (52, 58) and m.dtype == np.float32
  d_max = np.hypot(26, 29)  # The farthest corner is (0, 0).
  assert m[26, 29] == 1.0
  assert m[0, 0] == 0.0
  assert m.min() == 0.0 and m.max() == 1.0
  np.testing.assert_allclose(m[26, 0], 1 - 29 / d_max, rtol=1e-6)
  np.testing.assert_allclose(m[0, 29], 1 - 26 / d_max, rtol=1e-6)
  np.testing.assert_allclose(m[51, 57], 1 - np.hypot(25, 28) / d_max, rtol=1e-6)
  np.testing.assert_allclose(m[27, 30], 1 - np.sqrt(2) / d_max, rtol=1e-6)


def test_reverse_distance_matrix_tiny():
  m = regions.reverse_distance_matrix(TINY)
  np.testing.assert_allclose(m[1:4, 1:4], [[0.5, EDGE_M, 0.5], [EDGE_M, 1.0, EDGE_M],
                                           [0.5, EDGE_M, 0.5]], rtol=1e-6)
  np.testing.assert_array_equal(m[[0, 0, 4, 4], [0, 4, 0, 4]], 0.0)


def test_score_labels_hand_case():
  lab = np.zeros((1, 5, 5), np.int32)
  lab[0, 2, 2] = 4  # Centre: M = 1.
  lab[0, 1, 1] = 9  # Diagonal: M = 0.5 (another instance still counts as foreground).
  lab[0, 2, 3] = 4  # 4-neighbour: M = 1 − 1/√8.
  lab[0, 0, :] = 2  # Outside the 3×3 window: ignored.
  expected = (1.0 + 0.5 + EDGE_M) / 9
  np.testing.assert_allclose(regions.score_labels(lab, TINY), [expected], rtol=1e-6)


def test_score_labels_centred_and_off_centre_disc():
  m = regions.reverse_distance_matrix(GEOM)
  centred = _disc(GEOM.shape, (26, 29), 9.5).astype(np.int32) * 3
  # 10 px to the right: only window columns 30 and 31 (all 5 rows) are within 9.5 px.
  shifted = _disc(GEOM.shape, (26, 39), 9.5).astype(np.int32) * 3
  scores = regions.score_labels(np.stack([centred, shifted]), GEOM)
  assert scores[0] >= 0.9
  assert scores[1] < 0.4
  np.testing.assert_allclose(scores[0], m[24:29, 27:32].sum() / 25, rtol=1e-6)
  np.testing.assert_allclose(scores[1], m[24:29, 30:32].sum() / 25, rtol=1e-6)


# --- central ids and 3-channel labels -----------------------------------------------------------


def test_central_ids_centre_and_fallback():
  lab = np.zeros((5, 5, 5), np.int32)
  lab[0, 2, 2] = 5  # Centre foreground wins, however large the others are.
  lab[0, 1:4, 1] = 8
  lab[1, 2, 3] = 7  # 4-neighbour: weight 1 − 1/√8 ≈ 0.65 ...
  lab[1, 1, 1] = lab[1, 3, 3] = 3  # ... loses to two diagonals: 0.5 + 0.5 = 1.
  lab[2, 2, 3] = 7  # 4-neighbour 0.65 beats one diagonal 0.5.
  lab[2, 3, 1] = 3
  lab[3, 0, :] = 6  # Foreground only outside the window: no central object.
  lab[3, :, 0] = 6
  # lab[4] is all background.
  np.testing.assert_array_equal(regions.central_ids(lab, TINY), [5, 3, 7, 0, 0])


def test_central_labels_one_hot_hand_case():
  lab = np.zeros((2, 5, 5), np.int32)
  lab[0, 1:4, 1:3] = 2
  lab[0, 0, 3:] = 9
  lab[1, 0, 3:] = 9  # No central object: channel 0 empty, 9 is "other".
  out = regions.central_labels(lab, TINY)
  assert out.shape == (2, 5, 5, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, ..., 0], lab[0] == 2)
  np.testing.assert_array_equal(out[0, ..., 1], lab[0] == 9)
  np.testing.assert_array_equal(out[0, ..., 2], lab[0] == 0)
  np.testing.assert_array_equal(out[1, ..., 0], 0.0)
  np.testing.assert_array_equal(out[1, ..., 1], lab[1] == 9)
  np.testing.assert_array_equal(out[1, ..., 2], lab[1] == 0)


def test_central_labels_on_random_instances_are_one_hot():
  lab = np.random.default_rng(5).integers(0, 4, (64, 52, 58)).astype(np.int32)
  out = regions.central_labels(lab, GEOM)
  assert set(np.unique(out)) == {0.0, 1.0}
  np.testing.assert_array_equal(out.sum(-1), 1.0)
  ids = regions.central_ids(lab, GEOM)
  np.testing.assert_array_equal(out[..., 0], (lab == ids[:, None, None]) & (lab > 0))


def test_central_channel_is_the_nucleus_on_bbbc039(bbbc039_dir):
  stem = (bbbc039_dir / "metadata" / "training.txt").read_text().split()[0]
  labels = _decode_bbbc039_mask(bbbc039_dir / "masks" / stem)
  assert labels.shape == (520, 696) and labels.max() > 10
  image = np.random.default_rng(6).random(labels.shape, dtype=np.float32)
  cut = regions.cut_and_label(image, labels, GEOM)
  origins = regions.region_origins(labels.shape, GEOM)
  assert cut.labels.shape == (1452, 52, 58, 3) and cut.labels.dtype == np.uint8
  np.testing.assert_array_equal(cut.labels.sum(-1), 1.0)
  # Regions entirely inside the image whose centre pixel lies in a nucleus.
  inside = np.all((origins >= 0) & (origins + [52, 58] <= labels.shape), axis=1)
  centre_ids = labels[origins[:, 0] + 26, origins[:, 1] + 29]
  chosen = np.nonzero(inside & (centre_ids > 0))[0]
  assert chosen.size > 20
  for r in chosen:
    y, x = origins[r]
    window = labels[y:y + 52, x:x + 58]
    np.testing.assert_array_equal(cut.labels[r, ..., 0], window == centre_ids[r])
    np.testing.assert_array_equal(cut.labels[r, ..., 1], (window > 0) & (window != centre_ids[r]))
    np.testing.assert_array_equal(cut.labels[r, ..., 2], window == 0)
    assert cut.scores[r] > 0.0


def test_cut_and_label_matches_the_parts():
  rng = np.random.default_rng(7)
  image = rng.random((75, 101), dtype=np.float32)
  labels = np.zeros(image.shape, np.int32)
  for k, (cy, cx) in enumerate(rng.integers(0, [75, 101], (12, 2)), start=1):
    labels[_disc(image.shape, (cy, cx), rng.uniform(3, 9))] = k
  cut = regions.cut_and_label(image, labels, GEOM)
  label_regions = regions.extract_regions(labels, GEOM)
  np.testing.assert_array_equal(cut.regions, regions.extract_regions(image, GEOM))
  np.testing.assert_array_equal(cut.scores, regions.score_labels(label_regions, GEOM))
  np.testing.assert_array_equal(cut.labels, regions.central_labels(label_regions, GEOM))
  assert cut.scores.max() > 0.5  # The discs make the case non-trivial.
