"""Evaluation: predict every image of a split, compute every metric, write the reports.

`evaluate(config, workdir, splits)` loads whichever trained models the workdir holds (SpiralNet
when scorer and segmenter checkpoints exist, U-Net when a unet checkpoint exists) and calls
`evaluate_models`, whose models are plain functions of a normalised image (`Model`), so tests
can inject fakes. Outputs under `<out_dir>` (default `<workdir>/eval/`):

    metrics.json   {model: {split: {pixel, instance, scorer?, segmenter?, ...}}}
    per_image.csv  one row per model, split and image
    tables.md      thesis Tables 1-3 with our numbers beside the thesis', instance metrics
                   (`spiralnet_jax.reports`)
    figures/       thesis Figs. 22, 26, 29, 30 and the training curves (Figs. 19, 24, 28)
"""

import csv
import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np

from spiralnet_jax import checkpoints
from spiralnet_jax import data as data_lib
from spiralnet_jax import figures
from spiralnet_jax import metrics
from spiralnet_jax import models as models_lib
from spiralnet_jax.models import Model
from spiralnet_jax import predict as predict_lib
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import reports
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import unet_predict
# Model keys in metrics.json, how the reports name them, and the segmenter's channels.
from spiralnet_jax.reports import CHANNELS, DISPLAY_NAMES, OTSU_WATERSHED, SPIRALNET, UNET

CSV_FIELDS = ("model", "split", "image", "nuclei_true", "nuclei_pred", "pixel_precision",
              "pixel_recall", "pixel_f1", "instance_precision@0.5", "instance_recall@0.5",
              "instance_f1@0.5", "merges", "splits")


@dataclasses.dataclass
class SplitResult:
  """One model on one split: the metrics.json entry, the CSV rows, predictions for figures."""

  metrics: dict
  rows: list[dict]
  shown: list[tuple[np.ndarray, np.ndarray]]  # (semantic, instances) of the first images.


def _count_nuclei(instances: np.ndarray) -> int:
  return int(len(np.unique(instances[instances != 0])))


def _region_targets(image: np.ndarray, labels: np.ndarray,
                    geom: regions_lib.RegionGeometry) -> tuple[regions_lib.CutRegions, np.ndarray]:
  """All regions with label scores and 3-channel labels, and whether each centre is nucleus."""
  cut = regions_lib.cut_and_label(image, labels, geom)
  cy, cx = geom.centre
  # The background channel of the one-hot labels is 0 exactly where the pixel is a nucleus.
  return cut, cut.labels[:, cy, cx, 2] == 0


def _image_rows(model: str, split: str, examples: Sequence[data_lib.Example],
                pairs_inst: Sequence[tuple[np.ndarray, np.ndarray]],
                per_image: Mapping[str, Sequence[float]]) -> list[dict]:
  """The per_image.csv rows (CSV_FIELDS) of one model on one split."""
  rows = []
  for i, (example, (true, pred)) in enumerate(zip(examples, pairs_inst)):
    m = metrics.match(true, pred, thresholds=(0.5,))
    merges, splits = metrics.merges_splits(true, pred)
    rows.append({
        "model": model, "split": split, "image": example.name,
        "nuclei_true": _count_nuclei(true), "nuclei_pred": _count_nuclei(pred),
        "pixel_precision": per_image["precision"][i],
        "pixel_recall": per_image["recall"][i],
        "pixel_f1": per_image["f1"][i],
        "instance_precision@0.5": m["precision"][0], "instance_recall@0.5": m["recall"][0],
        "instance_f1@0.5": m["f1"][0], "merges": merges, "splits": splits})
  return rows


