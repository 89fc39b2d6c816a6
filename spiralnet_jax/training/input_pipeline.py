"""Per-stage training data: regions and images gathered per batch, batch order, per-stage sets.

Batches are a pure function of (seed, stage, epoch, batch index): `epoch_batches` permutes the
items from (seed, stage id, epoch) and `batch_rng` draws a batch's random parts (crops, flips),
so a resumed run sees exactly the batches of an uninterrupted one. A `batch(items, rng, rows)`
returns only rows `rows` of the global batch, so each host loads its own part.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import stages

Batch = dict[str, np.ndarray]


class RegionData:
  """Regions of a list of images, gathered per batch from the reflect-padded images.

  Only the padded images and an (N, 2) index of (image, region) pairs are stored: the full
  data set as materialised regions would take ~1.7 GB (scorer) or ~5 GB (3-channel labels).
  """

  def __init__(self, examples: Sequence[data_lib.Example], geom: regions_lib.RegionGeometry,
               percentiles: Sequence[float] = data_lib.intensity.MIN_MAX):
    self.geom = geom
    self.images = [regions_lib.reflect_pad(data_lib.normalize(ex.image, percentiles), geom.pad)
                   for ex in examples]
    self.labels = [regions_lib.reflect_pad(np.asarray(ex.labels, np.int32), geom.pad)
                   for ex in examples]
    origins, index, scores = [], [], []
    for k, ex in enumerate(examples):
      o = regions_lib.region_origins(ex.image.shape, geom) + geom.pad
      origins.append(o)
      index.append(np.stack([np.full(len(o), k), np.arange(len(o))], axis=-1))
      scores.append(regions_lib.score_labels(regions_lib.extract_regions(ex.labels, geom), geom))
    self.origins = origins
    self.index = np.concatenate(index).astype(np.int64) if index else np.zeros((0, 2), np.int64)
    self.scores = (np.concatenate(scores).astype(np.float32) if scores
                   else np.zeros((0,), np.float32))

  def __len__(self) -> int:
    return len(self.index)

  def _gather(self, arrays: list[np.ndarray], items: np.ndarray) -> np.ndarray:
    h, w = self.geom.shape
    out = []
    for k, r in self.index[items]:
      y, x = self.origins[k][r]
      out.append(arrays[k][y:y + h, x:x + w])
    return np.stack(out)

  def image_regions(self, items: np.ndarray) -> np.ndarray:
    """(B, h, w) float32 image regions of the given items."""
    return self._gather(self.images, items)

  def instance_regions(self, items: np.ndarray) -> np.ndarray:
    """(B, h, w) int32 instance-label regions of the given items."""
    return self._gather(self.labels, items)


@dataclasses.dataclass
class ScorerData:
  """All regions of the images with their label scores."""

  regions: RegionData

  def __len__(self) -> int:
    return len(self.regions)

  def batch(self, items: np.ndarray, rng: Optional[np.random.Generator],
            rows: slice = slice(None)) -> Batch:
    """Rows `rows` of the batch of `items` (a host loads only its part of a global batch)."""
    del rng  # Regions are fixed; only their order is random.
    items = items[rows]
    return {"regions": self.regions.image_regions(items), "scores": self.regions.scores[items]}


@dataclasses.dataclass
class SegmenterData:
  """The selected regions (a subset of `regions`) with their 3-channel central labels.

  With `flip` and a batch generator, each region (image and instance labels alike) is flipped
  up-down and left-right at random before its central labels are computed, so the labels are
  those of the flipped region (whose centre pixel is its own, not the mirrored one).
  """

  regions: RegionData
  selected: np.ndarray  # (N,) int64 items of `regions` (an item may repeat).
  flip: bool = False

  def __len__(self) -> int:
    return len(self.selected)

  def batch(self, items: np.ndarray, rng: Optional[np.random.Generator],
            rows: slice = slice(None)) -> Batch:
    """Rows `rows` of the batch of `items`."""
    chosen = self.selected[items[rows]]
    images = self.regions.image_regions(chosen)
    instances = self.regions.instance_regions(chosen)
    if self.flip and rng is not None:
      # Drawn for the whole batch, then sliced: a row's flips do not depend on the hosts.
      flips = rng.integers(0, 2, size=(len(items), 2)).astype(bool)[rows]
      images, instances = (flip_regions(a, flips) for a in (images, instances))
    labels = regions_lib.central_labels(instances, self.regions.geom)
    return {"regions": images, "labels": labels}


def flip_regions(regions: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """(B, h, w) regions, each flipped up-down if flips[b, 0] and left-right if flips[b, 1]."""
  out = np.array(regions, copy=True)
  out[flips[:, 0]] = out[flips[:, 0], ::-1]
  out[flips[:, 1]] = out[flips[:, 1], :, ::-1]
  return out


def touching_items(data: "SegmenterData") -> np.ndarray:
  """(N,) bool: whether each selected region's central nucleus touches another nucleus there."""
  geom, out = data.regions.geom, []
  for start in range(0, len(data), 1024):
    instances = data.regions.instance_regions(data.selected[start:start + 1024])
    ids = regions_lib.central_ids(instances, geom)
    central = (instances == ids[:, None, None]) & (ids[:, None, None] > 0)
    near = central.copy()  # The central mask grown by one pixel (4-neighbourhood).
    near[:, 1:] |= central[:, :-1]
    near[:, :-1] |= central[:, 1:]
    near[:, :, 1:] |= central[:, :, :-1]
    near[:, :, :-1] |= central[:, :, 1:]
    out.append(np.any(near & ~central & (instances > 0), axis=(1, 2)))
  return np.concatenate(out) if out else np.zeros(0, bool)


