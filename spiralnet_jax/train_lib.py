"""Training: the train state, pure train/eval steps, per-stage data, the loop, checkpoints, logs.

Three stages train one after another (`config.stages`): "scorer" (MSE on region score labels),
"segmenter" (`Segmenter.loss` on the regions whose score passes the threshold, against their
3-channel central labels) and "unet" (BCE on the foreground of whole images or random crops).
Each stage keeps its own Orbax checkpoints under `<workdir>/checkpoints/<stage>/` and resumes
from the newest one that restores and matches its checksums. Batches are a pure function of
(seed, stage, epoch, batch index), so a run stopped after any step -- cleanly or by SIGKILL --
and restarted ends with exactly the parameters of an uninterrupted run. SIGTERM (a scheduler's
or `timeout`'s polite kill) stops a single-process run after the current step with a checkpoint
of that step, so no work is lost. Training is data-parallel
over a `jax.sharding.Mesh` of all devices (one "data" axis): batches are split along it,
parameters and optimizer state are replicated; the same code runs on one device, several local
devices and several hosts (after `jax.distributed.initialize()`).
"""

from __future__ import annotations

import dataclasses
import json
import logging as py_logging
import math
import os
import pathlib
import signal
import threading
import time
import zlib
from typing import Any, Callable, Optional, Sequence, Union

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorboardX
import tqdm

from spiralnet_jax import data as data_lib
from spiralnet_jax import defaults
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import unet as unet_lib

PathLike = Union[str, pathlib.Path]
Batch = dict[str, np.ndarray]
LossFn = Callable[[Any, Batch], jax.Array]

# Fixed stage ids: they seed each stage's parameters and data order independently of which
# stages a run trains.
STAGE_IDS = {"scorer": 0, "segmenter": 1, "unet": 2}


class TrainState(flax.struct.PyTreeNode):
  """What a checkpoint holds: the update counter, the parameters and the optimizer state."""

  step: jax.Array  # int32 scalar: number of updates applied.
  params: Any
  opt_state: optax.OptState


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A fresh state at step 0."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


# --- losses and steps (pure) ---------------------------------------------------------------------


def scorer_loss(model: Any, params: Any, batch: Batch) -> jax.Array:
  """Mean squared error between predicted and label scores of a batch of regions."""
  pred = model.apply({"params": params}, batch["regions"])
  return jnp.mean(jnp.square(pred - batch["scores"]))


def segmenter_loss(segmenter: Any, params: Any, batch: Batch) -> jax.Array:
  """The segmenter's own loss (`config.segmenter.loss`) on regions and 3-channel labels."""
  return segmenter.loss(params, batch["regions"], batch["labels"])