def evaluate_split(model: Model, examples: Sequence[data_lib.Example],
                   config: ml_collections.ConfigDict, split: str) -> SplitResult:
  """Predicts every example and computes pixel, instance, scorer and segmenter metrics."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  num_shown = int(config.eval.num_figures)
  pairs_sem, pairs_inst, shown = [], [], []
  score_parts = {"pred": [], "label": [], "centre_fg": []}
  seg_counts = np.zeros((3, len(CHANNELS)), np.int64)  # (tp, fp, fn) per channel.
  num_seg_regions = 0
  predict_seconds = 0.0
  for i, example in enumerate(examples):
    image = data_lib.normalize(example.image, config.data.normalize_percentiles)
    start = time.perf_counter()
    semantic, instances = model.predict(image)
    seconds = time.perf_counter() - start
    predict_seconds += seconds
    logging.info("%s %s %d/%d %s: %.1f s", model.name, split, i + 1, len(examples),
                 example.name, seconds)
    semantic, instances = np.asarray(semantic, bool), np.asarray(instances, np.int32)
    pairs_sem.append((example.labels != 0, semantic))
    pairs_inst.append((example.labels, instances))
    if i < num_shown:
      shown.append((semantic, instances))
    if model.score is not None or model.segment is not None:
      cut, centre_fg = _region_targets(image, example.labels, geom)
      if model.score is not None:
        score_parts["pred"].append(np.asarray(model.score(image), np.float32).ravel())
        score_parts["label"].append(cut.scores)
        score_parts["centre_fg"].append(centre_fg)
      if model.segment is not None:
        # Table 1 is measured on the regions the segmenter trains on: label score passes t.
        selected = scorer_lib.select_regions(cut.scores, float(config.scorer.threshold))
        if len(selected):
          ch = metrics.channel_scores(model.segment(cut.regions[selected]),
                                      cut.labels[selected])
          seg_counts += np.stack([ch["tp"], ch["fp"], ch["fn"]])
          num_seg_regions += len(selected)
  pixel = metrics.pixel_scores(pairs_sem)
  instance = metrics.instance_scores(pairs_inst)
  rows = _image_rows(model.name, split, examples, pairs_inst, pixel["per_image"])
  result = {
      "num_images": len(examples),
      "nuclei_true": int(sum(r["nuclei_true"] for r in rows)),
      "nuclei_pred": int(sum(r["nuclei_pred"] for r in rows)),
      # Wall-clock of `model.predict` (first image includes compilation).
      "predict_seconds": predict_seconds,
      "pixel": {k: v for k, v in pixel.items() if k != "per_image"},
      "instance": instance,
  }
  if model.score is not None:
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in score_parts.items()}
    result["scorer"] = metrics.scorer_error_rates(cat["pred"], cat["label"], cat["centre_fg"])
  if model.segment is not None:
    result["segmenter"] = {"channels": list(CHANNELS), "num_regions": num_seg_regions,
                           "threshold": float(config.scorer.threshold),
                           "tp": seg_counts[0], "fp": seg_counts[1], "fn": seg_counts[2],
                           **metrics.prf(*seg_counts)}
  return SplitResult(metrics=_jsonable(result), rows=_jsonable(rows), shown=shown)


def _jsonable(x: Any) -> Any:
  """NumPy scalars/arrays to Python; NaN/inf to None (strict JSON has no NaN)."""
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(float(x)) else None
  return x


# --- reports ------------------------------------------------------------------------------------


def write_csv(rows: Sequence[Mapping[str, Any]], path: pathlib.Path) -> None:
  """Writes the per-image rows (CSV_FIELDS columns, floats with 6 digits)."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else
                           "" if v is None else v) for k, v in row.items()})


def read_metrics_log(path: pathlib.Path) -> list[dict]:
  """Reads a metrics.jsonl training log (one JSON object per line; bad lines skipped)."""
  records = []
  if path.is_file():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict):
        records.append(record)
  return records


def evaluate_models(models: Sequence[Model],
                    examples_by_split: Mapping[str, Sequence[data_lib.Example]],
                    config: ml_collections.ConfigDict, out_dir: str | pathlib.Path,
                    metrics_log: str | pathlib.Path | None = None) -> dict:
  """Evaluates each model on each split and writes metrics.json, per_image.csv, tables.md, figures.

  Returns the metrics.json content: {model name: {split: metrics}}.
  """
  out_dir = pathlib.Path(out_dir)
  fig_dir = out_dir / "figures"
  fig_dir.mkdir(parents=True, exist_ok=True)
  splits = list(examples_by_split)
  results: dict[str, dict[str, dict]] = {}
  rows: list[dict] = []
  shown: dict[str, dict[str, list]] = {}
  for model in models:
    for split, examples in examples_by_split.items():
      res = evaluate_split(model, examples, config, split)
      results.setdefault(model.name, {})[split] = res.metrics
      rows += res.rows
      shown.setdefault(split, {})[model.name] = res.shown

  (out_dir / "metrics.json").write_text(json.dumps(results, indent=1, allow_nan=False))
  write_csv(rows, out_dir / "per_image.csv")
  (out_dir / "tables.md").write_text(reports.render_tables(results, splits))
  write_figures(results, examples_by_split, shown, fig_dir, metrics_log)
  return results


