"""Evaluation figures (thesis Figs. 19, 22, 26, 29, 30) rendered with matplotlib's Agg canvas.

The colouring functions are pure NumPy (testable pixel by pixel); the `*_figure` functions lay
them out and write PNGs. Figures are built with `matplotlib.figure.Figure` directly, never
through pyplot, so no global backend or figure state is touched.
"""

import pathlib
from typing import Mapping, Sequence

from matplotlib import figure as mpl_figure
import numpy as np
from skimage import segmentation

# Difference map colours (thesis Fig. 30): missed pixels white, false positives red. True
# positives are dark grey so the nuclei stay visible without being confused with errors.
MISSED_RGB = (255, 255, 255)
FALSE_POSITIVE_RGB = (255, 0, 0)
TRUE_POSITIVE_RGB = (70, 70, 70)
TRUE_NEGATIVE_RGB = (0, 0, 0)

MIN_PANEL_PX = 320
_TITLE_PX = 30
_DPI = 100


def grey_rgb(image: np.ndarray) -> np.ndarray:
  """Returns a normalised (H, W) image in [0, 1] as a grey (H, W, 3) float32 RGB image."""
  grey = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  return np.repeat(grey[..., None], 3, axis=-1)


def instance_colours(num: int, seed: int = 0) -> np.ndarray:
  """Returns (num, 3) float32 saturated colours in random order, so neighbours differ."""
  rng = np.random.default_rng(seed)
  # Golden-ratio hues are well spread; shuffling keeps adjacent ids from similar hues.
  hues = (np.arange(num) * 0.618033988749895) % 1.0
  hues = hues[rng.permutation(num)]
  return _hsv_to_rgb(hues, np.full(num, 0.85), np.full(num, 1.0))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
  i = np.floor(h * 6.0).astype(np.int64) % 6
  f = h * 6.0 - np.floor(h * 6.0)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  table = np.stack([
      np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
      np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1)], 0)
  return table[i, np.arange(len(h))].astype(np.float32)


def instance_overlay(image: np.ndarray, instances: np.ndarray, alpha: float = 0.4,
                     seed: int = 0) -> np.ndarray:
  """Returns the grey image with each instance tinted in its own colour and outlined."""
  rgb = grey_rgb(image)
  instances = np.asarray(instances)
  ids, inverse = np.unique(instances, return_inverse=True)
  inverse = inverse.reshape(instances.shape)
  tint = instance_colours(len(ids), seed)[inverse]  # Background pixels are never tinted.
  fg = instances != 0
  rgb[fg] = (1 - alpha) * rgb[fg] + alpha * tint[fg]
  outline = segmentation.find_boundaries(instances, mode="inner") & fg
  rgb[outline] = tint[outline]
  return rgb


def semantic_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45,
                     colour: Sequence[float] = (0.1, 1.0, 0.2)) -> np.ndarray:
  """Returns the grey image with the foreground mask tinted and outlined in one colour."""
  rgb = grey_rgb(image)
  mask = np.asarray(mask, bool)
  colour = np.asarray(colour, np.float32)
  rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
  rgb[segmentation.find_boundaries(mask, mode="inner") & mask] = colour
  return rgb


