"""Segmenter in bfloat16 vs float32: accuracy change of a trained model on a validation split.

    python benchmarks/precision_bench.py --workdir=workdir/demo [--split=validation]

The trained float32 parameters are used as they are; `segmenter.dtype = "bfloat16"` makes the
step network compute in bf16 (parameters and the fed-back mask stay float32). Prints one JSON
object: pixel F1, instance F1@0.5 and mAP for both, seconds per image, and the largest change
of a segmented probability. The speed side is in suite.py's segmenter section.
"""

import argparse
import json
import time

import ml_collections
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import predict as predict_lib

import bench_common


def run(workdir: str, split: str = "validation", max_images: int = 0) -> dict:
  """Evaluates `workdir`'s SpiralNet on `split` with the segmenter in float32 and bfloat16."""
  base = predict_lib.Predictor.from_workdir(workdir)
  examples = data_lib.load_examples(base.config.data, split)
  if max_images:
    examples = examples[:max_images]
  out = {"workdir": workdir, "split": split, "images": [e.name for e in examples]}
  probs = {}
  for dtype in ("float32", "bfloat16"):
    config = ml_collections.ConfigDict(base.config.to_dict())
    config.segmenter.dtype = dtype
    predictor = predict_lib.Predictor.from_params(config, base.scorer_params,
                                                  base.segmenter_params)
    predict_lib.predict_instances(predictor, examples[0].image)  # compile
    start = time.perf_counter()
    pred = [predict_lib.predict_instances(predictor, e.image) for e in examples]
    seconds = (time.perf_counter() - start) / len(examples)
    pixel = metrics.pixel_scores((e.labels > 0, p > 0) for e, p in zip(examples, pred))
    inst = metrics.instance_scores((e.labels, p) for e, p in zip(examples, pred))
    i50 = list(metrics.IOU_THRESHOLDS).index(0.5)
    out[dtype] = {"pixel_f1": round(float(pixel["f1"]), 4),
                  "instance_f1_at_0.5": round(float(np.asarray(inst["f1"])[i50]), 4),
                  "map": round(float(inst["map"]), 4), "seconds_per_image": round(seconds, 3)}
    # The bare segmenter on a few regions of the first image, for the probability change.
    image = predict_lib.prepare_image(examples[0].image)
    height, width = predictor.geom.shape
    crops = np.stack([image[y:y + height, x:x + width] for y in (100, 200, 300)
                      for x in (100, 300, 500)])
    probs[dtype] = predict_lib.segment_regions(predictor, crops)
  out["max_abs_probability_change"] = float(np.abs(probs["float32"] - probs["bfloat16"]).max())
  out["delta"] = {k: round(out["bfloat16"][k] - out["float32"][k], 4)
                  for k in ("pixel_f1", "instance_f1_at_0.5", "map")}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--split", default="validation")
  parser.add_argument("--max_images", type=int, default=0)
  args = parser.parse_args()
  result = bench_common.header("precision", contended=False)
  result["precision"] = run(args.workdir, args.split, args.max_images)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
