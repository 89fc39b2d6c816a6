"""Objects that leave their region (thesis Fig. 16): move the region and keep segmenting.

After a region is segmented, its central object is channel 0 > `threshold`. Where the object
touches a region edge, a new region is placed so that its centre pixel lands on the middle of the
object's pixels on that edge (their mean position, rounded); the segmenter runs there with the
mask state seeded from the parent piece's prediction shifted into the new frame, and the result
is added to the same object. An object leaving through several edges spreads breadth-first: each
new piece may move on through the edges it touches except the one facing back to its parent; a
move whose new centre falls inside the central area of a piece the object already has is
skipped (it would only re-segment covered ground, and would ping-pong). Each object gets at most
`max_moves` moves. Every round gathers all pending moves of all objects and runs them in
batches of `batch_size`, the rest padded to a halving bucket (`batch_bucket`), so the (jitted)
`segment_fn` compiles for a few shapes only.

Edge pixels outside the image are ignored: they belong to the reflect padding, and a mirrored
object there is not part of the nucleus (assembly clips it anyway).

All host-side NumPy, vectorised over pieces; the only Python loops are over rounds (≤ max_moves)
and over fixed-size batches.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import scipy.ndimage

from spiralnet_jax import regions

# segment_fn(regions (B, h, w) float32, init_mask (B, h, w, 3) float32) -> probs (B, h, w, 3).
SegmentFn = Callable[[np.ndarray, np.ndarray], Any]

# Edge order used throughout: top, bottom, left, right; `_OPPOSITE[e]` faces back across e.
_TOP, _BOTTOM, _LEFT, _RIGHT = 0, 1, 2, 3
_OPPOSITE = np.array([_BOTTOM, _TOP, _RIGHT, _LEFT])
_NO_EDGE = -1


class Pieces(NamedTuple):
  """Segmented regions: where each sits, its central-object probability, which object it is."""

  origins: np.ndarray  # (P, 2) int32 image coordinates of each region's top-left.
  probs: np.ndarray  # (P, h, w) float32 central-object probability (or (P, h, w, 3) all three).
  object_ids: np.ndarray  # (P,) int32 object each piece belongs to.


def central_probs(probs: np.ndarray) -> np.ndarray:
  """(P, h, w) float32 channel 0 of (P, h, w, 3) probabilities; (P, h, w) passes through."""
  probs = np.asarray(probs, np.float32)
  return probs[..., 0] if probs.ndim == 4 else probs


# 4-connectivity within each (h, w) plane and none across the piece axis: one
# scipy.ndimage.label call labels every piece's components separately.
_PLANE_CROSS = np.array([np.zeros((3, 3)), [[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.zeros((3, 3))],
                        bool)


def anchored_components(central: np.ndarray, anchor: np.ndarray) -> np.ndarray:
  """(P, h, w) bool: the 4-connected components of `central` that touch `anchor`, per piece.

  A region's central object is one connected nucleus; foreground the segmenter marked central
  but that is not connected to the anchor (the region centre, or the parent piece's object)
  belongs to another nucleus and would otherwise merge with it in assembly.
  """
  central = np.asarray(central, bool)
  labels, _ = scipy.ndimage.label(central, structure=_PLANE_CROSS)
  keep = np.zeros(int(labels.max(initial=0)) + 1, bool)
  keep[labels[np.asarray(anchor, bool) & central]] = True
  keep[0] = False
  return keep[labels]


def centre_anchor(num: int, geom: regions.RegionGeometry) -> np.ndarray:
  """(num, h, w) bool: the central c×c score window of every region (c = score_window)."""
  anchor = np.zeros(geom.shape, bool)
  anchor[geom.score_slices()] = True
  return np.broadcast_to(anchor, (num,) + geom.shape)


def keep_connected(probs: np.ndarray, anchor: np.ndarray, threshold: float) -> np.ndarray:
  """`probs` (P, h, w, 3) with channel 0 zeroed outside the anchored central components."""
  probs = np.array(probs, np.float32)
  probs[..., 0] *= anchored_components(probs[..., 0] > threshold, anchor)
  return probs


def _round_half_up(x: np.ndarray) -> np.ndarray:
  """Rounds to the nearest integer, halves upwards (np.rint rounds halves to even)."""
  return np.floor(x + 0.5).astype(np.int64)


def edge_moves(central: np.ndarray, origins: np.ndarray, image_shape: tuple[int, int],
               geom: regions.RegionGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Moves out of each piece through the edges its central object touches (inside the image).

  Args:
    central: (P, h, w) bool central-object masks.
    origins: (P, 2) image coordinates of the regions' top-lefts.
    image_shape: (H, W) of the image.
    geom: the region geometry.

  Returns:
    touches (P, 4) bool (top, bottom, left, right), new_origins (P, 4, 2) int64 (meaningful
    where `touches`), counts (P, 4) int64 object pixels on each edge.
  """
  h, w = geom.shape
  cy, cx = geom.centre
  origins = np.asarray(origins, np.int64)
  rows = origins[:, :1] + np.arange(h)  # (P, h) image row of each region row.
  cols = origins[:, 1:] + np.arange(w)  # (P, w)
  row_in = (rows >= 0) & (rows < image_shape[0])
  col_in = (cols >= 0) & (cols < image_shape[1])
  # Horizontal edges run along columns, vertical ones along rows; an edge counts only if its
  # own row (column) is inside the image.
  horizontal = np.stack([central[:, 0, :] & row_in[:, :1], central[:, h - 1, :] & row_in[:, -1:]],
                        axis=1) & col_in[:, None, :]  # (P, 2, w)
  vertical = np.stack([central[:, :, 0] & col_in[:, :1], central[:, :, w - 1] & col_in[:, -1:]],
                      axis=1) & row_in[:, None, :]  # (P, 2, h)
  h_count = horizontal.sum(-1)
  v_count = vertical.sum(-1)
  h_mean = _round_half_up((horizontal * np.arange(w)).sum(-1) / np.maximum(h_count, 1))
  v_mean = _round_half_up((vertical * np.arange(h)).sum(-1) / np.maximum(v_count, 1))
  # New centre in the old region's coordinates: on the edge, at the mean position along it.
  centre_y = np.concatenate([np.broadcast_to([0, h - 1], h_mean.shape), v_mean], axis=1)
  centre_x = np.concatenate([h_mean, np.broadcast_to([0, w - 1], v_mean.shape)], axis=1)
  new_origins = origins[:, None, :] + np.stack([centre_y - cy, centre_x - cx], axis=-1)
  counts = np.concatenate([h_count, v_count], axis=1)
  return counts > 0, new_origins, counts


def shift_masks(probs: np.ndarray, delta: np.ndarray) -> np.ndarray:
  """Re-frames (B, h, w, C) masks into regions moved by `delta` (B, 2); zeros off the overlap.

  out[b, y, x] = probs[b, y + dy, x + dx] where that lies inside the old region, else 0.
  """
  b, h, w = probs.shape[:3]
  ys = np.arange(h) + delta[:, :1]  # (B, h)
  xs = np.arange(w) + delta[:, 1:]  # (B, w)
  valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
  gathered = probs[np.arange(b)[:, None, None], np.clip(ys, 0, h - 1)[:, :, None],
                   np.clip(xs, 0, w - 1)[:, None, :]]
  return np.where(valid[..., None], gathered, 0).astype(np.float32)


def crop_regions(padded: np.ndarray, pad: int, origins: np.ndarray,
                 geom: regions.RegionGeometry) -> np.ndarray:
  """(B, h, w) float32 regions of a `pad`-padded image at image-coordinate `origins` (B, 2)."""
  origins = np.asarray(origins, np.int64).reshape(-1, 2) + pad
  if origins.shape[0] == 0:  # The padded image may be smaller than one region.
    return np.zeros((0,) + geom.shape, np.float32)
  windows = sliding_window_view(padded, geom.shape)
  return np.asarray(windows[origins[:, 0], origins[:, 1]], np.float32)


# The smallest batch a remainder is padded to (see `run_batched`). Small: a spiral costs about
# its batch size (2-core CPU, shipped model, one thread: 59 / 30 / 18 ms at batch 8 / 4 / 2), and
# a continuation round often has one to three moves.
MIN_BUCKET = 2


def batch_bucket(n: int, batch_size: int) -> int:
  """The batch a chunk of n ≤ batch_size regions is padded to: batch_size / 2^k, ≥ MIN_BUCKET.

  A remainder (or a continuation round with a few moves) then costs at most twice its size
  rather than a whole batch, and the segmenter still compiles for at most
  log2(batch_size / MIN_BUCKET) + 1 shapes.
  """
  size = batch_size
  while size // 2 >= max(n, MIN_BUCKET) and size % 2 == 0:
    size //= 2
  return size


def batch_sizes(n: int, batch_size: int, threads: int = 1) -> list[int]:
  """The batches `run_batched` cuts n > 0 regions into: full ones of `batch_size`, the rest
  padded to a bucket; fewer regions than `threads` full batches are cut smaller instead, so
  that every thread has one."""
  # A batch far bigger than the regions (e.g. --batch-size 1000000000) would be padded to a
  # huge bucket: cap it at the power of two that holds them all.
  batch_size = min(int(batch_size), 1 << (max(n, MIN_BUCKET) - 1).bit_length())
  if n < batch_size * threads:
    batch_size = batch_bucket(-(-n // max(1, int(threads))), batch_size)
  full, rest = divmod(n, batch_size)
  return [batch_size] * full + ([batch_bucket(rest, batch_size)] if rest else [])


def all_batch_sizes(batch_size: int, threads: int = 1) -> list[int]:
  """Every batch size `run_batched` can call the segmenter with (what to compile ahead), for up
  to 2^14 regions a call: beyond that (a batch of thousands) a size compiles when it comes."""
  threads = max(1, int(threads))
  most = min(int(batch_size), 1 << 14) * (threads + 1)
  return sorted({size for n in range(1, most + 1)
                 for size in batch_sizes(n, batch_size, threads)}, reverse=True)


def run_batched(segment_fn: SegmentFn, region_batch: np.ndarray, init_mask: np.ndarray,
                batch_size: int, threads: int = 1) -> np.ndarray:
  """Runs `segment_fn` over `batch_sizes` batches, up to `threads` batches at once; (B, h, w, 3)
  in the input order."""
  if region_batch.shape[0] == 0:
    return np.zeros(region_batch.shape + (3,), np.float32)
  return map_batched(lambda regions, masks: (segment_fn(regions, masks),),
                     (region_batch, init_mask), batch_size, threads)[0]


def map_batched(fn: Callable[..., tuple[Any, ...]], arrays: tuple[np.ndarray, ...],
                batch_size: int, threads: int = 1) -> tuple[np.ndarray, ...]:
  """fn's outputs over `batch_sizes` batches of `arrays` (zero-padded, sliced back), up to
  `threads` batches at once, concatenated in the input order."""
  n = arrays[0].shape[0]
  sizes = batch_sizes(n, batch_size, threads)
  starts = np.cumsum([0] + sizes[:-1]).tolist()
  fill = sum(sizes) - n  # np.pad copies even when it adds nothing: big arrays pass as they are.
  padded = [np.pad(a, [(0, fill)] + [(0, 0)] * (a.ndim - 1)) if fill else a for a in arrays]
  batches = [[a[s:s + size] for a in padded] for s, size in zip(starts, sizes)]
  if threads <= 1 or len(batches) == 1:
    # Dispatch every batch before reading any back, so host and device work overlap.
    out = [fn(*batch) for batch in batches]
  else:
    # XLA:CPU runs one small-convolution spiral on about one core however many it has (2-core
    # CPU, shipped model: 80 regions/s, 128 pinned to one core); batches called from several
    # threads at once (JAX releases the GIL while one runs) keep every core busy: 200-240.
    with futures.ThreadPoolExecutor(min(int(threads), len(batches))) as pool:
      out = list(pool.map(lambda batch: tuple(np.asarray(o) for o in fn(*batch)), batches))
  return tuple(np.concatenate([np.asarray(o[i], np.float32) for o in out])[:n]
               for i in range(len(out[0])))


def _in_central_area(centres: np.ndarray, objects: np.ndarray, origins: np.ndarray,
                     object_ids: np.ndarray, geom: regions.RegionGeometry) -> np.ndarray:
  """(M,) whether each centre lies in the central half (per axis) of a same-object piece."""
  h, w = geom.shape
  lo = origins + np.array([h // 4, w // 4])  # (P, 2)
  hi = origins + np.array([h - h // 4, w - w // 4])
  inside = np.all((centres[:, None] >= lo[None]) & (centres[:, None] < hi[None]), axis=-1)
  return np.any(inside & (objects[:, None] == object_ids[None]), axis=1)


def continue_objects(segment_fn: SegmentFn, image: np.ndarray, first: Pieces,
                     geom: regions.RegionGeometry, max_moves: int, threshold: float,
                     batch_size: int, connected_only: bool = False, threads: int = 1) -> Pieces:
  """Follows objects out of their regions; returns `first` plus all new pieces (channel 0).

  Args:
    segment_fn: (regions (B, h, w), init_mask (B, h, w, 3)) -> probs (B, h, w, 3), called with
      B == batch_size or one of its buckets (`batch_bucket`) only.
    image: (H, W) normalised image.
    first: the initial pieces. With (P, h, w, 3) probs, moves are seeded with all three
      channels; with (P, h, w) central probabilities only, the seed carries channel 0 alone.
    geom: the region geometry.
    max_moves: most moves (new pieces) per object; also the number of rounds.
    threshold: central object = channel 0 > threshold.
    batch_size: the batch size `segment_fn` is compiled for.
    threads: how many batches run at once (`run_batched`).
    connected_only: keep only the central components of a moved piece that touch its parent's
      object (shifted into the new frame); see `keep_connected`.

  Returns Pieces (origins, (P', h, w) central probabilities, object ids), `first` in front.
  """
  first_probs = np.asarray(first.probs, np.float32)
  if first_probs.ndim == 3:
    first_probs = np.concatenate([first_probs[..., None], np.zeros(first_probs.shape + (2,),
                                                                   np.float32)], axis=-1)
  all_origins = [np.asarray(first.origins, np.int64).reshape(-1, 2)]
  all_ids = [np.asarray(first.object_ids, np.int64).reshape(-1)]
  all_probs = [first_probs[..., 0]]
  if max_moves <= 0 or all_ids[0].size == 0:
    return _as_pieces(all_origins, all_probs, all_ids)
  # Each move shifts a region by less than its size, so this padding keeps every region that
  # `max_moves` rounds can reach inside the padded image.
  reach = max_moves * max(geom.shape)
  pad = int(max(0, -all_origins[0].min(), (all_origins[0] + geom.shape - image.shape).max())
            + reach)
  padded = regions.reflect_pad(np.asarray(image, np.float32), pad)
  unique_ids, object_index = np.unique(all_ids[0], return_inverse=True)
  all_obj = [object_index]  # Object index (into unique_ids) of every piece.
  budget = np.full(unique_ids.size, max_moves, np.int64)
  # The frontier: pieces that may spawn moves, with the edge that faces back to their parent.
  front = (all_origins[0], first_probs, object_index, np.full(all_ids[0].size, _NO_EDGE))
  for _ in range(max_moves):
    f_origins, f_probs, f_obj, f_back = front
    moves = _chosen_moves(edge_moves(f_probs[..., 0] > threshold, f_origins, image.shape, geom),
                          f_obj, f_back, np.concatenate(all_origins), np.concatenate(all_obj),
                          budget, geom)
    if moves is None:
      break
    parent, edge, objects, origins = moves
    seeds = shift_masks(f_probs[parent], origins - f_origins[parent])
    probs = run_batched(segment_fn, crop_regions(padded, pad, origins, geom), seeds, batch_size,
                        threads)
    if connected_only:
      probs = keep_connected(probs, seeds[..., 0] > threshold, threshold)
    all_origins.append(origins)
    all_probs.append(probs[..., 0])
    all_ids.append(unique_ids[objects])
    all_obj.append(objects)
    front = (origins, probs, objects, _OPPOSITE[edge])
  return _as_pieces(all_origins, all_probs, all_ids)


def _chosen_moves(proposed: tuple[np.ndarray, np.ndarray, np.ndarray], f_obj: np.ndarray,
                  f_back: np.ndarray, seen_origins: np.ndarray, seen_obj: np.ndarray,
                  budget: np.ndarray, geom: regions.RegionGeometry
                  ) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """(parent, edge, object, origin) of this round's moves, or None; spends `budget` in place.

  `proposed` is `edge_moves` of the frontier. A move back through the edge a piece came from is
  dropped, and so is one whose region's centre lies in the central area of a piece its object
  already has; within an object the largest crossings go first (ties: frontier order, then top /
  bottom / left / right), one region per object once, at most `budget[object]` moves.
  """
  touches, new_origins, counts = proposed
  returning = f_back != _NO_EDGE
  touches[np.nonzero(returning)[0], f_back[returning]] = False
  cy, cx = geom.centre
  parent, edge = np.nonzero(touches)
  if parent.size == 0:
    return None
  objects = f_obj[parent]
  origins = new_origins[parent, edge]
  crossing = counts[parent, edge]
  order = np.nonzero(~_in_central_area(origins + [cy, cx], objects, seen_origins, seen_obj,
                                       geom))[0]
  order = order[np.lexsort((-crossing[order], objects[order]))]
  # Two pieces of one object may propose the same region: keep the first.
  _, first_of = np.unique(np.stack([objects[order], origins[order, 0], origins[order, 1]], 1),
                          axis=0, return_index=True)
  order = order[np.sort(first_of)]  # Still grouped by object.
  obj = objects[order]
  rank = np.arange(obj.size) - np.searchsorted(obj, obj)
  order = order[rank < budget[obj]]
  if order.size == 0:
    return None
  np.subtract.at(budget, objects[order], 1)
  return parent[order], edge[order], objects[order], origins[order]


def _as_pieces(origins: list[np.ndarray], probs: list[np.ndarray],
               ids: list[np.ndarray]) -> Pieces:
  """Concatenates per-round lists into one Pieces with fixed dtypes."""
  return Pieces(np.concatenate(origins).astype(np.int32),
                np.concatenate(probs).astype(np.float32),
                np.concatenate(ids).astype(np.int32))


def window_rows(origins: np.ndarray, image_height: int, geom: regions.RegionGeometry,
                max_moves: int) -> tuple[int, int]:
  """[top, bottom) image rows that segmenting and following objects from `origins` can read.

  A move puts the new centre on the old region's edge, so it shifts a region by at most
  max(cy, h − 1 − cy) rows; `max_moves` of them stay inside the first regions' rows widened by
  that reach. The extra `pad + max_moves·max(h, w)` rows keep every reflection across a
  clipped (image) edge inside the window, so cropping from the window's own reflect padding
  reads exactly the pixels the whole image's padding holds.
  """
  h, w = geom.shape
  cy = geom.centre[0]
  reach = max_moves * max(cy, h - 1 - cy) + geom.pad + max_moves * max(h, w)
  top = int(origins[:, 0].min()) - reach
  bottom = int(origins[:, 0].max()) + h + reach
  return max(top, 0), min(bottom, image_height)
