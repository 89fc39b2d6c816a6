"""Seeding × assembly, same weights: the thesis path against each change and their combination.

    python tools/recipe/seeding_comparison.py --weights=spiralnet_jax/weights/bbbc039_cpu_finetune \
        --split=validation --out=results/bbbc039-cpu-recipe/seeding/validation.json

Seedings (`predict.seeds`, `predict.lobes`): the thesis grid; score-map peaks; peaks plus lobe
regions. Assembly: today's (merge by IoU / containment), with `assembly.split_containers`,
with `assembly.split_valleys` (spiralnet_jax.valleys), or with both. Each seeding's claims are
predicted once per field and assembled under every rule (what `predict.predict` does, in two
calls), so a row's seconds are its claims plus its assembly (and valley split).
Prints and writes JSON (one entry per path: instance F1@0.5, pooled mAP, merges, splits,
recall@0.5, pixel F1, median seconds per field) with commit, device and versions.
Choose on validation; run the test split once, for the chosen path.
"""

import json
import os
import pathlib
import platform
import sys
import time

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

# The benchmarks' commit stamp (HEAD, "+dirty" with uncommitted changes).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()), "Weights directory.")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to score.")
_NUM = flags.DEFINE_integer("num_images", 0, "Fields of the split (0 = all).")
_SEEDINGS = flags.DEFINE_list("seedings", ["grid", "peaks", "peaks+lobes"], "Seedings to run.")
_SPLIT_CONTAINMENT = flags.DEFINE_float("split_containment", 0.5,
                                        "assembly.split_containment of the split rule.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides of every path, "
                                       "section.field=JSON, e.g. predict.lobe_min_distance=5.")

SEEDINGS = {"grid": {"seeds": "grid", "lobes": False},
            "peaks": {"seeds": "peaks", "lobes": False},
            "peaks+lobes": {"seeds": "peaks", "lobes": True},
            "grid+lobes": {"seeds": "grid", "lobes": True}}


def _scores(pairs, semantic_pairs, seconds) -> dict:
  return {**metrics.split_summary(pairs, semantic_pairs),
          "seconds_per_field_median": float(np.median(seconds))}


def run_seeding(base: predict.Predictor, seeding: str, examples, split_containment: float):
  """{path name: scores} for one seeding under today's assembly and each split rule."""
  config = base.config.copy_and_resolve_references()
  for key, value in SEEDINGS[seeding].items():
    config.predict[key] = value
  predictor = predict.Predictor.from_params(config, base.scorer_params, base.segmenter_params)
  # (split_containers, split_valleys) of each assembly rule.
  rules = {"": (False, False), "+split": (True, False), "+valleys": (False, True),
           "+split+valleys": (True, True)}
  pairs = {r: [] for r in rules}
  semantic = {r: [] for r in rules}
  seconds = {r: [] for r in rules}
  for ex in examples:
    start = time.perf_counter()
    image = predict.prepare_image(ex.image, predict.percentiles(config))
    claimed = predict.predict_claims(predictor, image)
    claim_seconds = time.perf_counter() - start
    for rule, (split, split_valleys) in rules.items():
      cfg = config.assembly.copy_and_resolve_references()
      cfg.split_containers, cfg.split_containment = split, split_containment
      cfg.split_valleys = split_valleys
      start = time.perf_counter()
      sem, inst = assembly.assemble_claims_from_config(claimed, image.shape, cfg)
      inst = valleys.split_from_config(inst, image, cfg)
      seconds[rule].append(claim_seconds + time.perf_counter() - start)
      pairs[rule].append((ex.labels, inst))
      semantic[rule].append((ex.labels != 0, sem))
  return {seeding + rule: _scores(pairs[rule], semantic[rule], seconds[rule]) for rule in rules}


def table(out: dict) -> str:
  """A markdown table of `main`'s JSON, one row per path."""
  lines = [f"{out['split']}, {out['fields']} fields, weights {out['weights']}, commit "
           f"{out['commit']}", "",
           "| path | F1@0.5 | mAP | merges | splits | recall@0.5 | pixel F1 | s/field |",
           "|---|---|---|---|---|---|---|---|"]
  for name, r in out["paths"].items():
    lines.append(f"| {name} | {r['instance_f1_05']:.4f} | {r['map_pooled']:.4f} | "
                 f"{r['merges']} | {r['splits']} | {r['recall_05']:.4f} | {r['pixel_f1']:.4f} | "
                 f"{r['seconds_per_field_median']:.2f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  base = predict.Predictor.from_weights(_WEIGHTS.value)
  for item in _OVERRIDES.value:
    bench_common.override(base.config, item)
  examples = data_lib.load_split(_SPLIT.value, data_lib.resolve_data_dir(""), _NUM.value)
  predict.predict(base, examples[0].image)  # Compile outside the timed fields.
  paths = {}
  for seeding in _SEEDINGS.value:
    paths.update(run_seeding(base, seeding, examples, _SPLIT_CONTAINMENT.value))
    print(json.dumps({k: paths[k] for k in paths if k.startswith(seeding)}), flush=True)
  out = {"weights": _WEIGHTS.value, "split": _SPLIT.value, "fields": len(examples),
         "split_containment": _SPLIT_CONTAINMENT.value, "overrides": _OVERRIDES.value,
         "commit": bench_common.git_commit(),
         "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
         "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
         "paths": paths}
  text = json.dumps(out, indent=1)
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(text + "\n")
    pathlib.Path(_OUT.value).with_suffix(".md").write_text(table(out))
  print(text)


if __name__ == "__main__":
  app.run(main)
