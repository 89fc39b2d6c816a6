"""How many spiral steps the exact early exit (`spiralnet_jax.early_exit`) saves on BBBC039.

    python benchmarks/early_exit_count.py --split=validation \
        --out=benchmarks/results/early_exit_count_validation.json

The spiral visits the 7×8 blocks of a 52×58 region ring by ring (Chebyshev rings of blocks
around the centre block: 1, 8, 16, 24 and a last column of 7 blocks; rings end at steps 1, 9,
25, 49, 56). Under `continuation.connected_only` a region's object is the component of its
central mask connected to the centre window, and every pixel is written once, so after ring k
(k ≥ 1; the window reaches into ring 1) is complete, a component that touches no pixel of ring
k can never grow: the rest of the spiral is wasted. For every region the shipped model selects
(its prediction defaults), this counts the outermost ring its final kept object touches and so
the step after which an exact ring-by-ring exit could stop; moved (continuation) pieces are
anchored elsewhere and are not counted. Prints and writes JSON with commit, device, versions.
"""

import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import pretrained
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import spiral

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()), "Weights directory.")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to count on.")
_NUM = flags.DEFINE_integer("num_images", 0, "Fields of the split (0 = all).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def exit_steps(kept: np.ndarray, pixel_ring: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """Per region: the step after which an exact ring-by-ring exit could stop."""
  last = len(ends) - 1
  outer = np.asarray([pixel_ring[k].max() if k.any() else 0 for k in kept])
  # Exit after the first ring k >= 1 beyond the object's outermost ring (none past the last).
  exit_ring = np.maximum(outer + 1, 1)
  return np.where(exit_ring <= last - 1, ends[np.minimum(exit_ring, last)], ends[last])


def main(argv):
  del argv
  predictor = predict.Predictor.from_weights(_WEIGHTS.value)
  config = predictor.config
  seg = predictor.segmenter
  pixel_ring = spiral.pixel_rings(np.asarray(seg.offsets), seg.region_shape, seg.update_size)
  ends = spiral.ring_ends(np.asarray(seg.offsets), seg.update_size)
  geom = predict._prediction_geom(predictor)  # pylint: disable=protected-access
  steps = []
  for ex in data_lib.load_split(_SPLIT.value, max_images=_NUM.value):
    image = predict.prepare_image(ex.image, predict.percentiles(config))
    origins = predict.selected_origins(predictor, image)
    crops = continuation.crop_regions(regions_lib.reflect_pad(image, geom.pad), geom.pad,
                                      origins, geom)
    probs = continuation.keep_connected(
        predict.segment_regions(predictor, crops), continuation.centre_anchor(len(crops), geom),
        float(config.continuation.threshold))
    steps.append(exit_steps(probs[..., 0] > config.continuation.threshold, pixel_ring, ends))
  steps = np.concatenate(steps)
  total = len(predictor.segmenter.offsets)
  record = {
      "split": _SPLIT.value, "weights": _WEIGHTS.value, "regions": int(steps.size),
      "ring_end_steps": ends.tolist(), "steps_per_region_full": total,
      "exit_step_histogram": {int(s): int((steps == s).sum()) for s in np.unique(steps)},
      "mean_steps_with_exit": float(steps.mean()),
      "fraction_of_steps_saved": float(1 - steps.mean() / total)}
  bench_common.emit(record, _OUT.value)


if __name__ == "__main__":
  app.run(main)
