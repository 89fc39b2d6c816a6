"""Assembly of segmented pieces into whole-image semantic and instance predictions.

Semantic: the union of every piece's central mask (probability > threshold), clipped to the
image. Instances: each object id is one candidate (the union of its pieces; per pixel the largest
probability among them). Candidates that are the same nucleus (IoU ≥ merge_iou, or one at least
merge_containment inside the other) merge: connected components of the "same nucleus" graph. A
pixel claimed by several instances goes to the highest probability (ties: the instance holding
the smallest object id).
Instances below min_size pixels are dropped and their pixels go to the next-best claim, if any;
dropping only ever adds pixels to the remaining instances, so one pass suffices. Output ids are
consecutive 1..N in raster order of each instance's first pixel.

Everything is sparse (pixel, candidate) bookkeeping with NumPy/SciPy; no per-pixel Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from spiralnet_jax import continuation


def _claims(pieces: continuation.Pieces, image_shape: tuple[int, int],
            threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(pixel, object id, probability) of every thresholded piece pixel inside the image."""
  probs = continuation.central_probs(pieces.probs)
  p, y, x = np.nonzero(probs > threshold)
  origins = np.asarray(pieces.origins, np.int64)
  iy = origins[p, 0] + y
  ix = origins[p, 1] + x
  inside = (iy >= 0) & (iy < image_shape[0]) & (ix >= 0) & (ix < image_shape[1])
  pixel = iy[inside] * image_shape[1] + ix[inside]
  ids = np.asarray(pieces.object_ids, np.int64)[p[inside]]
  return pixel, ids, probs[p[inside], y[inside], x[inside]]


def _max_per_pair(pixel: np.ndarray, group: np.ndarray,
                  prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Collapses duplicate (pixel, group) claims to one, keeping the largest probability."""
  order = np.lexsort((-prob, pixel, group))
  pixel, group, prob = pixel[order], group[order], prob[order]
  first = np.ones(pixel.size, bool)
  first[1:] = (pixel[1:] != pixel[:-1]) | (group[1:] != group[:-1])
  return pixel[first], group[first], prob[first]


def _winners(pixel: np.ndarray, group: np.ndarray,
             prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per claimed pixel, the group with the highest probability (ties: the lower group).

  Groups are numbered in order of their smallest object id (candidates are sorted ids and
  connected components are labelled in node order).
  """
  order = np.lexsort((group, -prob, pixel))
  pixel, group = pixel[order], group[order]
  first = np.ones(pixel.size, bool)
  first[1:] = pixel[1:] != pixel[:-1]
  return pixel[first], group[first]


def merge_candidates(pixel: np.ndarray, candidate: np.ndarray, num_candidates: int,
                     merge_iou: float, merge_containment: float) -> np.ndarray:
  """(num_candidates,) merged-instance index of each candidate (connected components).

  `pixel`, `candidate` list each (pixel, candidate) incidence once.
  """
  if num_candidates == 0:
    return np.zeros(0, np.int64)
  _, row = np.unique(pixel, return_inverse=True)
  incidence = scipy.sparse.csr_matrix(
      (np.ones(pixel.size, np.int64), (row, candidate)),
      shape=(int(row.max(initial=-1)) + 1, num_candidates))
  overlap = (incidence.T @ incidence).tocoo()  # Intersections; the diagonal holds the areas.
  area = np.asarray(incidence.sum(axis=0)).ravel()
  i, j, inter = overlap.row, overlap.col, overlap.data
  iou = inter / (area[i] + area[j] - inter)
  containment = inter / np.minimum(area[i], area[j])
  same = (i != j) & ((iou >= merge_iou) | (containment >= merge_containment))
  graph = scipy.sparse.coo_matrix((np.ones(same.sum()), (i[same], j[same])),
                                  shape=(num_candidates, num_candidates))
  return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def assemble(pieces: continuation.Pieces, image_shape: tuple[int, int], threshold: float,
             merge_iou: float, merge_containment: float,
             min_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Whole-image (semantic bool (H, W), instances int32 (H, W)) from segmented pieces."""
  height, width = int(image_shape[0]), int(image_shape[1])
  semantic = np.zeros(height * width, bool)
  instances = np.zeros(height * width, np.int32)
  pixel, ids, prob = _claims(pieces, (height, width), threshold)
  semantic[pixel] = True
  if pixel.size == 0:
    return semantic.reshape(height, width), instances.reshape(height, width)

  _, candidate = np.unique(ids, return_inverse=True)
  pixel, candidate, prob = _max_per_pair(pixel, candidate, prob)
  group = merge_candidates(pixel, candidate, int(candidate.max()) + 1, merge_iou,
                           merge_containment)[candidate]
  pixel, group, prob = _max_per_pair(pixel, group, prob)

  won_pixel, won_group = _winners(pixel, group, prob)
  size = np.bincount(won_group, minlength=int(group.max()) + 1)
  kept = size[group] >= min_size
  won_pixel, won_group = _winners(pixel[kept], group[kept], prob[kept])

  # Consecutive ids, ordered by each instance's first pixel (won_pixel is sorted).
  groups, first_index = np.unique(won_group, return_index=True)
  rank = np.empty(groups.size, np.int32)
  rank[np.argsort(first_index, kind="stable")] = np.arange(1, groups.size + 1, dtype=np.int32)
  instances[won_pixel] = rank[np.searchsorted(groups, won_group)]
  return semantic.reshape(height, width), instances.reshape(height, width)


def assemble_from_config(pieces: continuation.Pieces, image_shape: tuple[int, int],
                         config: Any) -> tuple[np.ndarray, np.ndarray]:
  """`assemble` with its numbers from a `config.assembly` ConfigDict."""
  return assemble(pieces, image_shape, threshold=float(config.threshold),
                  merge_iou=float(config.merge_iou),
                  merge_containment=float(config.merge_containment),
                  min_size=int(config.min_size))