class UNetData:
  """Whole images padded to one shape divisible by 2**depth, or random square crops of them.

  Padding (reflect) carries weight 0 in the loss, so every real pixel counts exactly once.
  """

  def __init__(self, examples: Sequence[data_lib.Example], depth: int, crop_size: int,
               percentiles: Sequence[float] = data_lib.intensity.MIN_MAX):
    multiple = 2**depth
    shapes = np.array([ex.image.shape for ex in examples]).reshape(-1, 2)
    target = np.maximum(shapes.max(axis=0, initial=1), crop_size)
    self.shape = tuple(int(-(-n // multiple) * multiple) for n in target)
    self.crop_size = crop_size
    images, fg, weight = [], [], []
    for ex in examples:
      pads = [(0, t - n) for n, t in zip(ex.image.shape, self.shape)]
      images.append(np.pad(data_lib.normalize(ex.image, percentiles), pads, mode="reflect"))
      fg.append(np.pad(ex.labels > 0, pads, mode="reflect"))
      weight.append(np.pad(np.ones(ex.image.shape, bool), pads))
    self.images = np.stack(images) if images else np.zeros((0,) + self.shape, np.float32)
    self.foreground = np.stack(fg) if fg else np.zeros((0,) + self.shape, bool)
    self.weight = np.stack(weight) if weight else np.zeros((0,) + self.shape, bool)

  def __len__(self) -> int:
    return len(self.images)

  def batch(self, items: np.ndarray, rng: Optional[np.random.Generator],
            rows: slice = slice(None)) -> Batch:
    """(B, H, W, 1) images, foreground and weight of rows `rows` of the batch of `items`.

    Random crops when crop_size > 0 and rng. The crops of the whole batch are drawn, then the
    rows taken, so a row's crop does not depend on how the batch is split between hosts.
    """
    crops = None
    if self.crop_size and rng is not None:
      s = self.crop_size
      ys = rng.integers(0, self.shape[0] - s + 1, size=len(items))[rows]
      xs = rng.integers(0, self.shape[1] - s + 1, size=len(items))[rows]
      crops = ys, xs
    items = items[rows]
    arrays = [self.images[items], self.foreground[items], self.weight[items]]
    if crops is not None:
      ys, xs = crops
      arrays = [np.stack([a[b, y:y + s, x:x + s] for b, (y, x) in enumerate(zip(ys, xs))])
                for a in arrays]
    images, fg, weight = (a[..., None].astype(np.float32) for a in arrays)
    return {"images": images, "foreground": fg, "weight": weight}


def epoch_batches(num_items: int, batch_size: int, seed: int, stage: str, epoch: int,
                  max_items: int = 0) -> np.ndarray:
  """(steps, B) item indices of one epoch: a permutation from (seed, stage, epoch).

  B = min(batch_size, num_items) so every batch has the same shape (one compilation); the last
  batch is filled up from the start of the permutation. `max_items > 0` keeps only that many
  items of the permutation (a fresh random subset every epoch).
  """
  if num_items == 0:
    raise ValueError(f"{stage}: no training items")
  stage_id = stages.get(stage).stage_id
  order = np.random.default_rng([seed, stage_id, epoch]).permutation(num_items)
  if max_items > 0:
    order = order[:max_items]
  b = min(batch_size, len(order))
  steps = -(-len(order) // b)
  return np.resize(order, steps * b).reshape(steps, b)


def batch_rng(seed: int, stage: str, epoch: int, index: int) -> np.random.Generator:
  """The generator for the random parts (crops) of one batch."""
  return np.random.default_rng([seed, stages.get(stage).stage_id, epoch, index, 1])


# --- each stage's training and validation sets ---------------------------------------------------


@dataclasses.dataclass
class StageData:
  """A stage's training and validation sets, and how many items of each an epoch uses."""

  train: Any  # ScorerData | SegmenterData | UNetData
  val: Any
  max_train_items: int = 0  # > 0: a fresh random subset of this many items every epoch.
  max_eval_items: int = 0  # > 0: validation on a fixed random subset of this many items.


def _region_data(config: ml_collections.ConfigDict,
                 examples: Sequence[data_lib.Example]) -> RegionData:
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  return RegionData(examples, geom, tuple(config.data.normalize_percentiles))


def scorer_data(config: ml_collections.ConfigDict, train_examples: Sequence[data_lib.Example],
                val_examples: Sequence[data_lib.Example],
                scorer_params: Optional[Callable[[], Any]] = None) -> StageData:
  """Every region of the images, with its label score."""
  del scorer_params  # The scorer trains on label scores.
  return StageData(train=ScorerData(_region_data(config, train_examples)),
                   val=ScorerData(_region_data(config, val_examples)),
                   max_eval_items=config.train.max_eval_regions)


def _selected_by_scorer(examples: Sequence[data_lib.Example], scorer_params: Any,
                        config: ml_collections.ConfigDict) -> np.ndarray:
  """Items (image-major, as in RegionData) whose *predicted* score passes the threshold."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  percentiles = config.data.normalize_percentiles
  scores = [scorer_lib.score_image(scorer_params, data_lib.normalize(ex.image, percentiles), geom,
                                   config.predict.shape_bucket).ravel() for ex in examples]
  scores = np.concatenate(scores) if scores else np.zeros((0,), np.float32)
  return scorer_lib.select_regions(scores, config.scorer.threshold)


def _segmenter_train_selection(config: ml_collections.ConfigDict, regions: RegionData,
                               examples: Sequence[data_lib.Example],
                               scorer_params: Optional[Callable[[], Any]]) -> np.ndarray:
  """The training regions: those whose label (or trained scorer's) score passes the threshold."""
  if config.segmenter.train_regions == "label":
    selected = scorer_lib.select_regions(regions.scores, config.scorer.threshold)
  elif config.segmenter.train_regions == "scorer":
    if scorer_params is None:
      raise ValueError('segmenter.train_regions == "scorer" needs a trained scorer')
    selected = _selected_by_scorer(examples, scorer_params(), config)
  else:
    raise ValueError(f"unknown segmenter.train_regions {config.segmenter.train_regions!r}; "
                     'expected "label" or "scorer"')
  if len(selected) == 0:
    raise ValueError(f"segmenter: no training region's {config.segmenter.train_regions} score "
                     f"passes scorer.threshold = {config.scorer.threshold}")
  return selected


def segmenter_data(config: ml_collections.ConfigDict, train_examples: Sequence[data_lib.Example],
                   val_examples: Sequence[data_lib.Example],
                   scorer_params: Optional[Callable[[], Any]] = None) -> StageData:
  """The selected regions with their central labels; flips and touching-nucleus repeats."""
  train_regions = _region_data(config, train_examples)
  val_regions = _region_data(config, val_examples)
  train_sel = _segmenter_train_selection(config, train_regions, train_examples, scorer_params)
  train = SegmenterData(train_regions, train_sel, flip=bool(config.segmenter.flip))
  repeat = int(config.segmenter.touching_repeat)
  if repeat > 1:
    touching = train_sel[touching_items(train)]
    logging.info("segmenter: %d of %d training regions have a touching central nucleus; "
                 "each appears %d times", len(touching), len(train_sel), repeat)
    train.selected = np.concatenate([train_sel] + [touching] * (repeat - 1))
  # Validation always uses label scores (and no flips, no repeats): its loss then measures
  # the segmenter alone.
  val_sel = scorer_lib.select_regions(val_regions.scores, config.scorer.threshold)
  return StageData(train=train, val=SegmenterData(val_regions, val_sel),
                   max_train_items=config.segmenter.max_train_regions,
                   max_eval_items=config.train.max_eval_regions)


def unet_data(config: ml_collections.ConfigDict, train_examples: Sequence[data_lib.Example],
              val_examples: Sequence[data_lib.Example],
              scorer_params: Optional[Callable[[], Any]] = None) -> StageData:
  """Whole images (random crops of them when `unet.crop_size`) with their foreground."""
  del scorer_params
  percentiles = tuple(config.data.normalize_percentiles)
  return StageData(
      train=UNetData(train_examples, config.unet.depth, config.unet.crop_size, percentiles),
      # Validation on whole images: the loss the predictions are made with.
      val=UNetData(val_examples, config.unet.depth, 0, percentiles))


# Each stage's data, by stage name (`stages.STAGES`). `scorer_params` gives a trained scorer's
# parameters (only read by the segmenter with `segmenter.train_regions == "scorer"`).
STAGE_DATA: dict[str, Callable[..., StageData]] = {
    "scorer": scorer_data, "segmenter": segmenter_data, "unet": unet_data}
