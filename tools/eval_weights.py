"""Evaluates exported weights (the shipped ones by default) as eval.py does a workdir.

    python tools/eval_weights.py --splits=validation,test \
        --out_dir=results/bbbc039-cpu-recipe/finetune/shipped_eval

Writes metrics.json, per_image.csv, tables.md and figures to --out_dir (as eval.py writes
<workdir>/eval/), predicting with the weights' own config.json (the shipped default path), plus
`--set section.field=JSON` overrides. Data: config.data.data_dir or SPIRALNET_BBBC039_DIR.
"""

import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from spiralnet_jax import data as data_lib
from spiralnet_jax import evaluation
from spiralnet_jax import models
from spiralnet_jax import predict
from spiralnet_jax import pretrained

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()), "Weights directory.")
_SPLITS = flags.DEFINE_list("splits", ["validation", "test"], "Splits to evaluate.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.", required=True)
_OVERRIDES = flags.DEFINE_multi_string("set", [], "section.field=JSON overrides of the config.")


def main(argv):
  del argv
  predictor = predict.Predictor.from_weights(_WEIGHTS.value)
  for item in _OVERRIDES.value:
    bench_common.override(predictor.config, item)
  config = predictor.config
  examples = {split: data_lib.load_examples(config.data, split) for split in _SPLITS.value}
  out_dir = pathlib.Path(_OUT_DIR.value)
  results = evaluation.evaluate_models([models.spiralnet(predictor)], examples, config, out_dir)
  (out_dir / "run.json").write_text(json.dumps(
      {"weights": _WEIGHTS.value, "overrides": _OVERRIDES.value,
       "commit": bench_common.git_commit()}, indent=1) + "\n")
  for split, res in results["spiralnet"].items():
    logging.info("%s: pixel F1 %.4f, instance F1@0.5 %.4f, mAP %.4f, merges %d", split,
                 res["pixel"]["f1"], res["instance"]["f1"][0], res["instance"]["map"],
                 res["instance"]["merges"])


if __name__ == "__main__":
  app.run(main)
