"""Huge images block by block: each block predicted with a margin, its own instances kept, stitched.

    labels = blocks.segment_blocks(predictor, zarr.open_array("slide.zarr", mode="r"),
                                   out=zarr.open_array("labels.zarr", mode="w", ...))

The image is cut into `block`×`block` cores; each core is predicted inside a window that adds
`margin` px of real image on every side (enough for a nucleus's regions and their continuation,
so the regions of a kept nucleus see what they see in the whole image), and the block keeps the
instances whose centroid lies in its core. An instance cut by a core edge is thus kept whole, by
one block, with one id. All windows are normalised by the same intensity range, the whole
image's (estimated from a regular subsample of at most `sample_pixels` pixels), as whole-image
prediction does. Blocks run through `map_fn` (the builtin `map`, or a Dask client's, see
`dask_map`), and the kept instances are painted into `out` (a NumPy or Zarr array) one block at
a time, so the image never has to be in memory at once. Not exact: a nucleus near a core edge
may be assembled from other candidates than in the whole image (measured: tests/test_blocks.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Optional

import numpy as np
from scipy import ndimage

from spiralnet_jax import data as data_lib
from spiralnet_jax import predict

# (row0, row1, col0, col1) of a window and the (top, left) of its core inside it.
Window = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]
Instances = list[tuple[tuple[int, int], np.ndarray]]  # ((top, left) in the image, bool mask).


def spans(size: int, block: int, margin: int) -> list[tuple[int, int, int, int]]:
  """(core start, core end, window start, window end) along one axis."""
  return [(start, min(start + block, size), max(0, start - margin),
           min(size, start + block + margin)) for start in range(0, size, block)]


def windows(shape: tuple[int, int], block: int, margin: int) -> list[Window]:
  """Every block's (window, core) in raster order."""
  return [((w0, w1, v0, v1), (c0, c1, d0, d1))
          for c0, c1, w0, w1 in spans(shape[0], block, margin)
          for d0, d1, v0, v1 in spans(shape[1], block, margin)]


def intensity_range(image: Any, percentiles: tuple[float, float],
                    sample_pixels: int = 1 << 24) -> tuple[float, float]:
  """The (low, high) normalisation range of a whole (possibly out-of-core) image."""
  step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / sample_pixels))))
  return data_lib.intensity_range(np.asarray(image[::step, ::step]), percentiles)


def block_instances(predictor: predict.Predictor, value_range: tuple[float, float],
                    window_image: np.ndarray, window: Window) -> Instances:
  """The instances of one window whose centroid lies in its core, in image coordinates."""
  (w0, _, v0, _), (c0, c1, d0, d1) = window
  prepared = data_lib.stretch(np.asarray(window_image), *value_range).astype(np.float32)
  _, labels = predict.predict_prepared(predictor, prepared)
  kept = []
  for index, box in enumerate(ndimage.find_objects(labels), start=1):
    if box is None:
      continue
    mask = labels[box] == index
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean() + box[0].start + w0, cols.mean() + box[1].start + v0
    if c0 <= cy < c1 and d0 <= cx < d1:
      kept.append(((box[0].start + w0, box[1].start + v0), mask))
  return kept


def segment_blocks(predictor: predict.Predictor, image: Any, block: int = 2048,
                   margin: int = 128, out: Optional[Any] = None,
                   map_fn: Callable[..., Iterable[Instances]] = map) -> Any:
  """Instance labels (uint32) of a huge 2-D image, predicted block by block; see the module doc."""
  shape = tuple(image.shape)
  if len(shape) != 2:
    raise ValueError(f"expected a 2-D (H, W) image, got shape {shape}")
  value_range = intensity_range(image, predict.percentiles(predictor.config))
  out = np.zeros(shape, np.uint32) if out is None else out
  plan = windows(shape, block, margin)
  tiles = (np.asarray(image[w0:w1, v0:v1]) for (w0, w1, v0, v1), _ in plan)
  found = map_fn(functools.partial(block_instances, predictor, value_range), tiles, plan)
  next_id = 1
  for ((w0, w1, v0, v1), _), instances in zip(plan, found):
    if not instances:
      continue
    # Paint the window's span once: its instances reach into the margins.
    canvas = np.asarray(out[w0:w1, v0:v1])
    for (top, left), mask in instances:
      view = canvas[top - w0:top - w0 + mask.shape[0], left - v0:left - v0 + mask.shape[1]]
      view[mask] = next_id
      next_id += 1
    out[w0:w1, v0:v1] = canvas
  return out


def dask_map(client: Any) -> Callable[..., list[Instances]]:
  """A `map_fn` that runs the blocks on the workers of a Dask `client`."""
  # Client.map takes sequences, not generators: the windows are read (all of them) here.
  return lambda fn, *iterables: client.gather(client.map(fn, *map(list, iterables), pure=False))
