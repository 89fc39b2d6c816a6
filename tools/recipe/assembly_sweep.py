"""Assembly rules on the same claims: every combination of a grid of `assembly.*` values.

    python tools/recipe/assembly_sweep.py --split=validation \
        --set=predict.follow_lobes=false --grid=merge_iou=0.4,0.5,0.6 \
        --grid=merge_containment=0.7,0.8,0.9 \
        --out=results/bbbc039-cpu-recipe/seeding/assembly_sweep_validation.json

Each field is predicted once (the shipped weights and config, plus `--set` overrides) down to its
claims, which is all assembly reads (with the prepared image, which `assembly.split_valleys`
reads); then every combination of the `--grid` values is assembled from those claims and
scored over the split: instance F1@0.5, pooled mAP, merges, splits, recall@0.5, pixel F1. So
the rows differ by assembly alone. Prints and writes JSON
(and a markdown table beside it) with commit and device. Choose on validation.
"""

import itertools
import json
import pathlib
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import predict
from spiralnet_jax import pretrained
from spiralnet_jax import valleys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()), "Weights directory.")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to score.")
_NUM = flags.DEFINE_integer("num_images", 0, "Fields of the split (0 = all).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "section.field=JSON overrides of the config.")
_GRID = flags.DEFINE_multi_string("grid", [], "assembly field=v1,v2,... (JSON values).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def scores(pairs: list, semantic_pairs: list) -> dict:
  """The split's headline scores of (truth, prediction) pairs, to 4 decimals."""
  summary = metrics.split_summary(pairs, semantic_pairs)
  return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


def combinations(grid: list[str]) -> list[dict]:
  """Every combination of the `--grid` values, as {field: value} dicts."""
  axes = []
  for item in grid:
    field, _, values = item.partition("=")
    axes.append([(field, json.loads(v)) for v in values.split(",")])
  return [dict(combo) for combo in itertools.product(*axes)]


def main(argv):
  del argv
  base = predict.Predictor.from_weights(_WEIGHTS.value)
  for item in _OVERRIDES.value:
    bench_common.override(base.config, item)
  examples = data_lib.load_split(_SPLIT.value, max_images=_NUM.value)
  claimed = []
  for ex in examples:
    image = predict.prepare_image(ex.image, predict.percentiles(base.config))
    claimed.append((predict.predict_claims(base, image), image))
  rows = []
  for combo in combinations(_GRID.value):
    cfg = base.config.assembly.copy_and_resolve_references()
    for field, value in combo.items():
      cfg[field] = value
    pairs, semantic = [], []
    for ex, (claims, image) in zip(examples, claimed):
      sem, inst = assembly.assemble_claims_from_config(claims, image.shape, cfg)
      inst = valleys.split_from_config(inst, image, cfg)
      pairs.append((ex.labels, inst))
      semantic.append((ex.labels != 0, sem))
    rows.append({"assembly": combo, **scores(pairs, semantic)})
    print(json.dumps(rows[-1]), flush=True)
  out = {"weights": _WEIGHTS.value, "split": _SPLIT.value, "fields": len(examples),
         "overrides": _OVERRIDES.value, "commit": bench_common.git_commit(),
         "device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": rows}
  if _OUT.value:
    path = pathlib.Path(_OUT.value)
    path.write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"{out['split']}, {out['fields']} fields, overrides {out['overrides']}, commit "
             f"{out['commit']}", "", "| assembly | F1@0.5 | mAP | merges | splits | recall@0.5 "
             "| pixel F1 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {' '.join(f'{k}={v}' for k, v in r['assembly'].items())} | "
              f"{r['instance_f1_05']:.4f} | {r['map_pooled']:.4f} | {r['merges']} | "
              f"{r['splits']} | {r['recall_05']:.4f} | {r['pixel_f1']:.4f} |" for r in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