def unet_loss(model: Any, params: Any, batch: Batch) -> jax.Array:
  """Binary cross-entropy on the foreground, averaged over real (non-padding) pixels."""
  logits = model.apply({"params": params}, batch["images"])
  bce = optax.sigmoid_binary_cross_entropy(logits, batch["foreground"])
  weight = batch["weight"]
  return jnp.sum(bce * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def train_step(state: TrainState, batch: Batch, *, loss_fn: LossFn,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on `loss_fn(params, batch)`; returns the new state, loss, grad norm."""
  loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
  # The norm of the raw gradient (before any clipping): the loop stops on a non-finite one.
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {"loss": loss, "grad_norm": grad_norm}


def eval_step(params: Any, batch: Batch, *, loss_fn: LossFn) -> jax.Array:
  """The loss of one batch, no update."""
  return loss_fn(params, batch)


# --- data ----------------------------------------------------------------------------------------


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
  order = np.random.default_rng([seed, STAGE_IDS[stage], epoch]).permutation(num_items)
  if max_items > 0:
    order = order[:max_items]
  b = min(batch_size, len(order))
  steps = -(-len(order) // b)
  return np.resize(order, steps * b).reshape(steps, b)


def batch_rng(seed: int, stage: str, epoch: int, index: int) -> np.random.Generator:
  """The generator for the random parts (crops) of one batch."""
  return np.random.default_rng([seed, STAGE_IDS[stage], epoch, index, 1])


# --- stages --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
  """Everything the loop needs to train one stage."""

  name: str
  loss_fn: LossFn  # (params, batch) -> scalar.
  init_params: Callable[[jax.Array], Any]  # rng -> params.
  learning_rate: float
  epochs: int
  batch_size: int
  unit: str  # What one batch item is, for the rate: "regions" or "images".
  lr_schedule: str  # "constant" or "cosine" (see `learning_rate_fn`).
  warmup_epochs: float
  train: Any  # ScorerData | SegmenterData | UNetData
  val: Any
  max_train_items: int = 0
  max_eval_items: int = 0


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_fn(learning_rate: float, lr_schedule: str, total_steps: int,
                     warmup_steps: int) -> optax.ScalarOrSchedule:
  """The stage's rate: a constant, or a linear warm-up then cosine decay to 0 at total_steps."""
  if lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
  if lr_schedule == "constant":
    return learning_rate
  warmup_steps = min(max(0, warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                            max(total_steps, warmup_steps + 1))


def make_optimizer(learning_rate: optax.ScalarOrSchedule,
                   grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """Adam, as in the thesis for every stage; gradients clipped to a global norm if > 0."""
  if grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), optax.adam(learning_rate))
  # Off: plain Adam, the state layout of checkpoints written before clipping existed.
  return optax.adam(learning_rate)


def _grad_clip_norm(config: ml_collections.ConfigDict) -> float:
  return float(config.train.grad_clip_norm)


def _stage_lr(stage: str, config: ml_collections.ConfigDict, total_steps: int = 1,
              steps_per_epoch: int = 1) -> optax.ScalarOrSchedule:
  """A stage's learning rate (schedule) from its config section; the optimizer state layout
  does not depend on the step counts, so a restore target may leave them at 1."""
  section = config[stage]
  return learning_rate_fn(section.learning_rate, section.lr_schedule, total_steps,
                          round(float(section.warmup_epochs) * steps_per_epoch))


def _scorer_model(config: ml_collections.ConfigDict) -> Any:
  return scorer_lib.Scorer(hidden=config.scorer.hidden)


def _segmenter(config: ml_collections.ConfigDict) -> Any:
  return segmenter_lib.Segmenter.from_config(config)


def _unet_model(config: ml_collections.ConfigDict) -> Any:
  return unet_lib.UNet(base_features=config.unet.base_features, depth=config.unet.depth)


def init_params(stage: str, config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
  """Fresh parameters of one stage's model."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  if stage == "scorer":
    return _scorer_model(config).init(rng, jnp.zeros((1,) + geom.shape))["params"]
  if stage == "segmenter":
    return _segmenter(config).init(rng)
  if stage == "unet":
    side = 2**config.unet.depth
    return _unet_model(config).init(rng, jnp.zeros((1, side, side, 1)))["params"]
  raise ValueError(f"unknown stage {stage!r}; expected one of {tuple(STAGE_IDS)}")


def stage_rng(stage: str, config: ml_collections.ConfigDict) -> jax.Array:
  """The initialisation key of a stage: the seed folded with the stage id."""
  # "rbg" keys: XLA:CPU compiles a threefry initialiser per layer slowly (a depth-2 U-Net's
  # init took 14 s to compile with threefry, 2.5 s with rbg); the numbers stay deterministic.
  return jax.random.fold_in(jax.random.key(config.seed, impl="rbg"), STAGE_IDS[stage])


def abstract_state(stage: str, config: ml_collections.ConfigDict) -> TrainState:
  """Shapes and dtypes of a stage's TrainState (the restore target), computed without FLOPs."""
  tx = make_optimizer(_stage_lr(stage, config), _grad_clip_norm(config))
  return jax.eval_shape(
      lambda: create_train_state(init_params(stage, config, stage_rng(stage, config)), tx))


def _selected_by_scorer(examples: Sequence[data_lib.Example], scorer_params: Any,
                        config: ml_collections.ConfigDict) -> np.ndarray:
  """Items (image-major, as in RegionData) whose *predicted* score passes the threshold."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  percentiles = config.data.normalize_percentiles
  scores = [scorer_lib.score_image(scorer_params, data_lib.normalize(ex.image, percentiles), geom,
                                   config.predict.shape_bucket).ravel() for ex in examples]
  scores = np.concatenate(scores) if scores else np.zeros((0,), np.float32)
  return scorer_lib.select_regions(scores, config.scorer.threshold)


def build_stage(stage: str, config: ml_collections.ConfigDict,
                train_examples: Sequence[data_lib.Example],
                val_examples: Sequence[data_lib.Example],
                scorer_params: Optional[Callable[[], Any]] = None) -> Stage:
  """The loss, initialiser and data of one stage."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  max_eval = config.train.max_eval_regions
  percentiles = tuple(config.data.normalize_percentiles)
  if stage not in STAGE_IDS:
    raise ValueError(f"unknown stage {stage!r}; expected one of {tuple(STAGE_IDS)}")
  # Every stage's config section holds its own optimiser schedule.
  section = config[stage]
  schedule = dict(name=stage, learning_rate=section.learning_rate, epochs=section.epochs,
                  batch_size=section.batch_size, lr_schedule=section.lr_schedule,
                  warmup_epochs=float(section.warmup_epochs))
  if stage == "scorer":
    model = _scorer_model(config)
    return Stage(
        **schedule, loss_fn=lambda p, b: scorer_loss(model, p, b),
        init_params=lambda rng: init_params(stage, config, rng), unit="regions",
        train=ScorerData(RegionData(train_examples, geom, percentiles)),
        val=ScorerData(RegionData(val_examples, geom, percentiles)), max_eval_items=max_eval)
  if stage == "segmenter":
    segmenter = _segmenter(config)
    train_regions = RegionData(train_examples, geom, percentiles)
    val_regions = RegionData(val_examples, geom, percentiles)
    if config.segmenter.train_regions == "label":
      train_sel = scorer_lib.select_regions(train_regions.scores, config.scorer.threshold)
    elif config.segmenter.train_regions == "scorer":
      if scorer_params is None:
        raise ValueError('segmenter.train_regions == "scorer" needs a trained scorer')
      train_sel = _selected_by_scorer(train_examples, scorer_params(), config)
    else:
      raise ValueError(f"unknown segmenter.train_regions {config.segmenter.train_regions!r}; "
                       'expected "label" or "scorer"')
    if len(train_sel) == 0:
      raise ValueError(f"segmenter: no training region's {config.segmenter.train_regions} score "
                       f"passes scorer.threshold = {config.scorer.threshold}")
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
    return Stage(
        **schedule, loss_fn=lambda p, b: segmenter_loss(segmenter, p, b),
        init_params=segmenter.init, unit="regions",
        train=train, val=SegmenterData(val_regions, val_sel),
        max_train_items=config.segmenter.max_train_regions, max_eval_items=max_eval)
  model = _unet_model(config)
  return Stage(
      **schedule, loss_fn=lambda p, b: unet_loss(model, p, b),
      init_params=lambda rng: init_params(stage, config, rng), unit="images",
      train=UNetData(train_examples, config.unet.depth, config.unet.crop_size, percentiles),
      # Validation on whole images: the loss the predictions are made with.
      val=UNetData(val_examples, config.unet.depth, 0, percentiles))


# --- errors --------------------------------------------------------------------------------------


class TrainingError(Exception):
  """A failure that train.py reports as one line, without a traceback."""


class NonFiniteError(TrainingError, FloatingPointError):
  """A non-finite loss or gradient norm; the state of that step was not saved."""


class CheckpointError(TrainingError):
  """Checkpoints of a stage exist but none of them restores."""


class ConfigMismatchError(TrainingError, ValueError):
  """The workdir was written by a config that differs where resuming would not be exact."""


class BatchSizeError(TrainingError, ValueError):
  """A global batch that does not split evenly over the devices of the data mesh."""


class Stopped(Exception):
  """Training stopped on a signal after saving the current step; rerunning resumes it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class StopRequest:
  """Context that turns SIGTERM into a request the training loop honours after its step.

  Only in a single process's main thread: several hosts would have to agree on the step to stop
  at, so there SIGTERM keeps its default (the run resumes from its last checkpoint).
  """

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = None

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.signum = signum

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# --- checkpoints ---------------------------------------------------------------------------------

# The `custom_metadata` key under which every checkpoint stores its per-leaf checksums.
_CHECKSUMS = "crc32"


def checkpoint_dir(workdir: PathLike, stage: str) -> pathlib.Path:
  """`<workdir>/checkpoints/<stage>` (absolute, as Orbax requires)."""
  return pathlib.Path(workdir).resolve() / "checkpoints" / stage


def checkpoint_steps(workdir: PathLike, stage: str) -> list[int]:
  """The finished checkpoint steps of `stage` in `workdir`, ascending (unfinished saves are
  `<step>.orbax-checkpoint-tmp-*` and do not count)."""
  path = checkpoint_dir(workdir, stage)
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def _checkpoint_manager(workdir: PathLike, stage: str, config: ml_collections.ConfigDict,
                        read_only: bool = False) -> ocp.CheckpointManager:
  # Saves are asynchronous; each is written to `<step>.orbax-checkpoint-tmp-*` and renamed to
  # `<step>` when complete (atomic on a local file system), and older steps beyond max_to_keep
  # are deleted only after that rename. A kill at any moment leaves complete steps only; tmp
  # directories are never listed as steps.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir, stage),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep,
                                           create=True, read_only=read_only))


def _local_value(x: Any) -> np.ndarray:
  """This process's copy of a replicated array (on one host: the array)."""
  return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def state_checksums(state: Any) -> dict[str, int]:
  """CRC-32 of every leaf's bytes, keyed by its tree path."""
  # Orbax's OCDBT format checksums its index but not the array chunks: with orbax 0.12.8 a
  # flipped byte in a parameter file restores without error, so each save stores these.
  leaves, _ = jax.tree_util.tree_flatten_with_path(state)
  return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(_local_value(leaf)).data)
          for path, leaf in leaves}


def _restore_verified(mngr: ocp.CheckpointManager, step: int, abstract: Any) -> Any:
  """Restores one step and checks it against the checksums saved with it."""
  state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  expected = (mngr.metadata(step).custom_metadata or {}).get(_CHECKSUMS)
  if expected is not None:  # Checkpoints not written by train_stage carry none.
    got = state_checksums(state)
    bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
    if bad:
      more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
      raise ValueError(f"checksum mismatch in {bad[0]}{more}")
  return state


def restore_newest(mngr: ocp.CheckpointManager, abstract: Any,
                   stage: str) -> tuple[Optional[Any], list[int]]:
  """The newest checkpoint that restores and verifies (None if none does), and the newer steps
  that failed; each failure is logged as one line naming the stage, the step and the reason."""
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      state = _restore_verified(mngr, step, abstract)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever a damaged checkpoint raises (JSON, tensorstore, checksum errors), the answer is
      # the same: report it and try the previous step.
      reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
      logging.warning("%s: checkpoint step %d cannot be restored (%s)", stage, step, reason)
      failed.append(step)
      continue
    if failed:
      logging.warning("%s: fell back to checkpoint step %d (newer unrestorable: %s)", stage,
                      step, ", ".join(map(str, failed)))
    return state, failed
  return None, failed


def _set_aside(directory: pathlib.Path, steps: Sequence[int], stage: str) -> None:
  """Moves unrestorable step directories to `<stage>.corrupt/` beside `directory`."""
  # Out of Orbax's way (saving that step again would collide with it), but kept for inspection.
  if jax.process_index() == 0:
    for step in steps:
      target = directory.parent / f"{directory.name}.corrupt" / str(step)
      n = 1
      while target.exists():
        target, n = target.with_name(f"{step}-{n}"), n + 1
      target.parent.mkdir(parents=True, exist_ok=True)
      (directory / str(step)).rename(target)
      logging.warning("%s: moved unrestorable checkpoint step %d to %s", stage, step, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"spiralnet_set_aside_{stage}")


def load_config(workdir: PathLike) -> ml_collections.ConfigDict:
  """The config training wrote to `<workdir>/config.json`, upgraded over today's defaults."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"no config.json in {workdir}; pass the config explicitly")
  return defaults.upgrade_config(json.loads(path.read_text()))


def load_params(workdir: PathLike, stage: str, config: ml_collections.ConfigDict) -> Any:
  """The parameters of a stage's newest restorable checkpoint; FileNotFoundError if none exists.

  An unrestorable newer checkpoint is logged and skipped; CheckpointError if none restores.
  """
  # Onto one local device, whatever devices saved it (without a target sharding Orbax refuses
  # a checkpoint written by a different device count).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract_state(stage, config))
  with _checkpoint_manager(workdir, stage, config) as mngr:
    state, failed = restore_newest(mngr, abstract, stage)
  if state is None:
    where = checkpoint_dir(workdir, stage)
    if failed:
      raise CheckpointError(f"{stage}: no checkpoint under {where} restores (unrestorable "
                            f"steps: {', '.join(map(str, failed))})")
    raise FileNotFoundError(f"no {stage} checkpoint under {where}")
  return state.params


# --- resuming under a changed config -------------------------------------------------------------

# Fields (dotted paths, or prefixes of them) that may differ between the config that wrote a
# workdir and the one that resumes it: with any of them changed the resumed run still equals an
# uninterrupted run under the new config. Logging, checkpoint and validation cadence, where to
# stop, which stages to train, settings used only after training, where the same data lives, and
# epoch counts (batch order depends on (seed, stage, epoch) only, so under a constant learning
# rate more epochs extend the same run; `config_changes` refuses them under a decaying one).
RESUMABLE_FIELDS = (
    "stages", "data.data_dir", "data.tfds_data_dir", "data.eval_splits",
    "scorer.epochs", "segmenter.epochs", "unet.epochs",
    "train.log_every_steps", "train.checkpoint_every_epochs", "train.checkpoint_every_steps",
    "train.max_to_keep", "train.eval_every_epochs", "train.max_steps", "train.max_eval_regions",
    "train.allow_config_change", "train.allow_fresh_start",
    "continuation", "assembly", "predict", "unet.threshold",
    "eval",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_changes(old: dict, new: dict) -> list[str]:
  """`field: old -> new` for each field of two JSON configs that differs, less RESUMABLE_FIELDS.

  A stage whose learning rate decays over its epochs (lr_schedule other than "constant" in
  either config) cannot change its epochs: the rate at every step would differ.
  """
  old, new = _flatten(old), _flatten(new)
  decaying = {k.split(".")[0] for d in (old, new) for k, v in d.items()
              if k.endswith(".lr_schedule") and v != "constant"}
  fields = tuple(f for f in RESUMABLE_FIELDS if f.split(".")[0] not in decaying
                 or not f.endswith(".epochs"))
  resumable = lambda k: any(k == f or k.startswith(f + ".") for f in fields)
  missing = "(absent)"
  return [f"{k}: {old.get(k, missing)} -> {new.get(k, missing)}"
          for k in sorted(set(old) | set(new))
          if not resumable(k) and old.get(k, missing) != new.get(k, missing)]


def _check_and_write_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Refuses a workdir whose config.json differs from `config` (see RESUMABLE_FIELDS) unless
  train.allow_config_change, then writes `config` there (atomically)."""
  new = json.loads(config.to_json_best_effort())
  path = workdir / "config.json"
  if path.is_file():
    try:
      changes = config_changes(json.loads(path.read_text()), new)
    except json.JSONDecodeError as e:
      changes = [f"config.json unreadable ({e})"]
    if changes:
      listed = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8
                                         else "")
      if not config.train.allow_config_change:
        raise ConfigMismatchError(
            f"{workdir} was written by a different config ({listed}); resuming would match no "
            "uninterrupted run. Use a new --workdir, or pass "
            "--config.train.allow_config_change=True to resume anyway")
      logging.warning("%s: resuming under a changed config (%s)", workdir, listed)
  if jax.process_index() == 0:
    tmp = path.with_name(f".config.json.tmp-{os.getpid()}")
    tmp.write_text(config.to_json_best_effort(indent=2) + "\n")
    os.replace(tmp, path)  # A kill mid-write leaves the old config.json whole.


