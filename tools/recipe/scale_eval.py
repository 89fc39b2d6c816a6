"""Nuclei of another size: a split's fields magnified or shrunk, segmented with --diameter.

    python tools/recipe/scale_eval.py --split=test --factors=0.5,1,2 \
        --out=results/bbbc039-cpu-recipe/scale/test.json

Each field and its labels are resized by each factor (image bilinear, anti-aliased when
shrinking; labels nearest neighbour), then segmented by the shipped model (or --weights) with
`diameter = data.nucleus_diameter × factor`, the size its nuclei now have (factor 1: no
rescaling), and scored against the resized labels. Writes JSON (per factor: instance F1@0.5,
pooled mAP, merges, splits, recall, pixel F1, median seconds per field) with commit, device and
versions, and a Markdown table beside it.
"""

import json
import pathlib
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
from skimage import transform

from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import predict
from spiralnet_jax import pretrained
from spiralnet_jax import scale

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()), "Weights directory.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to score.")
_NUM = flags.DEFINE_integer("num_images", 0, "Fields of the split (0 = all).")
_FACTORS = flags.DEFINE_list("factors", ["0.5", "1", "2"], "Magnifications of the fields.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def resized(image: np.ndarray, labels: np.ndarray, factor: float):
  """A field and its labels magnified by `factor`."""
  shape = scale.rescaled_shape(image.shape, factor)
  out = transform.resize(image.astype(np.float64), shape, order=1, anti_aliasing=factor < 1,
                         preserve_range=True)
  return out.astype(np.float32), scale.resize_nearest(labels, shape)


def run_factor(predictor: predict.Predictor, examples, factor: float) -> dict:
  """Scores of the split's fields at one magnification."""
  pairs, semantic, seconds = [], [], []
  diameter = None if factor == 1 else predictor.config.data.nucleus_diameter * factor
  for ex in examples:
    image, labels = resized(ex.image, ex.labels, factor)
    start = time.perf_counter()
    sem, inst = predict.predict(predictor, image, diameter=diameter)
    seconds.append(time.perf_counter() - start)
    pairs.append((labels, inst))
    semantic.append((labels > 0, sem))
  return {"factor": factor, "diameter": diameter, "shape": list(image.shape),
          **metrics.split_summary(pairs, semantic),
          "seconds_per_field_median": float(np.median(seconds))}


def main(argv):
  del argv
  predictor = predict.Predictor.from_weights(_WEIGHTS.value)
  examples = data_lib.load_split(_SPLIT.value, max_images=_NUM.value)
  rows = [run_factor(predictor, examples, float(f)) for f in _FACTORS.value]
  record = {"split": _SPLIT.value, "num_images": len(examples), "weights": _WEIGHTS.value,
            "nucleus_diameter": predictor.config.data.nucleus_diameter, "rows": rows,
            "commit": bench_common.git_commit(), "device": jax.devices()[0].device_kind,
            "cpu": platform.processor() or platform.machine(), "jax": jax.__version__,
            "python": platform.python_version()}
  text = json.dumps(record, indent=2)
  print(text)
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    lines = ["| factor | --diameter | field shape | F1@0.5 | mAP pooled | merges | splits | "
             "recall@0.5 | pixel F1 | s/field |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| ×{r['factor']:g} | {r['diameter'] or '—'} | {r['shape'][0]}×{r['shape'][1]} | "
              f"{r['instance_f1_05']:.3f} | {r['map_pooled']:.3f} | {r['merges']} | "
              f"{r['splits']} | {r['recall_05']:.3f} | {r['pixel_f1']:.3f} | "
              f"{r['seconds_per_field_median']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
