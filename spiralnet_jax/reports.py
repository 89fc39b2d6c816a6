"""tables.md: the thesis' Tables 1-3 with our numbers beside the thesis', instance metrics,
the numbers to beat and the scorer's error rates, from evaluation's metrics.json content."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

# Model keys in metrics.json, and how the reports name them.
SPIRALNET = "spiralnet"
UNET = "unet"
OTSU_WATERSHED = "otsu_watershed"
DISPLAY_NAMES = {SPIRALNET: "SpiralNet", UNET: "U-Net", OTSU_WATERSHED: "Otsu + watershed"}
CHANNELS = ("central", "other", "background")

# --- The thesis' numbers (Dekret 2019, §4), reproduced in tables.md beside ours ---------------
# Table 1 (segmenter on label-selected regions): {metric: {channel: {split: value}}}.
_T1_SPLITS = ("training", "validation", "test")
THESIS_TABLE1 = {
    "f1": {"central": dict(zip(_T1_SPLITS, (0.946, 0.945, 0.945))),
           "other": dict(zip(_T1_SPLITS, (0.893, 0.890, 0.892))),
           "background": dict(zip(_T1_SPLITS, (0.972, 0.983, 0.985)))},
    "precision": {"central": dict(zip(_T1_SPLITS, (0.960, 0.961, 0.962))),
                  "other": dict(zip(_T1_SPLITS, (0.928, 0.930, 0.924))),
                  "background": dict(zip(_T1_SPLITS, (0.987, 0.985, 0.987)))},
    "recall": {"central": dict(zip(_T1_SPLITS, (0.950, 0.946, 0.945))),
               "other": dict(zip(_T1_SPLITS, (0.896, 0.890, 0.897))),
               "background": dict(zip(_T1_SPLITS, (0.969, 0.981, 0.982)))},
}
# Tables 2 and 3 (final pixel metrics): {model: {metric: {split: value}}}. Table 2 is the
# SpiralNet half of Table 3.
THESIS_PIXEL = {
    SPIRALNET: {"f1": dict(zip(_T1_SPLITS, (0.963, 0.965, 0.969))),
                "precision": dict(zip(_T1_SPLITS, (0.956, 0.960, 0.963))),
                "recall": dict(zip(_T1_SPLITS, (0.971, 0.971, 0.977)))},
    UNET: {"f1": dict(zip(_T1_SPLITS, (0.963, 0.960, 0.965))),
           "precision": dict(zip(_T1_SPLITS, (0.963, 0.961, 0.969))),
           "recall": dict(zip(_T1_SPLITS, (0.962, 0.959, 0.961)))},
}
# §4.1: scorer error rate (%) at t = 0.4 after the last epoch.
THESIS_SCORER_THRESHOLD = 0.4
THESIS_SCORER_ERROR_RATE = {"training": 7.56, "validation": 6.02}
# docs/design.md "Numbers to beat" (BBBC039 test split): (system, pixel F1, P, R, F1@0.5,
# pooled mAP). StarDist 2D: trained from scratch on the same 100 fields on the same 2-core CPU
# for 45 minutes (its example recipe), scored with StarDist's `matching`.
NUMBERS_TO_BEAT = (
    ("SpiralNet, thesis (PyTorch)", 0.969, 0.963, 0.977, None, None),
    ("U-Net, thesis", 0.965, 0.969, 0.961, None, None),
    ("StarDist 2D, same data and CPU, 45 min", 0.957, None, None, 0.950, 0.743),
)


_METRIC_NAMES = (("f1", "F1 score"), ("precision", "Precision"), ("recall", "Recall"))
Results = Mapping[str, Mapping[str, dict]]  # {model: {split: metrics}}, as in metrics.json.


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None:
    return "—"
  if isinstance(value, int):
    return str(value)
  return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines


def _at(values: Sequence[float], thresholds: Sequence[float], t: float) -> float | None:
  """The entry of a per-threshold list at threshold t (None if t was not evaluated)."""
  for value, thr in zip(values, thresholds):
    if abs(thr - t) < 1e-9:
      return value
  return None


def _segmenter_table(results: Results, splits: Sequence[str]) -> list[str]:
  """Table 1: the segmenter per channel (SpiralNet with segmenter metrics only)."""
  spiral = results.get(SPIRALNET, {})
  if not any("segmenter" in spiral.get(s, {}) for s in splits):
    return []
  lines = ["## Table 1 — segmenting network per channel (label-selected regions)", ""]
  header = ["metric"] + [f"{ch} {s} ({who})" for ch in CHANNELS for s in splits
                         for who in ("ours", "thesis")]
  rows = []
  for key, title in _METRIC_NAMES:
    row = [title]
    for c, ch in enumerate(CHANNELS):
      for s in splits:
        seg = spiral.get(s, {}).get("segmenter")
        row += [_fmt(seg[key][c] if seg else None), _fmt(THESIS_TABLE1[key][ch].get(s))]
    rows.append(row)
  lines += _table(header, rows)
  regions = ", ".join(f"{s}: {spiral[s]['segmenter']['num_regions']}" for s in splits
                      if "segmenter" in spiral.get(s, {}))
  return lines + ["", f"Regions evaluated (label score > t): {regions}.", ""]


def _pixel_tables(results: Results, splits: Sequence[str]) -> list[str]:
  """Table 2 (SpiralNet) and its U-Net half: final pixel metrics per split, then Table 3."""
  lines = []
  for model in (SPIRALNET, UNET):
    if model not in results:
      continue
    title = "Table 2 — SpiralNet" if model == SPIRALNET else "U-Net"
    lines += [f"## {title} final prediction, pixel metrics", ""]
    header = ["metric"] + [f"{s} ({who})" for s in splits
                           for who in ("ours pooled", "ours mean", "thesis")]
    rows = []
    for key, title in _METRIC_NAMES:
      row = [title]
      for s in splits:
        px = results[model].get(s, {}).get("pixel", {})
        row += [_fmt(px.get(key)), _fmt(px.get(f"mean_{key}")),
                _fmt(THESIS_PIXEL[model][key].get(s))]
      rows.append(row)
    lines += _table(header, rows) + [""]
  if SPIRALNET in results and UNET in results:
    lines += _comparison_table(results, splits)
  return lines


def _comparison_table(results: Results, splits: Sequence[str]) -> list[str]:
  """Table 3: U-Net vs SpiralNet, pooled pixel metrics."""
  lines = ["## Table 3 — U-Net vs SpiralNet (pooled pixel metrics)", ""]
  header = ["metric"] + [f"{DISPLAY_NAMES[m]} {s} ({who})" for m in (UNET, SPIRALNET)
                         for s in splits for who in ("ours", "thesis")]
  rows = []
  for key, title in _METRIC_NAMES:
    row = [title]
    for m in (UNET, SPIRALNET):
      for s in splits:
        row += [_fmt(results[m].get(s, {}).get("pixel", {}).get(key)),
                _fmt(THESIS_PIXEL[m][key].get(s))]
    rows.append(row)
  return lines + _table(header, rows) + [""]


def _instance_table(results: Results, splits: Sequence[str]) -> list[str]:
  """Instance metrics of every model and split (not in the thesis)."""
  lines = ["## Instance metrics", ""]
  header = ["model", "split", "images", "nuclei true", "nuclei pred", "P@0.5", "R@0.5",
            "F1@0.5", "DSB@0.5", "PQ@0.5", "F1@0.75", "mAP pooled", "DSB2018 score", "merges",
            "splits"]
  rows = []
  for model, by_split in results.items():
    for s in splits:
      if s not in by_split:
        continue
      r, inst = by_split[s], by_split[s]["instance"]
      thr = inst["thresholds"]
      rows.append([DISPLAY_NAMES.get(model, model), s, r["num_images"], r["nuclei_true"],
                   r["nuclei_pred"]] +
                  [_fmt(_at(inst[k], thr, 0.5)) for k in
                   ("precision", "recall", "f1", "accuracy", "panoptic_quality")] +
                  [_fmt(_at(inst["f1"], thr, 0.75)), _fmt(inst["map"]),
                   _fmt(inst["dsb2018_score"]), inst["merges"], inst["splits"]])
  return lines + _table(header, rows) + [""]


def _numbers_to_beat(results: Results) -> list[str]:
  """Ours beside NUMBERS_TO_BEAT on the test split."""
  test = "test"
  lines = ["## Numbers to beat (BBBC039 test split)", ""]
  header = ["system", "pixel F1", "pixel P", "pixel R", "instance F1@0.5", "mAP pooled"]
  rows = []
  for model, by_split in results.items():
    if test in by_split:
      px, inst = by_split[test]["pixel"], by_split[test]["instance"]
      rows.append([f"**{DISPLAY_NAMES.get(model, model)}, ours**", _fmt(px["f1"]),
                   _fmt(px["precision"]), _fmt(px["recall"]),
                   _fmt(_at(inst["f1"], inst["thresholds"], 0.5)), _fmt(inst["map"])])
  rows += [[name] + [_fmt(v) for v in values] for name, *values in NUMBERS_TO_BEAT]
  lines += _table(header, rows)
  if not any(test in by_split for by_split in results.values()):
    lines += ["", "(The test split was not evaluated in this run.)"]
  return lines + [""]


def _scorer_table(results: Results, splits: Sequence[str]) -> list[str]:
  """Scorer error rates per threshold (thesis §4.1, Fig. 22), where the scorer was measured."""
  spiral = results.get(SPIRALNET, {})
  if not any("scorer" in spiral.get(s, {}) for s in splits):
    return []
  lines = ["## Scorer error rates (%), thesis §4.1 and Fig. 22", "",
           f"Error rate = regions passing t whose centre pixel is background / regions "
           f"passing; stability = |passing on predicted − passing on label scores| / "
           f"regions. Thesis at t = {THESIS_SCORER_THRESHOLD}: error rate "
           + ", ".join(f"{s} {v}" for s, v in THESIS_SCORER_ERROR_RATE.items()) + ".", ""]
  scored = [s for s in splits if "scorer" in spiral.get(s, {})]
  thresholds = spiral[scored[0]]["scorer"]["thresholds"]
  header = ["t"] + [f"{s} {k}" for s in scored for k in ("error rate", "stability")]
  rows = [[_fmt(t, 1)] + [_fmt(spiral[s]["scorer"][k][i], 2) for s in scored
                          for k in ("error_rate", "stability_error_rate")]
          for i, t in enumerate(thresholds)]
  return lines + _table(header, rows) + [""]


def render_tables(results: Results, splits: Sequence[str]) -> str:
  """Renders tables.md: thesis Tables 1-3 with ours beside the thesis', plus instance metrics."""
  lines = ["# Evaluation", "",
           "Ours: this run. Thesis: Dekret 2019, §4. Pixel metrics are pooled over all pixels "
           "of a split (the thesis' metric); \"mean\" is the mean over images. Instance "
           "metrics follow StarDist `matching` (τ = IoU threshold); mAP pooled = mean over "
           "τ = 0.50…0.95 of TP/(TP+FP+FN) with counts pooled over the split; DSB2018 score = "
           "the same mean per image, then averaged over images.", ""]
  lines += _segmenter_table(results, splits)
  lines += _pixel_tables(results, splits)
  lines += _instance_table(results, splits)
  lines += _numbers_to_beat(results)
  lines += _scorer_table(results, splits)
  return "\n".join(lines)
