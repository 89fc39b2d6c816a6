"""Collects the short ablation runs of tools/recipe/ablate.sh into a Markdown table and JSON.

    python tools/recipe/ablation_table.py workdir/abl results/bbbc039-cpu-recipe/ablation

Reads every RUN/quick_val.json (validation fields) and RUN/log.txt (training wall time, final
validation loss on the fixed 1,000-region subset); writes OUT.md and OUT.json.
"""

import json
import pathlib
import re
import sys


def run_row(run: pathlib.Path) -> dict:
  """One ablation run's numbers."""
  q = json.loads((run / "quick_val.json").read_text())
  log = (run / "log.txt").read_text()
  wall = re.findall(r"train wall ([\d.]+) s", log)
  val = re.findall(r"val_loss ([\d.]+)", log)
  overrides = sorted(set(re.findall(r"--config\.(\S+)", (run / "cmd.txt").read_text())))
  return {"run": run.name, "overrides": overrides, "train_wall_s": float(wall[-1]) if wall else None,
          "val_loss_1000": float(val[-1]) if val else None,
          **{k: q[k] for k in ("pixel_f1", "instance_f1_05", "map_pooled", "merges", "splits",
                               "n_true", "seconds_per_field_median")},
          "fields": len(q["fields"])}


def main(argv):
  root, out = pathlib.Path(argv[1]), pathlib.Path(argv[2])
  rows = [run_row(r) for r in sorted(root.iterdir()) if (r / "quick_val.json").is_file()]
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
  lines = ["| run | changes vs base | val loss | pixel F1 | F1@0.5 | mAP pooled | merges | "
           "train s |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    changes = ", ".join(r["overrides"]) or "—"
    lines.append(f"| {r['run']} | {changes} | {r['val_loss_1000']:.4f} | {r['pixel_f1']:.4f} | "
                 f"{r['instance_f1_05']:.4f} | {r['map_pooled']:.4f} | {r['merges']} | "
                 f"{r['train_wall_s']:.0f} |")
  out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main(sys.argv)