# --- devices -------------------------------------------------------------------------------------


def data_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh, axis "data", over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def host_rows(sharding: NamedSharding, num_rows: int) -> slice:
  """The rows of a global batch of `num_rows` that this process's devices hold."""
  ranges = {s[0].indices(num_rows)[:2]
            for s in sharding.addressable_devices_indices_map((num_rows,)).values()}
  start, stop = min(r[0] for r in ranges), max(r[1] for r in ranges)
  if sum(b - a for a, b in ranges) != stop - start:
    raise ValueError(f"this process's rows of the batch are not contiguous: {sorted(ranges)}")
  return slice(start, stop)


def shard_batch(data: Any, items: np.ndarray, rng: Optional[np.random.Generator],
                sharding: NamedSharding) -> dict[str, jax.Array]:
  """The global batch of `items` as arrays laid out by `sharding`; this process loads its rows."""
  local = data.batch(items, rng, host_rows(sharding, len(items)))
  return {k: jax.make_array_from_process_local_data(sharding, v, (len(items),) + v.shape[1:])
          for k, v in local.items()}


def _host_floats(*values: jax.Array) -> list[float]:
  """Replicated scalars as Python floats (one transfer)."""
  return [float(v) for v in jax.device_get([x.addressable_data(0) for x in values])]


