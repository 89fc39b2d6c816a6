"""Evaluation reports on hand-made predictions, and the figures' pixels.

The split below has one 40×48 field with three nuclei and one empty field. Model "unet" is a
hand-made imperfect prediction (two touching nuclei merged, one missed, one false positive);
model "spiralnet" is an oracle, including its scorer and segmenter, so every score is 1.
"""

import csv
import json

import numpy as np
import pytest
from skimage import io

from configs import default
from spiralnet_jax import data as data_lib
from spiralnet_jax import evaluation
from spiralnet_jax import figures
from spiralnet_jax import models
from spiralnet_jax import regions as regions_lib

_SHAPE = (40, 48)
_MAX_ID = 3  # Images encode instance ids as grey levels (see `_example`), so oracles can read them.


def _labels_a() -> np.ndarray:
  labels = np.zeros(_SHAPE, np.int32)
  labels[10:18, 8:18] = 1  # 80 px
  labels[10:18, 18:26] = 2  # 64 px, touching nucleus 1
  labels[24:34, 30:40] = 3  # 100 px
  return labels


def _example(name: str, labels: np.ndarray) -> data_lib.Example:
  # Grey level = instance id: normalize() maps it to id / 3 (all ids up to 3 present) or 0.
  return data_lib.Example(name=name, image=labels.astype(np.uint16), labels=labels)


def _split() -> list[data_lib.Example]:
  return [_example("field_a", _labels_a()), _example("empty", np.zeros(_SHAPE, np.int32))]


def _decode(normalised: np.ndarray) -> np.ndarray:
  return np.rint(np.asarray(normalised) * _MAX_ID).astype(np.int32)


def _config():
  config = default.get_config()
  config.eval.num_figures = 1
  return config


# The normalisation and nucleus size a fake model declares (evaluation does not read them).
_TRAINED_WITH = ((1.0, 99.8), 28.25)


def _oracle(config) -> models.Model:
  geom = regions_lib.RegionGeometry.from_config(config.regions)

  def predict(image):
    ids = _decode(image)
    return ids > 0, ids

  def score(image):
    ids = _decode(image)
    grid = regions_lib.grid_shape(ids.shape, geom)
    return regions_lib.score_labels(regions_lib.extract_regions(ids, geom), geom).reshape(grid)

  def segment(regions):
    return regions_lib.central_labels(_decode(regions), geom)

  return models.Model(evaluation.SPIRALNET, predict, *_TRAINED_WITH, score, segment)


def _merger() -> models.Model:
  def predict(image):
    instances = np.zeros(image.shape, np.int32)
    if image.max() > 0:  # field_a: nuclei 1 and 2 merged into one, nucleus 3 missed,
      instances[10:18, 8:26] = 1  # 144 px
      instances[30:35, 2:6] = 2  # and a 20 px false positive.
    return instances > 0, instances

  return models.Model(evaluation.UNET, predict, *_TRAINED_WITH)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("eval")
  log = out / "metrics.jsonl"
  log.write_text("\n".join(json.dumps(r) for r in [
      {"stage": "scorer", "step": 1, "epoch": 0.5, "loss": 0.5},
      {"stage": "scorer", "step": 2, "epoch": 1.0, "loss": 0.25, "val_loss": 0.3},
      {"stage": "segmenter", "step": 1, "epoch": 1.0, "loss": 0.7}]) + "\nnot json\n")
  config = _config()
  examples = {"validation": _split(), "test": _split()}
  results = evaluation.evaluate_models([_oracle(config), _merger()], examples, config, out,
                                       metrics_log=log)
  return out, results, config


# Hand counts for the merger on field_a: tp 144, fp 20, fn 100.
_P, _R, _F1 = 144 / 164, 144 / 244, 288 / 408


def test_metrics_json_is_strict_json_equal_to_the_returned_results(report):
  out, results, _ = report
  text = (out / "metrics.json").read_text()
  assert "NaN" not in text
  assert json.loads(text) == results
  assert set(results) == {"spiralnet", "unet"}
  assert set(results["unet"]) == {"validation", "test"}