def write_figures(results: Mapping[str, Mapping[str, dict]],
                  examples_by_split: Mapping[str, Sequence[data_lib.Example]],
                  shown: Mapping[str, Mapping[str, list]], fig_dir: pathlib.Path,
                  metrics_log: str | pathlib.Path | None) -> list[pathlib.Path]:
  """Writes the thesis-style figures into `fig_dir`; returns the paths written."""
  paths = []
  for split, by_model in shown.items():
    for i, example in enumerate(examples_by_split[split]):
      preds = {m: p[i] for m, p in by_model.items() if i < len(p)}
      if not preds:
        break
      image, true = data_lib.normalize(example.image), example.labels
      stem = f"{split}_{i:02d}"
      for model, (semantic, instances) in preds.items():
        paths.append(figures.prediction_figure(
            image, true, semantic, instances, fig_dir / f"{stem}_{model}.png",
            model_name=DISPLAY_NAMES.get(model, model)))
      named = {DISPLAY_NAMES.get(m, m): p for m, p in preds.items()}
      if len(preds) > 1:
        paths.append(figures.comparison_figure(
            image, true, {m: inst for m, (_, inst) in named.items()},
            fig_dir / f"{stem}_comparison.png"))
      paths.append(figures.difference_figure(
          true != 0, {m: sem for m, (sem, _) in named.items()},
          fig_dir / f"{stem}_difference.png"))
  for model, by_split in results.items():
    rates = {s: r["scorer"] for s, r in by_split.items() if "scorer" in r}
    if rates:
      thresholds = next(iter(rates.values()))["thresholds"]
      paths.append(figures.error_rates_figure(thresholds, rates,
                                              fig_dir / f"scorer_error_rates_{model}.png"))
  if metrics_log is not None:
    records = read_metrics_log(pathlib.Path(metrics_log))
    if records:
      paths.append(figures.training_curves_figure(records, fig_dir / "training_curves.png"))
  return paths


# --- models from a training workdir -------------------------------------------------------------


def has_checkpoint(workdir: str | pathlib.Path, stage: str) -> bool:
  """Whether training wrote at least one checkpoint step of `stage` under `workdir`."""
  return bool(checkpoints.checkpoint_steps(workdir, stage))


def models_from_workdir(config: ml_collections.ConfigDict,
                        workdir: str | pathlib.Path) -> list[Model]:
  """SpiralNet if scorer and segmenter checkpoints exist, U-Net if a unet checkpoint exists,
  and the baselines `config.eval.baselines` names."""
  models = []
  if has_checkpoint(workdir, "scorer") and has_checkpoint(workdir, "segmenter"):
    models.append(models_lib.spiralnet(predict_lib.Predictor.from_workdir(workdir, config)))
  if has_checkpoint(workdir, "unet"):
    models.append(models_lib.unet(unet_predict.UNetPredictor.from_params(
        config, checkpoints.load_params(workdir, "unet", config))))
  trained = bool(models)
  for name in config.eval.baselines:
    if name != OTSU_WATERSHED:
      raise ValueError(f"unknown baseline {name!r} in config.eval.baselines; expected "
                       f"{OTSU_WATERSHED!r}")
    models.append(models_lib.otsu_watershed(config))
  if not trained:
    raise FileNotFoundError(
        f"no trained model in {workdir}: expected checkpoints/scorer and checkpoints/segmenter "
        "(SpiralNet) or checkpoints/unet")
  return models


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | pathlib.Path,
             splits: Sequence[str] | None = None) -> dict:
  """Evaluates every trained model in `workdir` on `splits`; writes `<workdir>/eval/`.

  `config` defaults to the workdir's config.json and `splits` to `config.eval.splits`.
  """
  workdir = pathlib.Path(workdir)
  config = checkpoints.load_config(workdir) if config is None else config
  splits = list(config.eval.splits if splits is None else splits)
  models = models_from_workdir(config, workdir)
  examples = {split: data_lib.load_examples(config.data, split) for split in splits}
  logging.info("evaluating %s on %s", [m.name for m in models],
               {s: len(e) for s, e in examples.items()})
  return evaluate_models(models, examples, config, workdir / "eval",
                         metrics_log=workdir / "metrics.jsonl")