# --- the loop ------------------------------------------------------------------------------------


def _drop_orbax_info(record: py_logging.LogRecord) -> bool:
  return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logging() -> None:
  """Drops Orbax's INFO records (~30 lines per checkpoint save) so progress lines stay visible."""
  logging.get_absl_handler().addFilter(_drop_orbax_info)


class MetricsLog:
  """Scalars to TensorBoard event files and to `<workdir>/metrics.jsonl` (one JSON per line).

  Only process 0 writes. A resumed stage first `rewind`s the JSON log to its checkpoint, so
  steps replayed after a crash appear once (TensorBoard keeps both; its event files cannot be
  cut per stage).
  """

  def __init__(self, workdir: pathlib.Path):
    self._enabled = jax.process_index() == 0
    if not self._enabled:
      return
    path = self._path = workdir / "metrics.jsonl"
    if path.is_file():
      # A kill mid-write can leave a partial last line: cut it so the next record stays whole.
      text = path.read_bytes()
      if text and not text.endswith(b"\n"):
        os.truncate(path, text.rfind(b"\n") + 1)
    self._writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
    self._jsonl = open(path, "a", encoding="utf-8")

  def write(self, stage: str, step: int, **scalars: float) -> None:
    if not self._enabled:
      return
    for key, value in scalars.items():
      if key != "epoch":
        self._writer.add_scalar(f"{stage}/{key}", value, step)
    self._jsonl.write(json.dumps({"stage": stage, "step": step, **scalars}) + "\n")
    self._jsonl.flush()

  def rewind(self, stage: str, step: int, final_validation: bool) -> None:
    """Drops `stage`'s records after `step` (they will be replayed) from the JSON log.

    With `final_validation`, also its validation record at `step`: the stage is complete at
    `step` and ends with a validation that runs again (after the save, so it may be missing).
    """
    if not self._enabled:
      return

    def replayed(record: dict) -> bool:
      if record.get("stage") != stage:
        return False
      return record["step"] > step or (final_validation and record["step"] == step
                                       and "val_loss" in record)

    lines = self._path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not replayed(json.loads(line))]
    if len(kept) == len(lines):
      return
    self._jsonl.close()
    temp = self._path.with_name(self._path.name + ".tmp")
    temp.write_text("".join(kept), encoding="utf-8")
    os.replace(temp, self._path)  # Atomic: a kill leaves the old log or the new one.
    self._jsonl = open(self._path, "a", encoding="utf-8")

  def close(self) -> None:
    if self._enabled:
      self._writer.close()
      self._jsonl.close()


