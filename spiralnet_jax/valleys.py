"""Splitting assembled instances along the dark valley between two touching nuclei.

Assembly sees only the segmenter's candidates. Where the segmenter itself took two touching
nuclei for one (its region centred on one of them marked both central, or the other nucleus had
no region of its own), no candidate separates them and no rule over candidates can. The image
can: a Hoechst-stained nucleus is bright throughout, and two touching nuclei meet along a line
dimmer than either. So, per instance (`assembly.split_valleys`):
  1. parts: the watershed of the instance's own distance transform, from its maxima at least
     `valley_min_depth` px deep and `valley_min_distance` px apart (one maximum: nothing to do);
  2. valley: along the border of two adjacent parts, the mean over neighbouring pixel pairs of
     the brighter pixel's intensity; level: a part's `valley_level_percentile` intensity;
  3. two adjacent parts stay one nucleus unless their valley is below `valley_ratio` × the lower
     of their levels; the instance splits into the groups of parts that stay joined, and only
     if every group has at least `assembly.min_size` px.
Only instance labels change, never which pixels are foreground: the semantic mask is untouched.
Chosen on BBBC039 validation (results/bbbc039-cpu-recipe/seeding/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse
import scipy.sparse.csgraph
import skimage.feature
import skimage.segmentation

from spiralnet_jax import assembly

# The precision the rule reads a prepared [0, 1] image at: float16 (11 significant bits) gave
# the same instances as float32 on all 100 BBBC039 validation and test fields (session 11), and
# a float16 copy is what prediction holds through assembly (`kept_image`).
INTENSITY_DTYPE = np.float16


def _parts(mask: np.ndarray, min_distance: int, min_depth: float) -> np.ndarray:
  """int labels (mask.shape): the watershed parts of `mask`'s distance transform, 0 outside."""
  # A 1-px frame of background, so that the crop's border counts as the mask's edge.
  distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
  peaks = skimage.feature.peak_local_max(distance, min_distance=max(1, int(min_distance)),
                                         threshold_abs=float(min_depth), exclude_border=False,
                                         labels=mask.astype(np.int32))
  if len(peaks) < 2:
    return mask.astype(np.int32)
  markers = np.zeros(mask.shape, np.int32)
  markers[tuple(np.asarray(peaks).T)] = np.arange(1, len(peaks) + 1)
  return skimage.segmentation.watershed(-distance, markers, mask=mask).astype(np.int32)


# (pixel, its neighbour below) and (pixel, its neighbour to the right), as slice pairs.
_NEIGHBOURS = (((slice(None, -1),), (slice(1, None),)),
               ((slice(None), slice(None, -1)), (slice(None), slice(1, None))))


def _valleys(parts: np.ndarray, intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(pairs (E, 2) of adjacent part labels, their valley intensity (E,)): see the module doc."""
  first, second, value = [], [], []
  for here, there in _NEIGHBOURS:
    a, b = parts[here], parts[there]
    border = (a != b) & (a > 0) & (b > 0)
    first.append(np.minimum(a[border], b[border]))
    second.append(np.maximum(a[border], b[border]))
    value.append(np.maximum(intensity[here][border], intensity[there][border]))
  base = int(parts.max()) + 1  # Pair (p, q) is the key p * base + q.
  keys, inverse = np.unique(np.concatenate(first).astype(np.int64) * base
                            + np.concatenate(second), return_inverse=True)
  mean = np.bincount(inverse, np.concatenate(value).astype(np.float64)) / np.bincount(inverse)
  return np.stack([keys // base, keys % base], axis=1), mean


def split_mask(mask: np.ndarray, intensity: np.ndarray, min_distance: int, min_depth: float,
               ratio: float, level_percentile: float, min_size: int) -> np.ndarray:
  """int32 labels (mask.shape) of one instance's nuclei, 1..k (k = 1: no split), 0 outside."""
  mask = np.asarray(mask, bool)
  if mask.sum() < 2 * min_size:
    return mask.astype(np.int32)
  parts = _parts(mask, min_distance, min_depth)
  num_parts = int(parts.max())
  if num_parts < 2:
    return parts
  flat_parts, flat_values = parts[mask], np.asarray(intensity, np.float64)[mask]
  level = np.array([np.percentile(flat_values[flat_parts == k], level_percentile)
                    for k in range(1, num_parts + 1)])
  pairs, valley = _valleys(parts, intensity)
  joined = valley >= ratio * np.minimum(level[pairs[:, 0] - 1], level[pairs[:, 1] - 1])
  graph = scipy.sparse.coo_matrix(
      (np.ones(int(joined.sum())), (pairs[joined, 0] - 1, pairs[joined, 1] - 1)),
      shape=(num_parts, num_parts))
  count, group = scipy.sparse.csgraph.connected_components(graph, directed=False)
  if count < 2:
    return mask.astype(np.int32)
  nuclei = np.r_[0, group + 1].astype(np.int32)[parts]
  if (np.bincount(nuclei[mask])[1:] < min_size).any():
    return mask.astype(np.int32)
  return nuclei


def split_instances(instances: np.ndarray, intensity: np.ndarray, min_distance: int,
                    min_depth: float, ratio: float, level_percentile: float,
                    min_size: int) -> np.ndarray:
  """int32 (H, W) instances with each one split along its valleys, ids 1..N in raster order."""
  out = np.array(instances, np.int32)  # C-contiguous: renumbered in place below.
  first_new = next_id = int(out.max(initial=0)) + 1
  for label, box in enumerate(ndi.find_objects(out), start=1):
    if box is None:
      continue
    mask = out[box] == label
    nuclei = split_mask(mask, intensity[box], min_distance, min_depth, ratio,
                        level_percentile, min_size)
    for k in range(2, int(nuclei.max()) + 1):
      out[box][nuclei == k] = next_id
      next_id += 1
  if next_id > first_new:  # New parts took ids past the old ones: back to raster order.
    assembly.raster_ids(out.reshape(-1), 0)
  return out


def kept_image(image: np.ndarray, config: Any) -> np.ndarray | None:
  """What `split_from_config` will read of a prepared image (None when the rule is off).

  Prediction holds it through assembly, the memory peak of big images, so it is kept at the
  precision the rule reads anyway (INTENSITY_DTYPE): half of float32.
  """
  return np.asarray(image, INTENSITY_DTYPE) if bool(config.split_valleys) else None


def split_from_config(instances: np.ndarray, intensity: np.ndarray | None,
                      config: Any) -> np.ndarray:
  """`split_instances` with its numbers from `config.assembly` (the assembly section), the
  intensity read as INTENSITY_DTYPE; `instances` unchanged when the rule is off."""
  if not bool(config.split_valleys):
    return instances
  return split_instances(instances, np.asarray(intensity, INTENSITY_DTYPE),
                         int(config.valley_min_distance), float(config.valley_min_depth),
                         float(config.valley_ratio), float(config.valley_level_percentile),
                         int(config.min_size))
