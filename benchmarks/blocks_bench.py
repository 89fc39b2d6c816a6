"""Block-wise against whole-image prediction on a mosaic of BBBC039 fields: agreement and time.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 python benchmarks/blocks_bench.py \
        --grid=4 --block=1392 --out=benchmarks/results/blocks_mosaic4x4.json

A `grid`×`grid` mosaic of the bundled fields (alternating, 520×696 each) is segmented whole
(`predict.predict`) and block by block (`blocks.segment_blocks`, cores of `block` px, `margin`
px of context); for every whole-image nucleus, the IoU of the block-wise instance that covers
most of it. Prints and writes JSON: counts, IoU quantiles, nuclei below 0.99, both times (one
process, same run) and device, versions, commit.
"""

import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import blocks
from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import models
from spiralnet_jax import predict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_GRID = flags.DEFINE_integer("grid", 4, "Fields per side of the mosaic.")
_BLOCK = flags.DEFINE_integer("block", 1392, "Core size of a block (px).")
_MARGIN = flags.DEFINE_integer("margin", 128, "Context around a core (px).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def main(argv):
  del argv
  fields = [ex.image for ex in data_lib.load_split("test", data_lib.sample_dir())]
  n = _GRID.value
  mosaic = np.block([[fields[(r + c) % len(fields)] for c in range(n)] for r in range(n)])
  predictor = predict.Predictor.pretrained()
  start = time.perf_counter()
  want = predict.predict_instances(predictor, mosaic)
  whole_s = time.perf_counter() - start
  start = time.perf_counter()
  got = blocks.segment_blocks(models.spiralnet(predictor), mosaic, block=_BLOCK.value,
                             margin=_MARGIN.value)
  blocks_s = time.perf_counter() - start
  ious = metrics.counterpart_ious(want, got)
  bench_common.emit({
      "mosaic_shape": list(mosaic.shape), "block": _BLOCK.value, "margin": _MARGIN.value,
      "num_blocks": len(blocks.windows(mosaic.shape, _BLOCK.value, _MARGIN.value)),
      "nuclei_whole": int(want.max()), "nuclei_blocks": int(got.max()),
      "iou_min": float(ious.min()),
      "iou_quantiles_1_5_50": np.quantile(ious, [.01, .05, .5]).tolist(),
      "nuclei_iou_below_0_99": int((ious < 0.99).sum()), "nuclei_identical": int((ious == 1).sum()),
      "whole_s": whole_s, "blocks_s": blocks_s}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