def evaluate(stage: Stage, params: Any, eval_fn: Callable[[Any, Batch], jax.Array],
             seed: int, mesh: Optional[Mesh] = None) -> float:
  """Mean loss over the validation items (a fixed random subset if max_eval_items > 0).

  Items go in batches of the training batch size, the remainder in one smaller batch, and the
  batch means are weighted by batch length, so this is the exact mean over items. A batch that
  does not split over the devices is replicated instead.
  """
  mesh = data_mesh() if mesh is None else mesh
  n = len(stage.val)
  if n == 0:
    return float("nan")
  items = np.arange(n)
  if 0 < stage.max_eval_items < n:
    rng = np.random.default_rng([seed, STAGE_IDS[stage.name], 2**31 - 1])
    items = np.sort(rng.choice(n, stage.max_eval_items, replace=False))
  total = 0.0
  for i in range(0, len(items), stage.batch_size):
    chunk = items[i:i + stage.batch_size]
    spec = PartitionSpec("data") if len(chunk) % mesh.size == 0 else PartitionSpec()
    batch = shard_batch(stage.val, chunk, None, NamedSharding(mesh, spec))
    total += _host_floats(eval_fn(params, batch))[0] * len(chunk)
  return total / len(items)


def _non_finite_message(stage: str, step: int, loss: float, grad_norm: float,
                        last_saved: Optional[int], where: pathlib.Path) -> str:
  what = "loss" if not math.isfinite(loss) else "gradient norm"
  kept = (f"last good checkpoint: step {last_saved} in {where}" if last_saved is not None
          else "no checkpoint was saved before it")
  return (f"{stage}: non-finite {what} at step {step} (loss {loss:.6g}, gradient norm "
          f"{grad_norm:.6g}); stopped without saving this step, {kept}")


