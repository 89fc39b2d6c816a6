"""Where prediction centres its regions: the thesis grid, score-map peaks, and lobe seeds.

Three pure, host-side rules, each returning region centres or cells (NumPy, image coordinates):

- grid (the thesis, §3.1): every region of the stride-s grid whose score passes the threshold.
  A nucleus is found only if a grid point lands in it, and a big one is found many times.
- peaks: the scorer is a convolution, so the score map at a fine stride (4 px) costs little;
  the cells that pass form blobs, one per nucleus or per cluster of touching nuclei, and the
  maxima of their distance transform sit at the nuclei's centres, one or two per nucleus. A
  region centred there has its own nucleus at the centre, instead of wherever the grid fell.
- lobes: a candidate (an object's claimed pixels) whose own distance transform has two or more
  well-separated maxima is likely two touching nuclei; a region centred on each maximum gives
  assembly the separate candidates it needs to split the merger (`assembly.split_containers`).

Peaks depend only on their own blob of passing cells and lobes only on their own candidate,
so a streamed prediction finds the same seeds chunk by chunk as it would whole.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import skimage.feature
import skimage.morphology

from spiralnet_jax import regions as regions_lib

# Tie-break between equal distances (plateaus of the distance transform): the higher score
# wins. Distances are multiples of ~0.1 px or more apart, scores lie in about [-0.2, 1.2].
_SCORE_TIE_BREAK = 1e-3


def grid_cells(scores: np.ndarray, threshold: float) -> np.ndarray:
  """(N, 2) int64 (row, col) of the grid cells whose score is > threshold, in raster order."""
  rows, cols = np.nonzero(np.asarray(scores) > threshold)
  return np.stack([rows, cols], axis=-1).astype(np.int64).reshape(-1, 2)


def peak_cells(scores: np.ndarray, threshold: float, min_distance: int) -> np.ndarray:
  """(N, 2) int64 cells at the maxima of the distance transform of the cells > threshold.

  One blob of passing cells gets at least one peak; peaks are at least `min_distance` cells
  apart (Chebyshev), raster order.
  """
  scores = np.asarray(scores, np.float64)
  passing = scores > threshold
  if not passing.any():
    return np.zeros((0, 2), np.int64)
  distance = ndi.distance_transform_edt(passing)
  blobs, _ = ndi.label(passing)
  peaks = skimage.feature.peak_local_max(distance + _SCORE_TIE_BREAK * scores,
                                         min_distance=max(1, int(min_distance)), labels=blobs,
                                         exclude_border=False)
  peaks = np.asarray(peaks, np.int64).reshape(-1, 2)
  return peaks[np.lexsort((peaks[:, 1], peaks[:, 0]))]


def cell_origins(cells: np.ndarray, geom: regions_lib.RegionGeometry) -> np.ndarray:
  """(N, 2) int64 image-coordinate top-lefts of the regions of grid cells at `geom.stride`."""
  return np.asarray(cells, np.int64).reshape(-1, 2) * geom.stride - geom.pad


def centre_origins(centres: np.ndarray, geom: regions_lib.RegionGeometry) -> np.ndarray:
  """(N, 2) int64 top-lefts of the regions whose centre pixel is at `centres` (image yx)."""
  return np.asarray(centres, np.int64).reshape(-1, 2) - np.asarray(geom.centre, np.int64)


def lobe_centres(mask: np.ndarray, min_distance: int, min_depth: float, max_lobes: int,
                 max_solidity: float) -> np.ndarray:
  """(L, 2) int64 maxima of a candidate mask's distance transform, if it has ≥ 2 lobes.

  A lobe is a maximum at least `min_depth` px deep inside the mask and `min_distance` px from
  a deeper one; at most `max_lobes`, deepest first (ties: raster order). A candidate with one
  lobe (one nucleus, however shaped) gives none: it needs no second look; nor does one whose
  solidity (area / convex hull area) exceeds `max_solidity`: an elongated single nucleus has
  several maxima along its ridge but is convex, two touching nuclei have a neck (1.0: keep all).
  """
  mask = np.asarray(mask, bool)
  if mask.sum() == 0:
    return np.zeros((0, 2), np.int64)
  # A 1-px frame of background, so that the mask's border counts as its edge.
  distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
  peaks = skimage.feature.peak_local_max(distance, min_distance=max(1, int(min_distance)),
                                         threshold_abs=float(min_depth), exclude_border=False,
                                         num_peaks=int(max_lobes))
  peaks = np.asarray(peaks, np.int64).reshape(-1, 2)
  # Solidity is a convex hull per candidate: computed only where it can matter.
  if len(peaks) < 2 or (max_solidity < 1 and solidity(mask) > max_solidity):
    return np.zeros((0, 2), np.int64)
  return peaks


def solidity(mask: np.ndarray) -> float:
  """Pixels of `mask` over pixels of its convex hull (1 for a convex mask)."""
  return float(mask.sum() / skimage.morphology.convex_hull_image(mask).sum())


def object_lobes(pixel: np.ndarray, object_id: np.ndarray, image_width: int,
                 min_distance: int, min_depth: float, max_lobes: int,
                 max_solidity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lobe centres of every candidate given as claimed (flat pixel, object id) pairs.

  Returns (centres (M, 2) image yx, parent object id (M,), lobe index within the parent (M,)),
  parents in increasing id order. Each pair is listed once (as `assembly.claims` gives them).
  """
  pixel, object_id = np.asarray(pixel, np.int64), np.asarray(object_id, np.int64)
  order = np.lexsort((pixel, object_id))
  pixel, object_id = pixel[order], object_id[order]
  starts = np.flatnonzero(np.r_[True, object_id[1:] != object_id[:-1]]) if pixel.size else []
  centres, parents, index = [], [], []
  for start, stop in zip(starts, np.r_[starts[1:], pixel.size]):
    y, x = pixel[start:stop] // image_width, pixel[start:stop] % image_width
    mask = np.zeros((y.max() - y.min() + 1, x.max() - x.min() + 1), bool)
    mask[y - y.min(), x - x.min()] = True
    lobes = lobe_centres(mask, min_distance, min_depth, max_lobes, max_solidity)
    centres.append(lobes + np.array([y.min(), x.min()]))
    parents.append(np.full(len(lobes), object_id[start]))
    index.append(np.arange(len(lobes)))
  if not centres:
    return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
  return (np.concatenate(centres).astype(np.int64), np.concatenate(parents).astype(np.int64),
          np.concatenate(index).astype(np.int64))
