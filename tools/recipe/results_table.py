"""Prints the README rows of an eval.py run: one Markdown row per (model, split).

    python tools/recipe/results_table.py results/bbbc039-cpu-recipe/metrics.json
"""

import json
import sys

NAMES = {"spiralnet": "SpiralNet, ours (shipped CPU model)", "unet": "U-Net, ours",
         "otsu_watershed": "Otsu + watershed, ours"}


def _f(x) -> str:
  return "—" if x is None else f"{x:.3f}"


def main(argv):
  results = json.load(open(argv[1]))
  print("| system | split | pixel F1 | pixel P | pixel R | instance F1@0.5 | mAP pooled | "
        "DSB2018 score | merges | splits | other-objects F1 (Table 1) | s/field |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for model, by_split in results.items():
    for split, r in by_split.items():
      px, inst = r["pixel"], r["instance"]
      seg = r.get("segmenter")
      other = seg["f1"][1] if seg else None
      print(f"| {NAMES.get(model, model)} | {split} | {_f(px['f1'])} | {_f(px['precision'])} | "
            f"{_f(px['recall'])} | {_f(inst['f1'][0])} | {_f(inst['map'])} | "
            f"{_f(inst.get('dsb2018_score'))} | {inst['merges']} | {inst['splits']} | "
            f"{_f(other)} | {r['predict_seconds'] / max(r['num_images'], 1):.2f} |")


if __name__ == "__main__":
  main(sys.argv)
