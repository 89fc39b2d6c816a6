"""Evaluates the models trained in a workdir; writes metrics, tables and figures to <workdir>/eval.

    python eval.py --workdir=workdir/demo --splits=validation,test
    python eval.py --config=configs/demo.py --workdir=workdir/demo --config.eval.num_figures=4

Without --config the workdir's config.json (written by train.py) is used, so every geometry
and threshold matches training. See spiralnet_jax/evaluation.py for what is written.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from spiralnet_jax import checkpoints
from spiralnet_jax import cli
from spiralnet_jax import errors
from spiralnet_jax import evaluation

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; defaults to <workdir>/config.json.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.",
                               required=True)
_SPLITS = flags.DEFINE_list("splits", None, "Splits to evaluate (default: config.eval.splits).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  checkpoints.quiet_orbax_logging()
  try:
    results = evaluation.evaluate(_CONFIG.value, _WORKDIR.value, _SPLITS.value)
  except (FileNotFoundError, errors.TrainingError) as e:
    # No config.json or checkpoints, an unrestorable checkpoint: the message says it all.
    cli.fail("eval.py", str(e))
  for model, by_split in results.items():
    for split, res in by_split.items():
      inst = res["instance"]
      logging.info("%s %s: pixel F1 %.4f (P %.4f, R %.4f), instance F1@0.5 %.4f, mAP %.4f",
                   model, split, res["pixel"]["f1"], res["pixel"]["precision"],
                   res["pixel"]["recall"], inst["f1"][0], inst["map"])
  print(f"wrote {_WORKDIR.value}/eval/ (metrics.json, per_image.csv, tables.md, figures/)")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("eval.py"))