def test_merger_pixel_metrics_pool_counts_and_average_images(report):
  pixel = report[1]["unet"]["test"]["pixel"]
  assert (pixel["tp"], pixel["fp"], pixel["fn"]) == (144, 20, 100)
  assert pixel["precision"] == pytest.approx(_P)
  assert pixel["recall"] == pytest.approx(_R)
  assert pixel["f1"] == pytest.approx(_F1)
  # The empty field predicted empty scores 1 (metrics' 0/0 convention).
  assert pixel["mean_f1"] == pytest.approx((_F1 + 1.0) / 2)


def test_merger_instance_metrics(report):
  res = report[1]["unet"]["validation"]
  inst = res["instance"]
  assert inst["thresholds"][0] == 0.5 and len(inst["thresholds"]) == 10
  # IoU(nucleus 1, merged) = 80/144 = 0.556 matches at τ = 0.50 and 0.55 only.
  assert inst["tp"] == [1, 1] + [0] * 8
  assert inst["fp"][0] == 1 and inst["fn"][0] == 2
  assert inst["f1"][0] == pytest.approx(2 / 5)
  assert inst["accuracy"][0] == pytest.approx(1 / 4)
  assert inst["map"] == pytest.approx(2 * 0.25 / 10)
  assert (inst["merges"], inst["splits"]) == (1, 0)
  assert (res["nuclei_true"], res["nuclei_pred"], res["num_images"]) == (3, 2, 2)


def test_oracle_scores_one_everywhere(report):
  res = report[1]["spiralnet"]["test"]
  assert res["pixel"]["f1"] == res["pixel"]["mean_f1"] == 1.0
  assert res["instance"]["f1"] == [1.0] * 10 and res["instance"]["map"] == 1.0
  assert res["segmenter"]["f1"] == res["segmenter"]["precision"] == [1.0, 1.0, 1.0]
  assert res["segmenter"]["channels"] == ["central", "other", "background"]
  # Predicted scores equal the label scores: the stability error rate is 0 at every t.
  assert res["scorer"]["stability_error_rate"] == [0.0] * 9
  assert res["scorer"]["thresholds"][0] == pytest.approx(0.1)


def test_segmenter_and_scorer_are_measured_on_every_region(report):
  _, results, config = report
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  cut = regions_lib.cut_and_label(np.zeros(_SHAPE), _labels_a(), geom)
  rows, cols = regions_lib.grid_shape(_SHAPE, geom)
  res = results["spiralnet"]["validation"]
  assert res["scorer"]["num_regions"] == 2 * rows * cols  # Both fields, every region.
  assert res["segmenter"]["num_regions"] == np.count_nonzero(
      cut.scores > config.scorer.threshold) > 1
  # Central-object pixels over the selected regions, all found.
  selected = cut.labels[cut.scores > config.scorer.threshold]
  assert res["segmenter"]["tp"][0] == np.count_nonzero(selected[..., 0])