def train_stage(stage: Stage, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                log: MetricsLog, mesh: Optional[Mesh] = None,
                stop: Optional[StopRequest] = None) -> tuple[TrainState, dict[str, float]]:
  """Trains (or resumes) one stage to its last step; returns the state and final metrics.

  Data-parallel over `mesh` (default: all devices): each global batch is split along "data",
  the state is replicated. Once `stop` has caught a signal, saves the current step and raises
  `Stopped` before the next.
  """
  mesh = data_mesh() if mesh is None else mesh
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  steps_per_epoch, global_batch = epoch_batches(len(stage.train), stage.batch_size, config.seed,
                                                stage.name, 0, stage.max_train_items).shape
  if global_batch % mesh.size:
    raise BatchSizeError(
        f"{stage.name}: a global batch of {global_batch} items does not split over "
        f"{mesh.size} devices; make {stage.name}.batch_size a multiple of {mesh.size}")
  total_steps = stage.epochs * steps_per_epoch
  lr = learning_rate_fn(stage.learning_rate, stage.lr_schedule, total_steps,
                        round(stage.warmup_epochs * steps_per_epoch))
  lr_at = lr if callable(lr) else lambda _: lr
  tx = make_optimizer(lr, _grad_clip_norm(config))
  init_fn = lambda: create_train_state(stage.init_params(stage_rng(stage.name, config)), tx)
  step_fn = jax.jit(lambda s, b: train_step(s, b, loss_fn=stage.loss_fn, tx=tx),
                    in_shardings=(replicated, batch_sharding), out_shardings=replicated)
  eval_fn = jax.jit(lambda p, b: eval_step(p, b, loss_fn=stage.loss_fn),
                    out_shardings=replicated)
  end_step = min(total_steps, config.train.max_steps) if config.train.max_steps > 0 else total_steps
  every_steps = config.train.checkpoint_every_steps
  where = checkpoint_dir(workdir, stage.name)

  metrics: dict[str, float] = {}
  with _checkpoint_manager(workdir, stage.name, config) as mngr:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(init_fn))
    state, failed = restore_newest(mngr, abstract, stage.name)
    if state is None and failed and not config.train.allow_fresh_start:
      raise CheckpointError(
          f"{stage.name}: no checkpoint under {where} restores (unrestorable steps: "
          f"{', '.join(map(str, failed))}); pass --config.train.allow_fresh_start=True to "
          "train this stage from scratch")
    if failed:
      _set_aside(where, failed, stage.name)
      mngr.reload()
    if state is None:
      if failed:
        logging.warning("%s: no checkpoint restores; training from scratch", stage.name)
      # Under jit: eager Flax init compiles every layer's ops one by one (~15 s for a U-Net).
      state = jax.jit(init_fn, out_shardings=replicated)()
    else:
      logging.info("%s: resumed from step %d", stage.name, int(_local_value(state.step)))
    step = int(_local_value(state.step))
    log.rewind(stage.name, step, final_validation=step == end_step)
    logging.info("%s: %d items, %d steps/epoch, global batch %d over %d devices, steps %d -> %d "
                 "of %d", stage.name, len(stage.train), steps_per_epoch, global_batch, mesh.size,
                 step, end_step, total_steps)

    def save() -> None:
      if mngr.latest_step() != step:
        mngr.save(step, args=ocp.args.StandardSave(state),
                  custom_metadata={_CHECKSUMS: state_checksums(state)})

    def validate() -> None:
      metrics["val_loss"] = evaluate(stage, state.params, eval_fn, config.seed, mesh)
      log.write(stage.name, step, epoch=step / steps_per_epoch, val_loss=metrics["val_loss"])

    primary = jax.process_index() == 0
    bar = tqdm.tqdm(total=end_step, initial=step, desc=stage.name, unit="step",
                    disable=None if primary else True)
    window: dict[str, list[float]] = {"loss": [], "grad_norm": []}
    window_items, window_start = 0, time.perf_counter()
    start_step, start_time = step, window_start
    while step < end_step:
      epoch, first = divmod(step, steps_per_epoch)
      plan = epoch_batches(len(stage.train), stage.batch_size, config.seed, stage.name, epoch,
                           stage.max_train_items)
      for index in range(first, min(steps_per_epoch, first + end_step - step)):
        if stop is not None and stop.signum is not None:
          save()
          mngr.wait_until_finished()
          bar.close()
          raise Stopped(f"{stage.name}: stopped by signal {stop.signum} at step {step} of "
                        f"{end_step}; saved in {where}; run the same command to resume",
                        stop.signum)
        batch = shard_batch(stage.train, plan[index],
                            batch_rng(config.seed, stage.name, epoch, index), batch_sharding)
        new_state, out = step_fn(state, batch)
        loss, grad_norm = _host_floats(out["loss"], out["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
          mngr.wait_until_finished()  # So that the message names a complete checkpoint.
          raise NonFiniteError(_non_finite_message(stage.name, step + 1, loss, grad_norm,
                                                   mngr.latest_step(), where))
        state, step = new_state, step + 1
        window["loss"].append(loss)
        window["grad_norm"].append(grad_norm)
        window_items += len(plan[index])
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}")
        if step % config.train.log_every_steps == 0 or step == end_step:
          now = time.perf_counter()
          rate = window_items / max(now - window_start, 1e-9)
          eta = (end_step - step) * (now - start_time) / (step - start_step)
          metrics["train_loss"] = float(np.mean(window["loss"]))
          log.write(stage.name, step, epoch=step / steps_per_epoch,
                    loss=metrics["train_loss"], grad_norm=float(np.mean(window["grad_norm"])),
                    lr=float(lr_at(step - 1)), **{f"{stage.unit}_per_s": rate})
          logging.info("%s step %d/%d epoch %.2f loss %.5g %.1f %s/s ETA %.0f s", stage.name,
                       step, end_step, step / steps_per_epoch, metrics["train_loss"], rate,
                       stage.unit, eta)
          window = {"loss": [], "grad_norm": []}
          window_items, window_start = 0, now
        if every_steps > 0 and step % every_steps == 0 and step < end_step:
          save()
      epochs_done = step // steps_per_epoch
      if step % steps_per_epoch == 0 and step < end_step:
        if epochs_done % config.train.eval_every_epochs == 0:
          validate()
        if epochs_done % config.train.checkpoint_every_epochs == 0:
          save()
    bar.close()
    save()
    validate()
    mngr.wait_until_finished()
  metrics.update(step=step, epoch=step / steps_per_epoch)
  return state, metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: PathLike) -> dict:
  """Trains `config.stages` in order in `workdir`; returns the final metrics per stage.

  Refuses (ConfigMismatchError) a workdir written by a config that differs outside
  RESUMABLE_FIELDS unless `config.train.allow_config_change`.
  """
  workdir = pathlib.Path(workdir)
  for stage in config.stages:
    if stage not in STAGE_IDS:
      raise ValueError(f"unknown stage {stage!r} in config.stages; expected {tuple(STAGE_IDS)}")
  workdir.mkdir(parents=True, exist_ok=True)
  _check_and_write_config(config, workdir)
  mesh = data_mesh()
  logging.info("data-parallel over %d devices (%s) in %d processes", mesh.size,
               jax.devices()[0].platform, jax.process_count())

  train_examples = data_lib.load_examples(config.data, config.data.train_split)
  val_examples = data_lib.load_examples(config.data, "validation")
  logging.info("data: %d training, %d validation images (%s)", len(train_examples),
               len(val_examples), config.data.source)

  states: dict[str, TrainState] = {}

  def scorer_params() -> Any:
    if "scorer" in states:
      # This host's copy: scoring regions is per-host work, outside the data mesh.
      return jax.tree.map(_local_value, states["scorer"].params)
    return load_params(workdir, "scorer", config)

  results = {}
  log = MetricsLog(workdir)
  try:
    with StopRequest() as stop:
      for name in config.stages:
        stage = build_stage(name, config, train_examples, val_examples, scorer_params)
        states[name], results[name] = train_stage(stage, config, workdir, log, mesh, stop)
  finally:
    log.close()
  return results
