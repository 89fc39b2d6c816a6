"""Stage-1 regions: reflect padding, the strided region grid, score labels and 3-channel labels.

Geometry (docs/design.md, "Geometry"): an (H, W) image is reflect-padded by `pad` on every side;
region (i, j), row-major index `i * cols + j`, is the `height × width` window whose top-left sits
at padded (stride·i, stride·j), i.e. at image coordinates `(stride·i − pad, stride·j − pad)`.
Everything here is host-side NumPy and vectorised over regions (no Python loop over regions),
except `boundary_weights`, the segmenter loss's weight map of 3-channel labels (jnp, traced
inside the loss).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclasses.dataclass(frozen=True)
class RegionGeometry:
  """Region size, grid stride, reflect padding and score window c (all from `cfg.regions`)."""

  height: int
  width: int
  stride: int
  pad: int
  score_window: int

  def __post_init__(self):
    if min(self.height, self.width, self.stride, self.score_window) < 1 or self.pad < 0:
      raise ValueError(f"invalid region geometry: {self}")
    # The c-window is centre ± c//2, which is c pixels wide only for odd c.
    if self.score_window % 2 != 1:
      raise ValueError(f"score_window must be odd, got {self.score_window}")
    cy, cx = self.centre
    half = self.score_window // 2
    if cy - half < 0 or cy + half >= self.height or cx - half < 0 or cx + half >= self.width:
      raise ValueError(f"score window {self.score_window} does not fit in {self.shape}")

  @classmethod
  def from_config(cls, cfg: Any) -> "RegionGeometry":
    """Builds the geometry from a `config.regions` ConfigDict (or any object with the fields)."""
    return cls(height=int(cfg.height), width=int(cfg.width), stride=int(cfg.stride),
               pad=int(cfg.pad), score_window=int(cfg.score_window))

  @property
  def shape(self) -> tuple[int, int]:
    """(height, width) of a region."""
    return (self.height, self.width)

  @property
  def centre(self) -> tuple[int, int]:
    """The centre pixel (height // 2, width // 2) in region coordinates."""
    return (self.height // 2, self.width // 2)

  def score_slices(self) -> tuple[slice, slice]:
    """Row and column slices of the central c×c score window in region coordinates."""
    cy, cx = self.centre
    half = self.score_window // 2
    return slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1)


def reflect_pad(image: np.ndarray, pad: int) -> np.ndarray:
  """Reflect-pads the first two (spatial) axes of `image` by `pad` on every side.

  Works for any image of at least 1×1 and any `pad`, including pad > size: NumPy's 'reflect'
  mode reflects repeatedly. A spatial axis of length 1 has nothing to reflect about, so it is
  padded with 'edge' (the pixel repeated, i.e. what mirroring a single pixel gives).
  Trailing axes (channels) are not padded.
  """
  image = np.asarray(image)
  if image.ndim < 2 or min(image.shape[:2]) < 1:
    raise ValueError(f"reflect_pad needs an image of at least 1×1, got shape {image.shape}")
  extra = [(0, 0)] * (image.ndim - 2)
  reflect = [(pad, pad) if n > 1 else (0, 0) for n in image.shape[:2]] + extra
  edge = [(pad, pad) if n == 1 else (0, 0) for n in image.shape[:2]] + extra
  out = np.pad(image, reflect, mode="reflect")
  if any(n == 1 for n in image.shape[:2]):
    out = np.pad(out, edge, mode="edge")
  return out


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
  """Source index of each (possibly out-of-range) index under `regions.reflect_pad`'s rule.

  Reflection about the first and last element, repeated (period 2(n − 1)); n = 1 repeats the
  one element.
  """
  index = np.asarray(index, np.int64)
  if n == 1:
    return np.zeros_like(index)
  period = 2 * (n - 1)
  index = np.mod(index, period)
  return np.where(index < n, index, period - index)


def padded_rows(image: np.ndarray, pad: int, start: int, stop: int) -> np.ndarray:
  """Rows [start, stop) of `regions.reflect_pad(image, pad)`, without padding the whole image."""
  height, width = image.shape[:2]
  rows = reflect_index(np.arange(start, stop) - pad, height)
  cols = reflect_index(np.arange(-pad, width + pad), width)
  return image[rows[:, None], cols[None, :]]


def grid_shape(image_shape: tuple[int, ...], geom: RegionGeometry) -> tuple[int, int]:
  """(rows, cols) of the region grid of an image of shape (H, W[, ...]); 0 where none fits."""
  h, w = image_shape[:2]
  rows = (h + 2 * geom.pad - geom.height) // geom.stride + 1
  cols = (w + 2 * geom.pad - geom.width) // geom.stride + 1
  return max(rows, 0), max(cols, 0)


def region_origins(image_shape: tuple[int, ...], geom: RegionGeometry) -> np.ndarray:
  """(R, 2) int32 top-left of every region in image coordinates (may be negative), row-major."""
  rows, cols = grid_shape(image_shape, geom)
  ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  origins = np.stack([ii.ravel(), jj.ravel()], axis=-1) * geom.stride - geom.pad
  return origins.astype(np.int32)


def _grid_view(padded: np.ndarray, geom: RegionGeometry) -> np.ndarray:
  """(rows, cols, h, w[, C]) read-only strided view of all regions of a padded image."""
  if padded.shape[0] < geom.height or padded.shape[1] < geom.width:
    # No region fits (sliding_window_view would raise): an empty grid.
    return np.empty((0, 0) + geom.shape + padded.shape[2:], padded.dtype)
  view = sliding_window_view(padded, geom.shape, axis=(0, 1))[::geom.stride, ::geom.stride]
  # sliding_window_view puts the window axes last: move channels (if any) behind them.
  return np.moveaxis(view, (-2, -1), (2, 3))


def extract_regions(image: np.ndarray, geom: RegionGeometry) -> np.ndarray:
  """All regions of an (H, W[, C]) image, reflect-padded first, as (R, h, w[, C]), row-major.

  Built from one strided view of the padded image; the final reshape to a flat region axis is
  the only copy (the grid's row and column strides cannot be merged into one).
  """
  view = _grid_view(reflect_pad(image, geom.pad), geom)
  return view.reshape((-1,) + view.shape[2:])


def reverse_distance_matrix(geom: RegionGeometry) -> np.ndarray:
  """(h, w) float32 `M = 1 − d / d_max`: 1 at the centre pixel, 0 at the farthest corner."""
  cy, cx = geom.centre
  yy, xx = np.meshgrid(np.arange(geom.height), np.arange(geom.width), indexing="ij")
  d = np.hypot(yy - cy, xx - cx)
  return (1.0 - d / d.max()).astype(np.float32)


def score_labels(instance_regions: np.ndarray, geom: RegionGeometry) -> np.ndarray:
  """(...,) float32 label scores `sum(fg · M over the c×c window) / c²`, fg = label > 0.

  `instance_regions` is (..., h, w) (e.g. (R, h, w)); only the central window is read.
  """
  rs, cs = geom.score_slices()
  # Accumulate in float64 so the float32 result does not depend on the memory layout of the
  # input (a strided grid view and a copied (R, h, w) array sum in different orders).
  m = reverse_distance_matrix(geom)[rs, cs].astype(np.float64)
  fg = np.asarray(instance_regions)[..., rs, cs] > 0
  return (np.sum(fg * m, axis=(-2, -1)) / geom.score_window**2).astype(np.float32)


def central_ids(instance_regions: np.ndarray, geom: RegionGeometry) -> np.ndarray:
  """(...,) instance id of each region's central object; 0 where there is none.

  The id under the centre pixel; if that is background, the id with the largest M-weighted
  area inside the c×c window (ties: the first such pixel in raster order of the window);
  0 if the window is all background.
  """
  regions = np.asarray(instance_regions)
  cy, cx = geom.centre
  rs, cs = geom.score_slices()
  lead = regions.shape[:-2]
  window = regions[..., rs, cs].reshape(lead + (-1,))  # (..., c²)
  m = reverse_distance_matrix(geom)[rs, cs].ravel()
  # Weight of the id at window pixel k = M summed over window pixels l holding the same id;
  # c² × c² comparisons per region, vectorised over regions.
  same = window[..., :, None] == window[..., None, :]
  weight = np.where(window > 0, np.sum(same * m, axis=-1), -1.0)
  best = np.argmax(weight, axis=-1)
  # An all-background window has weight −1 everywhere, so `best` points at a 0 label.
  fallback = np.take_along_axis(window, best[..., None], axis=-1)[..., 0]
  centre = regions[..., cy, cx]
  return np.where(centre > 0, centre, fallback)


def _one_hot_labels(regions: np.ndarray, ids: np.ndarray, background: np.ndarray,
                    dtype: np.dtype = np.float32) -> np.ndarray:
  """(..., h, w, 3) one-hot of central (id == ids, id > 0) / other / background."""
  central = (regions == ids[..., None, None]) & ~background
  # One bool stack and one cast: about 2× faster than three strided channel writes.
  return np.stack([central, ~(central | background), background], axis=-1).astype(dtype)


def central_labels(instance_regions: np.ndarray, geom: RegionGeometry) -> np.ndarray:
  """(..., h, w, 3) float32 one-hot labels: central instance / other instances / background."""
  regions = np.asarray(instance_regions)
  return _one_hot_labels(regions, central_ids(regions, geom), regions == 0)


class CutRegions(NamedTuple):
  """All regions of one image with their Stage-1 and Stage-2 training targets."""

  regions: np.ndarray  # (R, h, w[, C]) image regions.
  scores: np.ndarray  # (R,) float32 label scores.
  # (R, h, w, 3) uint8 one-hot central / other / background: a whole image's labels are
  # 13 MB rather than 52 MB as float32, and writing them is most of this function's time.
  labels: np.ndarray


def cut_and_label(image: np.ndarray, labels: np.ndarray, geom: RegionGeometry) -> CutRegions:
  """Cuts every region of an image and its instance labels (H, W) and computes their targets.

  Labels are reflect-padded like the image (docs/design.md), so a nucleus touching the border and its
  mirror image form one instance with one id.
  """
  regions = extract_regions(image, geom)
  # Label windows stay a strided (rows, cols, h, w) view: the per-region reductions and the
  # one-hot write read it directly, saving a copy of all label regions.
  padded = reflect_pad(labels, geom.pad)
  label_view = _grid_view(padded, geom)
  scores = score_labels(label_view, geom).reshape(-1)
  ids = central_ids(label_view, geom)
  # The background channel does not depend on the region: compare once on the padded image.
  one_hot = _one_hot_labels(label_view, ids, _grid_view(padded == 0, geom), np.uint8)
  return CutRegions(regions, scores, one_hot.reshape((-1,) + one_hot.shape[2:]))


def boundary_weights(labels: jax.Array, radius: int, weight: float) -> jax.Array:
  """(B, H, W, 1) loss weights of (B, H, W, 3) one-hot labels: 1, and 1 + `weight` within
  `radius` px (a square) of both a central-nucleus and an other-nucleus pixel."""
  labels = jnp.asarray(labels, jnp.float32)
  ones = jnp.ones(labels.shape[:3] + (1,), jnp.float32)
  if weight == 0:
    return ones
  size = (1, 2 * radius + 1, 2 * radius + 1)

  def near(x):  # 1 where a pixel of x lies within `radius` (max pooling, SAME size).
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, size, (1, 1, 1), "SAME")

  band = near(labels[..., 0]) * near(labels[..., 1])
  return ones + weight * band[..., None]


def chunks(origin_rows: np.ndarray, max_regions: int, max_span: int) -> list[tuple[int, int]]:
  """[start, stop) runs of raster-ordered regions: ≤ max_regions each, top rows < max_span apart.

  `origin_rows` is each region's (sorted) top row.
  """
  bounds, start, n = [], 0, len(origin_rows)
  while start < n:
    rows_end = int(np.searchsorted(origin_rows, origin_rows[start] + max_span, side="left"))
    stop = min(start + max(1, max_regions), rows_end)
    bounds.append((start, stop))
    start = stop
  return bounds