def test_per_image_csv(report):
  out = report[0]
  with open(out / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == evaluation.CSV_FIELDS
  assert [(r["model"], r["split"], r["image"]) for r in rows] == [
      (m, s, i) for m in ("spiralnet", "unet") for s in ("validation", "test")
      for i in ("field_a", "empty")]
  merged = rows[4]
  assert (merged["model"], merged["image"]) == ("unet", "field_a")
  assert (int(merged["nuclei_true"]), int(merged["nuclei_pred"])) == (3, 2)
  assert float(merged["pixel_f1"]) == pytest.approx(_F1, abs=1e-6)
  assert float(merged["instance_f1@0.5"]) == pytest.approx(0.4, abs=1e-6)
  assert (int(merged["merges"]), int(merged["splits"])) == (1, 0)


def _row(md: str, section: str, first_cell: str) -> list[str]:
  """The cells of the row starting with `first_cell` in the table under heading `section`."""
  body = md.split(section, 1)[1].split("\n## ", 1)[0]
  for line in body.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells[0] == first_cell:
      return cells
  raise AssertionError(f"no row {first_cell!r} under {section!r}")


def test_tables_put_ours_beside_the_thesis(report):
  md = (report[0] / "tables.md").read_text()
  # Table 3: U-Net validation (ours, thesis), test (ours, thesis), SpiralNet likewise.
  f1 = _row(md, "## Table 3", "F1 score")
  assert f1[1:] == [f"{_F1:.3f}", "0.960", f"{_F1:.3f}", "0.965",
                    "1.000", "0.965", "1.000", "0.969"]
  recall = _row(md, "## Table 3", "Recall")
  assert recall[1:5] == [f"{_R:.3f}", "0.959", f"{_R:.3f}", "0.961"]
  # Table 2: SpiralNet pooled, per-image mean, thesis, per split.
  assert _row(md, "## Table 2", "Precision")[1:] == ["1.000", "1.000", "0.960",
                                                      "1.000", "1.000", "0.963"]
  # Table 1: central object F1 for validation and test beside the thesis' 0.945.
  assert _row(md, "## Table 1", "F1 score")[1:5] == ["1.000", "0.945", "1.000", "0.945"]
  # Numbers to beat and the instance table.
  assert _row(md, "## Numbers to beat", "**U-Net, ours**")[1:] == [
      f"{_F1:.3f}", f"{_P:.3f}", f"{_R:.3f}", "0.400", "0.050"]
  assert _row(md, "## Numbers to beat", "StarDist 2D, same data and CPU, 45 min")[1:] == [
      "0.957", "—", "—", "0.950", "0.743"]
  # P@0.5 = 1 match / 2 predictions.
  assert _row(md, "## Instance metrics", "U-Net")[1:6] == ["validation", "2", "3", "2", "0.500"]
  assert "## Scorer error rates" in md and "7.56" in md


def _png(path):
  pixels = io.imread(path)
  assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
  return pixels[..., :3]


def test_figures_are_written_real_and_not_blank(report):
  fig_dir = report[0] / "figures"
  names = sorted(p.name for p in fig_dir.glob("*.png"))
  assert names == sorted([
      "validation_00_spiralnet.png", "validation_00_unet.png",
      "validation_00_comparison.png", "validation_00_difference.png",
      "test_00_spiralnet.png", "test_00_unet.png", "test_00_comparison.png",
      "test_00_difference.png", "scorer_error_rates_spiralnet.png", "training_curves.png"])
  for name in names:
    assert _png(fig_dir / name).astype(np.float64).var() > 0, name
  # Four panels of the minimum 320 px width (the image is only 48 wide); the 40×48 image is
  # 320 · 40/48 = 266.7 -> 267 px high under a 30 px title band.
  assert _png(fig_dir / "test_00_unet.png").shape[:2] == (297, 1280)
  # Image, ground truth, two models.
  assert _png(fig_dir / "test_00_comparison.png").shape[:2] == (297, 1280)
  # The merger's difference map has red (false positive) and white (missed) pixels.
  diff = _png(fig_dir / "test_00_difference.png")
  assert diff.shape[:2] == (297, 640)
  right = diff[30:, 320:]  # The U-Net panel (SpiralNet first).
  assert np.any(np.all(right == (255, 0, 0), axis=-1))
  assert np.any(np.all(right[:, 5:-5] == (255, 255, 255), axis=-1))
  # The oracle's difference map has no errors at all.
  assert not np.any(np.all(diff[30:, :320] == (255, 0, 0), axis=-1))


def test_difference_map_colours_by_hand():
  pred = np.array([[1, 1], [0, 0]], bool)
  true = np.array([[1, 0], [1, 0]], bool)
  rgb = figures.difference_map(pred, true)
  assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
  assert tuple(rgb[1, 0]) == (255, 255, 255)  # Missed: white.
  assert tuple(rgb[0, 1]) == (255, 0, 0)  # False positive: red.
  for yx in ((0, 0), (1, 1)):  # True positive, true negative: neither.
    assert tuple(rgb[yx]) not in ((255, 255, 255), (255, 0, 0))
  assert tuple(rgb[0, 0]) != tuple(rgb[1, 1])


def test_instance_overlay_keeps_background_grey_and_colours_touching_nuclei_apart():
  image = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
  instances = np.zeros((12, 16), np.int32)
  instances[2:8, 2:8] = 1
  instances[2:8, 8:14] = 2
  rgb = figures.instance_overlay(image, instances)
  assert rgb.shape == (12, 16, 3)
  bg = instances == 0
  np.testing.assert_array_equal(rgb[bg], np.repeat(image[bg][:, None], 3, axis=1))
  assert not np.allclose(rgb[4, 4], rgb[4, 4].mean())  # Nuclei are coloured, not grey.
  # Outline pixels carry the pure instance colour; neighbours differ.
  assert not np.allclose(rgb[2, 7], rgb[2, 8])


def test_panels_figure_size(tmp_path):
  rng = np.random.default_rng(0)
  panels = [("a", figures.grey_rgb(rng.random((50, 100)))), ("b", rng.random((50, 100, 3)))]
  path = figures.panels_figure(panels, tmp_path / "p.png", panel_px=200)
  # 2 panels × 200 px; 200 × 50/100 = 100 px of image under a 30 px title band.
  assert _png(path).shape[:2] == (130, 400)
  assert figures.panels_size(2, (50, 100), 200) == (400, 130)


# --- evaluate() on a training workdir ----------------------------------------------------------


def _write_untrained_workdir(config, workdir, stages):
  """A workdir as training leaves it (config.json, a checkpoint per stage), random weights.

  Training even one step of every stage takes minutes on a 2-core CPU, and so does compiling
  the initialisers; loading and evaluating do not depend on the parameter values, so the
  checkpoints hold Gaussian noise in the shape of a `train_state.TrainState`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import train_state  # pylint: disable=g-import-not-at-top
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  (workdir / "metrics.jsonl").write_text(json.dumps({"stage": "unet", "step": 1, "loss": 0.7}))
  rng = np.random.default_rng(0)
  for stage in stages:
    state = jax.tree.map(
        lambda a: (rng.normal(0.0, 0.1, a.shape) if a.dtype.kind == "f" else
                   np.zeros(a.shape)).astype(a.dtype),
        train_state.abstract_state(stage, config))
    options = ocp.CheckpointManagerOptions(create=True)
    with ocp.CheckpointManager(checkpoints.checkpoint_dir(workdir, stage), options=options) as mngr:
      checkpoints.save(mngr, 1, state)
      mngr.wait_until_finished()


def test_evaluate_loads_every_trained_model_from_the_workdir(tmp_path):
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  config = test_config.get_config()
  config.eval.num_figures = 1
  _write_untrained_workdir(config, tmp_path, ("scorer", "segmenter", "unet"))
  results = evaluation.evaluate(None, tmp_path, ["validation"])  # Config from config.json.
  assert set(results) == {"spiralnet", "unet"}
  num_images = config.data.synthetic_num_eval
  assert results["unet"]["validation"]["num_images"] == num_images
  assert set(results["spiralnet"]["validation"]) >= {"pixel", "instance", "scorer", "segmenter"}
  out = tmp_path / "eval"
  assert json.loads((out / "metrics.json").read_text()) == results
  with open(out / "per_image.csv") as f:
    assert len(list(csv.DictReader(f))) == 2 * num_images
  assert "## Table 3" in (out / "tables.md").read_text()
  for name in ("validation_00_spiralnet.png", "validation_00_unet.png",
               "validation_00_comparison.png", "validation_00_difference.png",
               "scorer_error_rates_spiralnet.png", "training_curves.png"):
    assert _png(out / "figures" / name).var() > 0, name


def test_evaluate_needs_a_trained_model(tmp_path):
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  config = test_config.get_config()
  _write_untrained_workdir(config, tmp_path, ("scorer",))  # No segmenter: no SpiralNet.
  assert evaluation.has_checkpoint(tmp_path, "scorer")
  assert not evaluation.has_checkpoint(tmp_path, "segmenter")
  with pytest.raises(FileNotFoundError, match="no trained model"):
    evaluation.evaluate(config, tmp_path, ["validation"])
