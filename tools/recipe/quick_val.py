"""Scores a trained workdir on the first N fields of a split: the numbers a recipe is chosen by.

    python tools/recipe/quick_val.py WORKDIR --num_images=10 --out=WORKDIR/quick_val.json

Prints (and writes) JSON: pixel F1 (pooled), instance F1@0.5, pooled mAP, merges, splits and
seconds per field, with the split, the field names and the commit. Validation only, by design:
the test split is evaluated once, with eval.py, after the recipe is chosen.
"""

import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import predict
from spiralnet_jax import checkpoints

# The benchmarks' commit stamp (HEAD, "+dirty" with uncommitted changes).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_NUM = flags.DEFINE_integer("num_images", 10, "Fields of the split to score (0 = all).")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to score.")
_OUT = flags.DEFINE_string("out", "", "Where to write the JSON (default: print only).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "BBBC039 directory (default: $SPIRALNET_BBBC039_DIR).")


def main(argv):
  workdir = pathlib.Path(argv[1])
  checkpoints.quiet_orbax_logging()
  predictor = predict.Predictor.from_workdir(workdir)
  examples = data_lib.load_split(_SPLIT.value, data_lib.resolve_data_dir(_DATA_DIR.value),
                                 _NUM.value)
  pairs, seconds = [], []
  for ex in examples:
    start = time.perf_counter()
    semantic, instances = predict.predict(predictor, ex.image)
    seconds.append(time.perf_counter() - start)
    pairs.append((ex.labels, instances, semantic))
  out = {
      "workdir": str(workdir), "split": _SPLIT.value, "fields": [ex.name for ex in examples],
      "commit": bench_common.git_commit(),
      **metrics.split_summary([(true, pred) for true, pred, _ in pairs],
                              [(true > 0, sem) for true, _, sem in pairs]),
      "seconds_per_field_median": float(np.median(seconds)),
  }
  text = json.dumps(out, indent=1)
  print(text)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")


if __name__ == "__main__":
  sys.exit(app.run(main))
