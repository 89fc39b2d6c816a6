"""Valid values of every config field that a typo can make nonsense, checked in one place.

`validate(config)` runs before anything is read or written (train.py checks before the workdir
is touched), and lists every bad field at once: a negative learning rate, zero epochs or a batch
size of 0 is refused rather than trained with (or saved as a trained stage).
"""

import math
from typing import Any

import ml_collections

from spiralnet_jax import errors

INF = math.inf

# Dotted field -> (lowest, highest, integer?) allowed, both ends included.
RANGES: dict[str, tuple[float, float, bool]] = {
    "seed": (0, 2**31 - 1, True),
    "data.max_images": (0, INF, True),
    "data.synthetic_num_train": (1, INF, True),
    "data.synthetic_num_eval": (1, INF, True),
    "data.synthetic_touch_probability": (0, 1, False), "data.nucleus_diameter": (0, INF, False),
    "regions.height": (1, INF, True), "regions.width": (1, INF, True),
    "regions.stride": (1, INF, True), "regions.pad": (0, INF, True),
    "regions.score_window": (1, INF, True),
    "scorer.hidden": (1, INF, True), "scorer.threshold": (-INF, INF, False),
    "segmenter.update_size": (1, INF, True), "segmenter.branch_features": (1, INF, True),
    "segmenter.features": (1, INF, True), "segmenter.skip_features": (1, INF, True),
    "segmenter.num_skip_modules": (0, INF, True), "segmenter.seed_radius": (0, INF, True),
    "segmenter.touching_repeat": (1, INF, True), "segmenter.max_train_regions": (0, INF, True),
    "segmenter.boundary_weight": (0, INF, False), "segmenter.boundary_radius": (0, INF, True),
    "unet.base_features": (1, INF, True), "unet.depth": (1, 10, True),
    "unet.crop_size": (0, INF, True), "unet.threshold": (0, 1, False),
    "continuation.max_moves": (0, INF, True), "continuation.threshold": (0, 1, False),
    "assembly.threshold": (0, 1, False), "assembly.merge_iou": (0, 1, False),
    "assembly.merge_containment": (0, 1.01, False), "assembly.min_size": (0, INF, True),
    "assembly.split_containment": (0, 1, False),
    "assembly.valley_min_depth": (0, INF, False), "assembly.valley_min_distance": (1, INF, True),
    "assembly.valley_ratio": (0, INF, False), "assembly.valley_level_percentile": (0, 100, False),
    "predict.region_batch_size": (1, INF, True), "predict.shape_bucket": (0, INF, True),
    "predict.threads": (0, INF, True),
    "predict.stride": (1, INF, True), "predict.stripe_rows": (1, INF, True),
    "predict.peak_stride": (1, INF, True), "predict.peak_min_distance": (1, INF, True),
    "predict.lobe_min_distance": (1, INF, True), "predict.lobe_min_depth": (0, INF, False),
    "predict.max_lobes": (2, INF, True), "predict.lobe_max_solidity": (0, 1, False),
    "predict.chunk_regions": (1, INF, True),
    "predict.chunks_in_flight": (1, INF, True), "predict.unet_tile": (1, INF, True),
    "train.log_every_steps": (1, INF, True), "train.checkpoint_every_epochs": (1, INF, True),
    "train.checkpoint_every_steps": (0, INF, True), "train.max_to_keep": (1, INF, True),
    "train.eval_every_epochs": (1, INF, True), "train.max_steps": (0, INF, True),
    "train.max_eval_regions": (0, INF, True), "train.grad_clip_norm": (0, INF, False),
    "eval.num_figures": (0, INF, True),
    "classical.sigma": (0, INF, False), "classical.min_distance": (1, INF, True),
    "classical.min_size": (0, INF, True),
}
# Per stage section: the optimiser's numbers.
for _stage in ("scorer", "segmenter", "unet"):
  RANGES.update({f"{_stage}.learning_rate": (0, INF, False), f"{_stage}.epochs": (1, INF, True),
                 f"{_stage}.batch_size": (1, INF, True),
                 f"{_stage}.warmup_epochs": (0, INF, False)})

CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": ("bbbc039", "sample", "tfds", "synthetic"),
    "segmenter.step": ("cropped", "full_fov"), "segmenter.loss": ("final", "per_step"),
    "segmenter.train_regions": ("label", "scorer"), "segmenter.dtype": ("float32", "bfloat16"),
    "segmenter.cpu_conv_vjp": ("auto", "on", "off"), "predict.seeds": ("grid", "peaks"),
    "predict.cpu_ynn_fusion": ("auto", "default", "eltwise"),
    **{f"{s}.lr_schedule": ("constant", "cosine") for s in ("scorer", "segmenter", "unet")},
}


class ConfigError(errors.TrainingError, ValueError):
  """Config fields outside their valid range; the message lists every one."""


def _get(config: Any, dotted: str) -> Any:
  for key in dotted.split("."):
    config = config[key]
  return config


def _range_problem(name: str, value: Any, low: float, high: float, integer: bool) -> str | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return f"{name} must be a number, got {value!r}"
  if integer and value != int(value):
    return f"{name} must be a whole number, got {value!r}"
  if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
    bounds = f">= {low:g}" if high == INF else f"in [{low:g}, {high:g}]"
    return f"{name} must be {bounds}, got {value!r}"
  return None


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every field of `config` outside its valid values, as `field must be ..., got ...`."""
  out = []
  for name, (low, high, integer) in RANGES.items():
    problem = _range_problem(name, _get(config, name), low, high, integer)
    if problem:
      out.append(problem)
  for name, allowed in CHOICES.items():
    if _get(config, name) not in allowed:
      out.append(f"{name} must be one of {allowed}, got {_get(config, name)!r}")
  low, high = config.data.normalize_percentiles
  if not 0 <= low < high <= 100:
    out.append("data.normalize_percentiles must satisfy 0 <= low < high <= 100, got "
               f"{tuple(config.data.normalize_percentiles)}")
  if config.regions.score_window % 2 != 1:
    out.append(f"regions.score_window must be odd, got {config.regions.score_window}")
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming every bad field (see RANGES and CHOICES); else returns."""
  found = problems(config)
  if found:
    raise ConfigError("invalid config: " + "; ".join(found))
