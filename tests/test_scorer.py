"""Tests for spiralnet_jax.scorer: the region MLP and whole-image scoring as one convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiralnet_jax import regions
from spiralnet_jax import scorer

GEOM = regions.RegionGeometry(height=52, width=58, stride=16, pad=28, score_window=5)
HIDDEN = 16


@pytest.fixture(scope="module")
def params():
  """Random Scorer params, scaled up so scores vary strongly between regions."""
  p = scorer.Scorer(HIDDEN).init(jax.random.key(0), jnp.zeros((1,) + GEOM.shape))["params"]
  # Default init gives near-constant scores (softmax of small tanh values); larger weights make
  # any misalignment between crops and convolution windows show up as large differences.
  return jax.tree_util.tree_map(lambda x: x * 20.0, p)


def _per_crop_scores(params, image):
  rows, cols = regions.grid_shape(image.shape, GEOM)
  crops = regions.extract_regions(image, GEOM)
  return np.asarray(scorer.Scorer(HIDDEN).apply({"params": params}, crops)).reshape(rows, cols)


def test_scorer_parameter_shapes():
  variables = scorer.Scorer(128).init(jax.random.key(1), jnp.zeros((2,) + GEOM.shape))
  shapes = jax.tree_util.tree_map(jnp.shape, variables["params"])
  assert shapes == {"hidden": {"kernel": (3016, 128), "bias": (128,)},
                    "out": {"kernel": (128, 1), "bias": (1,)}}


def test_scorer_is_dense_tanh_softmax_dense(params):
  x = np.random.default_rng(0).random((3,) + GEOM.shape, dtype=np.float32)
  got = scorer.Scorer(HIDDEN).apply({"params": params}, x)
  assert got.shape == (3,)
  p = jax.tree_util.tree_map(np.asarray, params)
  h = np.tanh(x.reshape(3, -1).astype(np.float64) @ p["hidden"]["kernel"] + p["hidden"]["bias"])
  h = np.exp(h) / np.exp(h).sum(-1, keepdims=True)  # Softmax over the hidden units.
  expected = h @ p["out"]["kernel"][:, 0] + p["out"]["bias"][0]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_scorer_accepts_a_channel_axis(params):
  x = np.random.default_rng(1).random((2,) + GEOM.shape, dtype=np.float32)
  model = scorer.Scorer(HIDDEN)
  np.testing.assert_array_equal(model.apply({"params": params}, x[..., None]),
                                model.apply({"params": params}, x))


def test_score_image_equals_per_crop_scores(params):
  image = np.random.default_rng(2).random((77, 95), dtype=np.float32)  # Odd-sized.
  expected = _per_crop_scores(params, image)
  got = scorer.score_image(params, image, GEOM)
  assert got.shape == regions.grid_shape(image.shape, GEOM) == (6, 6)
  assert np.std(expected) > 0.1  # Scores really differ between regions.
  assert np.max(np.abs(got - expected)) < 1e-5


def test_score_image_with_shape_bucket_and_channel_axis(params):
  image = np.random.default_rng(3).random((77, 95), dtype=np.float32)
  expected = _per_crop_scores(params, image)
  bucketed = scorer.score_image(params, image, GEOM, bucket=64)
  assert bucketed.shape == (6, 6)
  assert np.max(np.abs(bucketed - expected)) < 1e-5
  with_channel = scorer.score_image(params, image[..., None], GEOM)
  assert np.max(np.abs(with_channel - expected)) < 1e-5


def test_score_padded_extra_zero_padding_only_adds_positions(params):
  image = np.random.default_rng(4).random((77, 95), dtype=np.float32)
  padded = regions.reflect_pad(image, GEOM.pad)
  base = np.asarray(scorer.score_padded(params, padded, GEOM))
  grown = np.asarray(scorer.score_padded(params, np.pad(padded, ((0, 40), (0, 33))), GEOM))
  assert base.shape == (6, 6) and grown.shape == (8, 8)
  assert np.max(np.abs(grown[:6, :6] - base)) < 1e-5


def test_score_image_accepts_full_variables(params):
  image = np.random.default_rng(5).random((60, 70), dtype=np.float32)
  np.testing.assert_array_equal(scorer.score_image({"params": params}, image, GEOM),
                                scorer.score_image(params, image, GEOM))


def test_select_regions_is_strictly_greater_row_major():
  scores = np.array([[0.1, 0.5, 0.4], [0.41, 0.39, 0.9]], np.float32)
  np.testing.assert_array_equal(scorer.select_regions(scores, 0.4), [1, 3, 5])
  assert scorer.select_regions(scores, 0.95).size == 0
