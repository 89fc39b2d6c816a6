"""Assembly of segmented pieces into whole-image semantic and instance predictions.

Semantic: the union of every piece's central mask (probability > threshold), clipped to the
image. Instances: each object id is one candidate (the union of its pieces; per pixel the largest
probability among them). Candidates that are the same nucleus (IoU ≥ merge_iou, or one at least
merge_containment inside the other) merge: connected components of the "same nucleus" graph. A
pixel claimed by several instances goes to the highest probability (ties: the instance holding
the smallest object id).
With `split_containers`, a candidate that contains (each at least `split_containment` inside
it) two or more candidates that are not the same nucleus as each other is taken for a merger of those
nuclei: it is withdrawn instead of joining them, so the contained candidates stay apart (without
the rule the container would join all of them into one instance). Containers are judged from the
smallest up, and withdrawn ones are no longer contents, so nested mergers of the same nuclei
are all withdrawn.
Instances below min_size pixels are dropped and their pixels go to the next-best claim, if any;
dropping only ever adds pixels to the remaining instances, so one pass suffices. Output ids are
consecutive 1..N in raster order of each instance's first pixel.

Assembly works from sparse claims: (pixel, object id, probability) for every piece pixel above
the threshold, which is all it ever reads of the pieces. `claims` reduces pieces to them (one
claim per pixel and object) and `assemble_claims` assembles from them, so a streamed prediction
can reduce each chunk of pieces as it goes and assemble once from the concatenated claims: the
result does not depend on the order or the chunking of the claims.

Everything is sparse (pixel, candidate) bookkeeping with NumPy/SciPy; no per-pixel Python.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from spiralnet_jax import continuation


class Claims(NamedTuple):
  """Thresholded piece pixels: which image pixel, which object, with what probability."""

  pixel: np.ndarray  # (N,) flat image index y * W + x (int32 when H·W < 2^31, else int64).
  object_id: np.ndarray  # (N,) int32.
  prob: np.ndarray  # (N,) float32, > the threshold.


def pixel_dtype(image_shape: tuple[int, int]) -> np.dtype:
  """The smallest of int32 / int64 that indexes every pixel (claims are most of the memory)."""
  return np.dtype(np.int32 if int(image_shape[0]) * int(image_shape[1]) < 2**31 else np.int64)


def claims(pieces: continuation.Pieces, image_shape: tuple[int, int],
           threshold: float) -> Claims:
  """Every piece pixel > threshold inside the image, one claim per (pixel, object): the max."""
  probs = continuation.central_probs(pieces.probs)
  p, y, x = np.nonzero(probs > threshold)
  origins = np.asarray(pieces.origins, np.int64)
  iy = origins[p, 0] + y
  ix = origins[p, 1] + x
  inside = (iy >= 0) & (iy < image_shape[0]) & (ix >= 0) & (ix < image_shape[1])
  pixel = (iy[inside] * image_shape[1] + ix[inside]).astype(pixel_dtype(image_shape))
  ids = np.asarray(pieces.object_ids, np.int32)[p[inside]]
  return Claims(*_max_per_pair(pixel, ids, probs[p[inside], y[inside], x[inside]]))


def concatenate_claims(parts: list[Claims], image_shape: tuple[int, int]) -> Claims:
  """One Claims of several (e.g. the chunks of a streamed prediction); empties `parts`.

  Field by field, dropping each field's parts once joined: at most one field is held twice,
  not all three (claims are most of a big image's prediction memory).
  """
  fields = [list(field) for field in zip(*parts)] if parts else [[], [], []]
  parts.clear()
  joined = []
  for values, dtype in zip(fields, (pixel_dtype(image_shape), np.int32, np.float32)):
    joined.append(np.concatenate([np.zeros(0, dtype)]
                                 + [v.astype(dtype, copy=False) for v in values]))
    values.clear()
  return Claims(*joined)


def _max_per_pair(pixel: np.ndarray, group: np.ndarray,
                  prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Collapses duplicate (pixel, group) claims to one, keeping the largest probability."""
  order = np.lexsort((-prob, pixel, group))
  pixel, group, prob = pixel[order], group[order], prob[order]
  first = np.ones(pixel.size, bool)
  first[1:] = (pixel[1:] != pixel[:-1]) | (group[1:] != group[:-1])
  return pixel[first], group[first], prob[first]


def _winners(pixel: np.ndarray, group: np.ndarray, prob: np.ndarray,
             num_pixels: int) -> np.ndarray:
  """(num_pixels,) int32: per pixel the group with the highest probability (ties: the lower
  group), −1 where nothing claims it.

  Groups are numbered in order of their smallest object id (candidates are sorted ids and
  connected components are labelled in node order). Dense per-pixel maxima (two image-sized
  arrays) rather than a sort of the claims, which for big images are many times more.
  """
  best = np.full(num_pixels, -np.inf, np.float32)
  np.maximum.at(best, pixel, prob)
  top = (prob == best[pixel]) & (prob > -np.inf)  # -inf: a claim withdrawn by the caller.
  del best
  winner = np.full(num_pixels, np.iinfo(np.int32).max, np.int32)
  np.minimum.at(winner, pixel[top], group[top])
  winner[winner == np.iinfo(np.int32).max] = -1
  return winner


def merge_candidates(pixel: np.ndarray, candidate: np.ndarray, num_candidates: int,
                     merge_iou: float, merge_containment: float,
                     row: np.ndarray | None = None, split_containers: bool = False,
                     split_containment: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
  """(merged-instance index (num_candidates,), withdrawn (num_candidates,) bool) per candidate.

  Merged instances are the connected components of the "same nucleus" graph; `withdrawn`
  marks the containers `split_containers` takes out (see the module docstring), which form
  components of their own. `pixel`, `candidate` list each (pixel, candidate) incidence once.
  `row`, if given, numbers the claimed pixels 0..R−1 (any one-to-one numbering; default: by
  np.unique).
  """
  if num_candidates == 0:
    return np.zeros(0, np.int64), np.zeros(0, bool)
  if row is None:
    _, row = np.unique(pixel, return_inverse=True)
  # The (candidate × pixel) incidence in CSR, built straight from claims sorted by candidate
  # (streamed claims come so: chunks and their objects in raster order); no COO copies.
  if candidate.size > 1 and (candidate[1:] < candidate[:-1]).any():
    order = np.argsort(candidate, kind="stable")
    candidate, row = candidate[order], row[order]
    del order
  area = np.bincount(candidate, minlength=num_candidates)
  index_dtype = np.int32 if pixel.size < 2**31 else np.int64
  indptr = np.zeros(num_candidates + 1, index_dtype)
  np.cumsum(area, out=indptr[1:])
  incidence = scipy.sparse.csr_matrix(
      (np.ones(pixel.size, np.int32), row.astype(index_dtype, copy=False), indptr),
      shape=(num_candidates, int(row.max(initial=-1)) + 1))
  del row
  overlap = (incidence @ incidence.T).tocoo()  # Intersections; the diagonal holds the areas.
  del incidence
  i, j, inter = overlap.row, overlap.col, overlap.data.astype(np.int64)
  iou = inter / (area[i] + area[j] - inter)
  containment = inter / np.minimum(area[i], area[j])
  same = (i != j) & ((iou >= merge_iou) | (containment >= merge_containment))
  withdrawn = np.zeros(num_candidates, bool)
  if split_containers:
    # j lies inside i: at least split_containment of j, and j is the smaller one.
    inside = (i != j) & (inter >= split_containment * area[j]) & (area[j] < area[i])
    withdrawn = _mergers(i[inside], j[inside], i[same], j[same], area)
    same &= ~withdrawn[i] & ~withdrawn[j]
  graph = scipy.sparse.coo_matrix((np.ones(same.sum()), (i[same], j[same])),
                                  shape=(num_candidates, num_candidates))
  return scipy.sparse.csgraph.connected_components(graph, directed=False)[1], withdrawn


def _mergers(container: np.ndarray, content: np.ndarray, same_i: np.ndarray,
             same_j: np.ndarray, area: np.ndarray) -> np.ndarray:
  """(num_candidates,) bool: containers whose contents form ≥ 2 separate nuclei.

  Contents are separate when no chain of "same nucleus" edges among the contents (the
  container's own edges left out) joins them. Containers are judged smallest first, and a
  withdrawn candidate no longer counts as content: a smaller merger of the same two nuclei
  inside a bigger one would otherwise chain them together and save the bigger one (on the base
  model's BBBC039 validation claims this ordering took merges from 196 to 151, a one-off study;
  results/bbbc039-cpu-recipe/seeding/ has the 151).
  """
  num_candidates = area.size
  withdrawn = np.zeros(num_candidates, bool)
  if container.size == 0:
    return withdrawn
  same = scipy.sparse.csr_matrix((np.ones(same_i.size, np.int8), (same_i, same_j)),
                                 shape=(num_candidates, num_candidates))
  # Smallest container first (ties: the lower candidate), its contents grouped behind it.
  order = np.lexsort((content, container, area[container]))
  container, content = container[order], content[order]
  starts = np.flatnonzero(np.r_[True, container[1:] != container[:-1]])
  for start, stop in zip(starts, np.r_[starts[1:], container.size]):
    members = content[start:stop]
    members = members[~withdrawn[members]]
    if members.size < 2:
      continue
    parts = scipy.sparse.csgraph.connected_components(same[members][:, members],
                                                      directed=False)[0]
    withdrawn[container[start]] = parts >= 2
  return withdrawn


def assemble_claims(claimed: Claims, image_shape: tuple[int, int], merge_iou: float,
                    merge_containment: float, min_size: int, split_containers: bool = False,
                    split_containment: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
  """Whole-image (semantic bool (H, W), instances int32 (H, W)) from thresholded claims.

  `claimed` holds at most one claim per (pixel, object), as `claims` returns them (and as a
  concatenation of claims of disjoint sets of objects does).
  """
  height, width = int(image_shape[0]), int(image_shape[1])
  num_pixels = height * width
  semantic = np.zeros(num_pixels, bool)
  pixel, ids, prob = claimed
  del claimed  # The arrays are freed as soon as they are no longer needed here.
  semantic[pixel] = True
  if pixel.size == 0:
    return semantic.reshape(height, width), np.zeros((height, width), np.int32)

  # Candidates are the sorted object ids (their ranks), so ties and merged groups follow ids.
  present = np.zeros(int(ids.max()) + 1, bool)
  present[ids] = True
  rank = np.cumsum(present, dtype=np.int32) - 1
  candidate = rank[ids]
  num_candidates = int(rank[-1]) + 1
  del ids, present, rank
  # Claimed pixels numbered in raster order (what np.unique would give), without a sort.
  row = (np.cumsum(semantic, dtype=np.int32) - 1)[pixel]
  merged, withdrawn = merge_candidates(pixel, candidate, num_candidates, merge_iou,
                                       merge_containment, row=row,
                                       split_containers=split_containers,
                                       split_containment=split_containment)
  group = merged[candidate].astype(np.int32)
  if withdrawn.any():
    prob = np.where(withdrawn[candidate], np.float32(-np.inf), prob)  # Never wins a pixel.
  del candidate, row

  # A group's duplicate claims on a pixel do not change who wins it, so no dedup is needed.
  winner = _winners(pixel, group, prob, num_pixels)
  size = np.bincount(winner[winner >= 0], minlength=int(group.max()) + 1)
  if (size < min_size).any():
    # Dropped groups' claims lose every pixel (-inf never wins; _winners skips it), without
    # copying all three claim arrays.
    del winner
    prob = np.where(size[group] >= min_size, prob, np.float32(-np.inf))
    winner = _winners(pixel, group, prob, num_pixels)
  del pixel, group, prob

  instances = raster_ids(winner, -1)  # Reused in place: one image-sized int32 array fewer.
  return semantic.reshape(height, width), instances.reshape(height, width)


def raster_ids(labels: np.ndarray, background: int) -> np.ndarray:
  """Renumbers a flat int32 label array in place and returns it: each label becomes 1..N in
  raster order of its first pixel, `background` becomes 0 (the instance ids' convention)."""
  won_pixel = np.flatnonzero(labels != background)
  won_group = labels[won_pixel]
  groups, first_index = np.unique(won_group, return_index=True)
  ids = np.empty(groups.size, np.int32)
  ids[np.argsort(first_index, kind="stable")] = np.arange(1, groups.size + 1, dtype=np.int32)
  labels[:] = 0
  labels[won_pixel] = ids[np.searchsorted(groups, won_group)]
  return labels


def assemble(pieces: continuation.Pieces, image_shape: tuple[int, int], threshold: float,
             merge_iou: float, merge_containment: float, min_size: int,
             split_containers: bool = False,
             split_containment: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
  """Whole-image (semantic bool (H, W), instances int32 (H, W)) from segmented pieces."""
  return assemble_claims(claims(pieces, image_shape, threshold), image_shape, merge_iou,
                         merge_containment, min_size, split_containers, split_containment)


def assemble_claims_from_config(claimed: Claims, image_shape: tuple[int, int],
                                config: Any) -> tuple[np.ndarray, np.ndarray]:
  """`assemble_claims` with its numbers from a `config.assembly` ConfigDict."""
  return assemble_claims(claimed, image_shape, merge_iou=float(config.merge_iou),
                         merge_containment=float(config.merge_containment),
                         min_size=int(config.min_size),
                         split_containers=bool(config.split_containers),
                         split_containment=float(config.split_containment))


def assemble_from_config(pieces: continuation.Pieces, image_shape: tuple[int, int],
                         config: Any) -> tuple[np.ndarray, np.ndarray]:
  """`assemble` with its numbers from a `config.assembly` ConfigDict."""
  return assemble_claims_from_config(claims(pieces, image_shape, float(config.threshold)),
                                     image_shape, config)