def difference_map(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """Returns the thesis Fig. 30 map as uint8 RGB: missed white, false positive red."""
  pred, true = np.asarray(pred, bool), np.asarray(true, bool)
  out = np.empty(pred.shape + (3,), np.uint8)
  out[...] = TRUE_NEGATIVE_RGB
  out[pred & true] = TRUE_POSITIVE_RGB
  out[~pred & true] = MISSED_RGB
  out[pred & ~true] = FALSE_POSITIVE_RGB
  return out


def panels_size(num_panels: int, image_shape: tuple[int, int],
                panel_px: int) -> tuple[int, int]:
  """Returns the (width, height) in pixels of a `panels_figure` PNG."""
  h, w = image_shape
  return num_panels * panel_px, int(round(panel_px * h / w)) + _TITLE_PX


def panels_figure(panels: Sequence[tuple[str, np.ndarray]], path: str | pathlib.Path,
                  panel_px: int | None = None) -> pathlib.Path:
  """Writes images side by side, each `panel_px` wide with its title above it, as a PNG.

  By default panels are drawn at the image's own width (one-pixel outlines stay visible),
  but at least `MIN_PANEL_PX` so that small images still leave room for their titles.
  """
  shape = panels[0][1].shape[:2]
  if panel_px is None:
    panel_px = max(shape[1], MIN_PANEL_PX)
  width, height = panels_size(len(panels), shape, panel_px)
  fig = mpl_figure.Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
  image_frac = 1.0 - _TITLE_PX / height
  for i, (title, rgb) in enumerate(panels):
    ax = fig.add_axes((i / len(panels), 0.0, 1.0 / len(panels), image_frac))
    ax.imshow(rgb, interpolation="nearest", aspect="auto",
              cmap="gray" if rgb.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    fig.text((i + 0.5) / len(panels), 1.0 - 0.5 * _TITLE_PX / height, title,
             ha="center", va="center", fontsize=10)
  return _save(fig, path)


def prediction_figure(image: np.ndarray, true_instances: np.ndarray, semantic: np.ndarray,
                      instances: np.ndarray, path: str | pathlib.Path,
                      model_name: str = "SpiralNet") -> pathlib.Path:
  """Writes thesis Fig. 26: image, ground truth, semantic and instance prediction."""
  return panels_figure([
      ("image", grey_rgb(image)),
      (f"ground truth ({_count(true_instances)} nuclei)", instance_overlay(image, true_instances)),
      (f"{model_name} semantic", semantic_overlay(image, semantic)),
      (f"{model_name} instances ({_count(instances)})", instance_overlay(image, instances)),
  ], path)


def comparison_figure(image: np.ndarray, true_instances: np.ndarray,
                      instances_by_model: Mapping[str, np.ndarray],
                      path: str | pathlib.Path) -> pathlib.Path:
  """Writes thesis Fig. 29: image, ground truth, then each model's instances."""
  panels = [("image", grey_rgb(image)),
            (f"ground truth ({_count(true_instances)} nuclei)",
             instance_overlay(image, true_instances))]
  panels += [(f"{name} ({_count(inst)})", instance_overlay(image, inst))
             for name, inst in instances_by_model.items()]
  return panels_figure(panels, path)


def difference_figure(true_semantic: np.ndarray, semantic_by_model: Mapping[str, np.ndarray],
                      path: str | pathlib.Path) -> pathlib.Path:
  """Writes thesis Fig. 30 per model: missed pixels white, false positives red."""
  panels = []
  for name, pred in semantic_by_model.items():
    pred = np.asarray(pred, bool)
    missed = int(np.sum(~pred & true_semantic))
    false_pos = int(np.sum(pred & ~true_semantic))
    panels.append((f"{name}: missed {missed} px (white), false pos. {false_pos} px (red)",
                   difference_map(pred, true_semantic).astype(np.float32) / 255.0))
  return panels_figure(panels, path)


def curves_figure(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                  path: str | pathlib.Path, xlabel: str = "step",
                  ylabels: Mapping[str, str] | None = None) -> pathlib.Path:
  """Writes one subplot per panel name, one line per series: {panel: {series: (x, y)}}."""
  ylabels = ylabels or {}
  fig = mpl_figure.Figure(figsize=(5 * len(curves), 4), dpi=_DPI)
  for i, (panel, series) in enumerate(curves.items()):
    ax = fig.add_subplot(1, len(curves), i + 1)
    for name, (x, y) in series.items():
      ax.plot(x, y, label=name, marker="o" if len(x) < 20 else None, markersize=3)
    ax.set_title(panel)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabels.get(panel, ""))
    ax.grid(alpha=0.3)
    if series:
      ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def error_rates_figure(thresholds: Sequence[float],
                       rates_by_split: Mapping[str, Mapping[str, Sequence[float]]],
                       path: str | pathlib.Path) -> pathlib.Path:
  """Writes thesis Fig. 22: (a) stability error rate, (b) error rate against threshold."""
  panels = {"(a) stability error rate": "stability_error_rate",
            "(b) error rate (centre is background)": "error_rate"}
  curves = {title: {split: (list(thresholds), list(rates[key]))
                    for split, rates in rates_by_split.items()}
            for title, key in panels.items()}
  return curves_figure(curves, path, xlabel="threshold t",
                       ylabels={title: "% " for title in panels})


def training_curves_figure(records: Sequence[Mapping[str, object]],
                           path: str | pathlib.Path) -> pathlib.Path:
  """Writes thesis Figs. 19/24/28: every logged loss against step, one panel per stage."""
  curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
  for record in records:
    stage = str(record.get("stage", "train"))
    step = record.get("step")
    if not isinstance(step, (int, float)):
      continue
    for key, value in record.items():
      # Throughput and learning rate are logged too; only losses share a meaningful axis.
      if not key.endswith("loss") or isinstance(value, bool):
        continue
      if isinstance(value, (int, float)) and np.isfinite(value):
        xs, ys = curves.setdefault(stage, {}).setdefault(key, ([], []))
        xs.append(float(step))
        ys.append(float(value))
  if not curves:
    curves = {"no logged losses": {}}
  return curves_figure(curves, path, ylabels={stage: "loss" for stage in curves})


def _count(instances: np.ndarray) -> int:
  return int(len(np.unique(instances[instances != 0])))


def _save(fig: mpl_figure.Figure, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=_DPI)
  return path
