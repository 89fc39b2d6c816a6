"""Huge images block by block: each block predicted with a margin, its own instances kept, stitched.

    model = models.spiralnet(predict.Predictor.pretrained())
    labels = blocks.segment_blocks(model, zarr.open_array("slide.zarr", mode="r"),
                                   out=zarr.open_array("labels.zarr", mode="w", ...))

(`spiralnet-segment slide.zarr` does this from the command line, spiralnet_jax.segment_zarr.)

The image is cut into `block`×`block` cores; each core is predicted inside a window that adds
`margin` px of real image on every side (enough for a nucleus's regions and their continuation,
so the regions of a kept nucleus see what they see in the whole image), and the block keeps the
instances whose centroid lies in its core. An instance cut by a core edge is thus kept whole, by
one block, with one id. All windows are normalised by the same intensity range, the whole
image's (estimated from a regular subsample of at most `sample_pixels` pixels), as whole-image
prediction does. Blocks run through `map_fn` (`local_map`, in this process, or `dask_map`, on
the workers of a Dask client, each reading its own window: a Zarr image is never read whole by
the client), and the kept instances are painted into `out` (a NumPy or Zarr array) one block at
a time, so the image never has to be in memory at once. Not exact: a nucleus near a core edge
may be assembled from other candidates than in the whole image (measured: tests/test_blocks.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import numpy as np
from scipy import ndimage

from spiralnet_jax import data as data_lib

if TYPE_CHECKING:  # Only a type here: importing blocks does not load the model stack (JAX).
  from spiralnet_jax import models

# (row0, row1, col0, col1) of a window and the (top, left) of its core inside it.
Window = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]
Instances = list[tuple[tuple[int, int], np.ndarray]]  # ((top, left) in the image, bool mask).
BlockFn = Callable[[Any, Window], Instances]  # (image, window) -> the window's kept instances.
MapFn = Callable[[BlockFn, Any, list[Window]], Iterable[Instances]]  # In plan order.
# Core size and context of a block (px): a core of 2048² keeps a block's regions busy on a
# CPU; 128 px of context hold a region (52×58) plus its continuation moves.
BLOCK = 2048
MARGIN = 128


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


def block_instances(model: models.Model, value_range: tuple[float, float], image: Any,
                    window: Window) -> Instances:
  """The instances of one window of `image` whose centroid lies in its core, in image
  coordinates (the window is read here, so a worker reads its own from a Zarr store)."""
  (w0, w1, v0, v1), (c0, c1, d0, d1) = window
  prepared = data_lib.stretch(np.asarray(image[w0:w1, v0:v1]), *value_range).astype(np.float32)
  _, labels = model.predict(prepared)
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


def local_map(fn: BlockFn, image: Any, plan: list[Window]) -> Iterable[Instances]:
  """The blocks in this process, one after another."""
  return (fn(image, window) for window in plan)


def segment_blocks(model: models.Model, image: Any, block: int = BLOCK, margin: int = MARGIN,
                   out: Optional[Any] = None, map_fn: MapFn = local_map) -> Any:
  """Instance labels (uint32) of a huge 2-D image, predicted block by block; see the module doc."""
  out = np.zeros(tuple(image.shape), np.uint32) if out is None else out
  segment_blocks_into(model, image, out, block, margin, map_fn)
  return out


def segment_blocks_into(model: models.Model, image: Any, out: Any, block: int = BLOCK,
                        margin: int = MARGIN, map_fn: MapFn = local_map,
                        progress: Optional[Callable[[int, int], None]] = None) -> int:
  """`segment_blocks` into an existing `out`; returns the number of instances painted.
  `progress(blocks done, blocks)` after each block."""
  shape = tuple(image.shape)
  if len(shape) != 2:
    raise ValueError(f"expected a 2-D (H, W) image, got shape {shape}")
  if block < 1 or margin < 0:
    raise ValueError(f"block must be >= 1 and margin >= 0 px, got {block} and {margin}")
  value_range = intensity_range(image, model.percentiles)
  if not all(np.isfinite(value_range)):
    raise ValueError("the image holds NaN or infinite values")
  plan = windows(shape, block, margin)
  found = map_fn(functools.partial(block_instances, model, value_range), image, plan)
  next_id = 1
  for done, (((w0, w1, v0, v1), _), instances) in enumerate(zip(plan, found), start=1):
    if instances:
      # Paint the window's span once: its instances reach into the margins.
      canvas = np.asarray(out[w0:w1, v0:v1])
      for (top, left), mask in instances:
        view = canvas[top - w0:top - w0 + mask.shape[0], left - v0:left - v0 + mask.shape[1]]
        view[mask] = next_id
        next_id += 1
      out[w0:w1, v0:v1] = canvas
    if progress is not None:
      progress(done, len(plan))
  return next_id - 1


def dask_map(client: Any) -> MapFn:
  """A `map_fn` that runs the blocks on the workers of a Dask `client`, in plan order."""

  def run(fn: BlockFn, image: Any, plan: list[Window]) -> Iterable[Instances]:
    # The block function (with its model) and a NumPy image go to each worker once; a Zarr
    # image is a small handle to its store, which each worker reads its windows from.
    fn_ref = client.scatter(fn, broadcast=True, hash=False)
    image_ref = (client.scatter(image, broadcast=True, hash=False)
                 if isinstance(image, np.ndarray) else image)
    futures = client.map(_call, [fn_ref] * len(plan), [image_ref] * len(plan), plan, pure=False)
    return (future.result() for future in futures)

  return run


def _call(fn: BlockFn, image: Any, window: Window) -> Instances:
  return fn(image, window)
