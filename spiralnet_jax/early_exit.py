"""Stage 2's exact early exit: the spiral ring by ring, each region stopped once its object is
enclosed.

The spiral visits its blocks ring by ring around the centre block (`spiral.spiral_rings`; the
thesis geometry's rings end at steps 1, 9, 25, 49, 56) and writes every pixel once. Under
`continuation.connected_only` a fresh region's object is the 4-connected component of its
thresholded central channel that touches the centre window (`continuation.keep_connected`).
Once ring k >= 1 is written (the window reaches into ring 1), call D the anchored component of
the central pixels of rings 0..k. If D has no pixel in ring k, the final object is D: a
4-connected path from the anchor out of rings 0..k-1 enters ring k first (ring k surrounds
them, or the region edge does), so the object cannot grow, and the rest of the spiral is
wasted on that region. If D also keeps off the region's edges, no continuation move starts from
it, so the unwritten pixels matter to nothing downstream either. Exact by construction: the
object's pixels and probabilities are those of the whole spiral (tested); an exited region's
central channel is zero on the pixels it did not write.

Regions run in waves of a few batches: each wave starts (its hoisted image part and mask
canvases: `spiral_compile.exit_fns`), runs the steps up to the end of the first exit ring,
drops the regions whose object is enclosed, re-batches the rest, and so on. What a region
carries between stages is its hoisted image part and its mask canvas (~0.6 MB at the shipped
width), so a wave stays small.
"""

from collections.abc import Callable, Sequence

import numpy as np

from spiralnet_jax import continuation
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import spiral

# start_fn(regions (B, h, w), init_mask (B, h, w, 3)) -> (source, mask canvas) and
# steps_fn(source, mask_canvas, first, stop) -> mask canvas, each compiled per batch size.
StartFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
StepsFn = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]

# Batches per wave and thread: enough regions that the survivors of a stage re-batch into full
# batches, few enough that the carried canvases stay small.
WAVE_BATCHES = 4


def stages(segmenter: segmenter_lib.Segmenter,
           exit_rings: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
  """(first step, stop step, ring checked after it or -1) per stage, in spiral order."""
  ends = spiral.ring_ends(np.asarray(segmenter.offsets), segmenter.update_size)
  last = len(ends) - 1
  rings = sorted({int(r) for r in exit_rings})
  if any(r < 1 or r >= last for r in rings):
    raise ValueError(f"exit rings must lie in 1..{last - 1} (ring {last} is the last), "
                     f"got {tuple(exit_rings)}")
  bounds = [0] + [int(ends[r]) for r in rings] + [len(segmenter.offsets)]
  return tuple(zip(bounds[:-1], bounds[1:], rings + [-1]))


def enclosed(central: np.ndarray, anchor: np.ndarray, pixel_ring: np.ndarray, ring: int,
             threshold: float) -> np.ndarray:
  """(B,) bool: whose object, seen on rings 0..`ring`, is enclosed by ring `ring` (see the
  module doc): no pixel of it in ring `ring` nor on the region's edges."""
  written = pixel_ring <= ring
  objects = continuation.anchored_components((central > threshold) & written, anchor)
  outside = pixel_ring == ring
  outside[[0, -1], :] = True
  outside[:, [0, -1]] = True
  return ~np.any(objects & outside, axis=(1, 2))


def run(fns: tuple[StartFn, StepsFn], segmenter: segmenter_lib.Segmenter, regions: np.ndarray,
        geom: regions_lib.RegionGeometry, exit_rings: Sequence[int], threshold: float,
        batch_size: int, threads: int = 1) -> np.ndarray:
  """(B, h, w, 3) probabilities of fresh (B, h, w) regions, each spiral stopped once its object
  is enclosed; channel 0 as the whole spiral's wherever `keep_connected` keeps it."""
  start_fn, steps_fn = fns
  plan = stages(segmenter, exit_rings)
  pixel_ring = spiral.pixel_rings(np.asarray(segmenter.offsets), segmenter.region_shape,
                                  segmenter.update_size)
  out = np.zeros(regions.shape + (3,), np.float32)
  wave = batch_size * max(1, int(threads)) * WAVE_BATCHES
  for first in range(0, len(regions), wave):
    index = np.arange(first, min(first + wave, len(regions)))
    source, canvas = continuation.map_batched(
        start_fn, (regions[index], segmenter.initial_mask(len(index))), batch_size, threads)
    for begin, stop, ring in plan:
      canvas = continuation.map_batched(
          lambda s, c, b=begin, e=stop: (steps_fn(s, c, b, e),), (source, canvas),
          batch_size, threads)[0]
      probs = segmenter.from_canvas(canvas)  # A view of the canvases the survivors go on with.
      done = (np.ones(len(index), bool) if ring < 0 else
              enclosed(probs[..., 0], continuation.centre_anchor(len(index), geom), pixel_ring,
                       ring, threshold))
      stopped = np.array(probs[done])
      if ring >= 0:
        stopped[..., 0] *= pixel_ring <= ring  # Not written yet: the seed, not a prediction.
      out[index[done]] = stopped
      index, source, canvas = index[~done], source[~done], canvas[~done]
      if not len(index):
        break
  return out
