"""Stage-1 scoring network (thesis §3.1) and whole-image scoring as one strided convolution.

`Scorer` scores one region: flatten (h·w) → Dense(hidden) → tanh → softmax over the hidden
units → Dense(1). A Dense layer applied to every flattened h×w window at stride s is a VALID
convolution with an h×w kernel and stride s, so `score_image` scores all regions of an image with
one `lax.conv_general_dilated` instead of cutting R crops; its result equals the per-crop MLP.

Both paths compute in float32 at `Precision.HIGHEST` so that they agree on every backend (on
GPUs the default float32 precision may use TF32); the layers are small, so this costs little.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiralnet_jax.regions import RegionGeometry, grid_shape, reflect_pad

_PRECISION = jax.lax.Precision.HIGHEST


class Scorer(nn.Module):
  """Region scorer: (B, h, w) or (B, h, w, 1) regions → (B,) scores."""

  hidden: int

  @nn.compact
  def __call__(self, regions: jax.Array) -> jax.Array:
    x = jnp.reshape(regions, (regions.shape[0], -1)).astype(jnp.float32)
    x = nn.Dense(self.hidden, precision=_PRECISION, name="hidden")(x)
    x = jax.nn.softmax(jnp.tanh(x), axis=-1)
    return nn.Dense(1, precision=_PRECISION, name="out")(x)[:, 0]


def _scorer_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
  """Accepts the `params` collection or the full variables dict `{"params": ...}`."""
  return params["params"] if "params" in params else params


@functools.partial(jax.jit, static_argnames="geom")
def score_padded(params: Mapping[str, Any], padded: jax.Array,
                 geom: RegionGeometry) -> jax.Array:
  """(rows', cols') scores of every stride-spaced h×w window of a padded (Hp, Wp[, 1]) image.

  `padded` is an already reflect-padded image; extra zero rows/columns appended at the bottom
  or right (shape buckets, to reuse one compilation) only add grid positions past the real
  grid, which the caller slices off: positions inside it read only the original pixels.
  """
  p = _scorer_params(params)
  x = jnp.asarray(padded, jnp.float32).reshape(padded.shape[:2])[None, :, :, None]
  # Dense kernel rows are the region flattened row-major, i.e. an HWIO kernel with I = 1.
  kernel = jnp.reshape(p["hidden"]["kernel"], (geom.height, geom.width, 1, -1))
  hidden = jax.lax.conv_general_dilated(
      x, kernel, window_strides=(geom.stride, geom.stride), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_PRECISION)[0]
  hidden = jax.nn.softmax(jnp.tanh(hidden + p["hidden"]["bias"]), axis=-1)
  out = jnp.einsum("ijk,k->ij", hidden, p["out"]["kernel"][:, 0], precision=_PRECISION)
  return out + p["out"]["bias"][0]


def score_image(params: Mapping[str, Any], image: np.ndarray, geom: RegionGeometry,
                bucket: int = 0) -> np.ndarray:
  """(rows, cols) float32 scores of all regions of a raw normalised (H, W[, 1]) image.

  The image is reflect-padded here (exactly as `regions.extract_regions` does), so score (i, j)
  is the Scorer output for region index i * cols + j. With `bucket` > 0 the padded image is
  zero-padded at the bottom/right up to multiples of `bucket` so that images of similar shape
  share one compilation of `score_padded`.
  """
  image = np.asarray(image, np.float32)
  rows, cols = grid_shape(image.shape, geom)
  if rows == 0 or cols == 0:
    return np.zeros((rows, cols), np.float32)
  padded = reflect_pad(image, geom.pad)
  if bucket > 0:
    extra = [(0, -n % bucket) for n in padded.shape[:2]] + [(0, 0)] * (padded.ndim - 2)
    padded = np.pad(padded, extra)
  scores = score_padded(params, padded, geom)
  return np.asarray(scores[:rows, :cols])


def select_regions(scores: Any, threshold: float) -> np.ndarray:
  """Row-major indices (into the flattened grid) of regions whose score is > `threshold`.

  Strictly greater: the thesis keeps "regions with score higher than t" (§3.1), and
  `metrics.scorer_error_rates` counts a pass the same way.
  """
  return np.flatnonzero(np.asarray(scores).reshape(-1) > threshold)
