"""The training loop: each stage from its newest checkpoint (or fresh) to its last step, in order.

`train_and_evaluate` trains `config.stages` one after another; `train_stage` trains one: it
restores or initialises the state, runs the steps of each epoch's batch plan (stopping on a
non-finite loss or gradient norm without saving that step), logs and saves on the configured
cadence, validates at epoch ends, and ends with a save and a validation. SIGTERM (`StopRequest`)
stops after the step in flight with a checkpoint of it (`Stopped`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Any, Callable, Optional, Sequence, Union

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from spiralnet_jax import checkpoints
from spiralnet_jax import config_checks
from spiralnet_jax import data as data_lib
from spiralnet_jax import errors
from spiralnet_jax import pretrained
from spiralnet_jax import stages
from spiralnet_jax import train_state as train_state_lib
from spiralnet_jax.training import input_pipeline
from spiralnet_jax.training import sharding
from spiralnet_jax.training import steps as steps_lib
from spiralnet_jax.training import workdir as workdir_lib
from spiralnet_jax.training.errors import BatchSizeError, NonFiniteError, Stopped, StopRequest

PathLike = Union[str, pathlib.Path]
TrainState = train_state_lib.TrainState


# --- stages --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
  """Everything the loop needs to train one stage."""

  name: str
  loss_fn: steps_lib.LossFn  # (params, batch) -> scalar.
  init_params: Callable[[jax.Array], Any]  # rng -> params.
  learning_rate: float
  epochs: int
  batch_size: int
  unit: str  # What one batch item is, for the rate: "regions" or "images".
  lr_schedule: str  # "constant" or "cosine" (see `train_state.learning_rate_fn`).
  warmup_epochs: float
  train: Any  # ScorerData | SegmenterData | UNetData
  val: Any
  max_train_items: int = 0
  max_eval_items: int = 0


def build_stage(stage: str, config: ml_collections.ConfigDict,
                train_examples: Sequence[data_lib.Example],
                val_examples: Sequence[data_lib.Example],
                scorer_params: Optional[Callable[[], Any]] = None) -> Stage:
  """The loss, initialiser, schedule and data of one stage."""
  spec = stages.get(stage)
  model = spec.model(config)
  data = input_pipeline.STAGE_DATA[spec.name](config, train_examples, val_examples,
                                              scorer_params)
  section = config[spec.name]  # Every stage's config section holds its own schedule.
  return Stage(
      name=spec.name, loss_fn=functools.partial(steps_lib.LOSSES[spec.name], model),
      init_params=functools.partial(spec.init_params, config),
      learning_rate=section.learning_rate, epochs=section.epochs,
      batch_size=section.batch_size, unit=spec.unit, lr_schedule=section.lr_schedule,
      warmup_epochs=float(section.warmup_epochs), train=data.train, val=data.val,
      max_train_items=data.max_train_items, max_eval_items=data.max_eval_items)


def evaluate(stage: Stage, params: Any, eval_fn: Callable[[Any, steps_lib.Batch], jax.Array],
             seed: int, mesh: Optional[Mesh] = None) -> float:
  """Mean loss over the validation items (a fixed random subset if max_eval_items > 0).

  Items go in batches of the training batch size, the remainder in one smaller batch, and the
  batch means are weighted by batch length, so this is the exact mean over items. A batch that
  does not split over the devices is replicated instead.
  """
  mesh = sharding.data_mesh() if mesh is None else mesh
  n = len(stage.val)
  if n == 0:
    return float("nan")
  items = np.arange(n)
  if 0 < stage.max_eval_items < n:
    rng = np.random.default_rng([seed, stages.get(stage.name).stage_id, 2**31 - 1])
    items = np.sort(rng.choice(n, stage.max_eval_items, replace=False))
  total = 0.0
  for i in range(0, len(items), stage.batch_size):
    chunk = items[i:i + stage.batch_size]
    spec = PartitionSpec("data") if len(chunk) % mesh.size == 0 else PartitionSpec()
    batch = sharding.shard_batch(stage.val, chunk, None, NamedSharding(mesh, spec))
    total += sharding.host_floats(eval_fn(params, batch))[0] * len(chunk)
  return total / len(items)


# --- one stage -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Schedule:
  """The step counts and the learning rate of one stage's run."""

  steps_per_epoch: int
  global_batch: int
  total_steps: int
  end_step: int  # Where this run stops: total_steps, or earlier with train.max_steps.
  lr: optax.ScalarOrSchedule

  def lr_at(self, step: int) -> float:
    """The rate of update `step` (0-based)."""
    return float(self.lr(step) if callable(self.lr) else self.lr)


def _schedule(stage: Stage, config: ml_collections.ConfigDict, mesh: Mesh) -> _Schedule:
  """The stage's schedule; BatchSizeError if its global batch does not split over `mesh`."""
  steps_per_epoch, global_batch = input_pipeline.epoch_batches(
      len(stage.train), stage.batch_size, config.seed, stage.name, 0, stage.max_train_items).shape
  if global_batch % mesh.size:
    raise BatchSizeError(
        f"{stage.name}: a global batch of {global_batch} items does not split over "
        f"{mesh.size} devices; make {stage.name}.batch_size a multiple of {mesh.size}")
  total_steps = stage.epochs * steps_per_epoch
  lr = train_state_lib.learning_rate_fn(stage.learning_rate, stage.lr_schedule, total_steps,
                                        round(stage.warmup_epochs * steps_per_epoch))
  max_steps = config.train.max_steps
  end_step = min(total_steps, max_steps) if max_steps > 0 else total_steps
  return _Schedule(steps_per_epoch, global_batch, total_steps, end_step, lr)


def _non_finite_message(stage: str, step: int, loss: float, grad_norm: float,
                        last_saved: Optional[int], where: pathlib.Path) -> str:
  what = "loss" if not math.isfinite(loss) else "gradient norm"
  kept = (f"last good checkpoint: step {last_saved} in {where}" if last_saved is not None
          else "no checkpoint was saved before it")
  return (f"{stage}: non-finite {what} at step {step} (loss {loss:.6g}, gradient norm "
          f"{grad_norm:.6g}); stopped without saving this step, {kept}")


class _Progress:
  """The progress bar, and the training metrics of the steps since the last log line."""

  def __init__(self, stage: Stage, schedule: _Schedule, step: int):
    self._stage, self._schedule = stage, schedule
    self._bar = tqdm.tqdm(total=schedule.end_step, initial=step, desc=stage.name, unit="step",
                          disable=None if jax.process_index() == 0 else True)
    self._start_step, self._start_time = step, time.perf_counter()
    self._reset(self._start_time)

  def _reset(self, now: float) -> None:
    self._window: dict[str, list[float]] = {"loss": [], "grad_norm": []}
    self._items, self._window_start = 0, now

  def add(self, loss: float, grad_norm: float, items: int) -> None:
    """Counts one finished step."""
    self._window["loss"].append(loss)
    self._window["grad_norm"].append(grad_norm)
    self._items += items
    self._bar.update(1)
    self._bar.set_postfix(loss=f"{loss:.4g}")

  def log(self, log: workdir_lib.MetricsLog, step: int) -> float:
    """Logs the window's mean loss and grad norm, the rate and throughput; returns the loss."""
    stage, schedule = self._stage, self._schedule
    now = time.perf_counter()
    rate = self._items / max(now - self._window_start, 1e-9)
    eta = (schedule.end_step - step) * (now - self._start_time) / (step - self._start_step)
    loss = float(np.mean(self._window["loss"]))
    log.write(stage.name, step, epoch=step / schedule.steps_per_epoch, loss=loss,
              grad_norm=float(np.mean(self._window["grad_norm"])),
              lr=schedule.lr_at(step - 1), **{f"{stage.unit}_per_s": rate})
    logging.info("%s step %d/%d epoch %.2f loss %.5g %.1f %s/s ETA %.0f s", stage.name, step,
                 schedule.end_step, step / schedule.steps_per_epoch, loss, rate, stage.unit, eta)
    self._reset(now)
    return loss

  def close(self) -> None:
    """Closes the progress bar."""
    self._bar.close()


def _initial_params(stage: Stage, config: ml_collections.ConfigDict) -> Any:
  """A fresh stage's parameters: `train.init_weights`' if set (fine-tuning), else random."""
  spec = stages.get(stage.name)
  fresh = lambda: stage.init_params(spec.init_rng(config))
  if not config.train.init_weights:
    return fresh()
  return pretrained.load_stage_params(config.train.init_weights, stage.name,
                                      jax.eval_shape(fresh))


class _StageRun:
  """One stage's run in progress: the compiled functions, the state, its saves and logs."""

  def __init__(self, stage: Stage, config: ml_collections.ConfigDict, workdir: pathlib.Path,
               log: workdir_lib.MetricsLog, mesh: Mesh, schedule: _Schedule):
    self.stage, self.config, self.log = stage, config, log
    self.mesh, self.schedule = mesh, schedule
    self.where = checkpoints.checkpoint_dir(workdir, stage.name)
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    tx = train_state_lib.make_optimizer(schedule.lr, train_state_lib.grad_clip_norm(config))
    self.init_fn = lambda: train_state_lib.create_train_state(_initial_params(stage, config), tx)
    self.step_fn = jax.jit(lambda s, b: steps_lib.train_step(s, b, loss_fn=stage.loss_fn, tx=tx),
                           in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=self.replicated)
    self.eval_fn = jax.jit(lambda p, b: steps_lib.eval_step(p, b, loss_fn=stage.loss_fn),
                           out_shardings=self.replicated)
    self.mngr: Optional[ocp.CheckpointManager] = None
    self.state: Optional[TrainState] = None
    self.step = 0
    self.metrics: dict[str, float] = {}

  def restore_or_init(self, mngr: ocp.CheckpointManager) -> None:
    """Resumes from the newest restorable checkpoint, or initialises the state."""
    stage, schedule = self.stage, self.schedule
    self.mngr = mngr
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated),
        jax.eval_shape(self.init_fn))
    state = checkpoints.resume(mngr, abstract, stage.name, self.config.train.allow_fresh_start)
    if state is None:
      # Under jit: eager Flax init compiles every layer's ops one by one (~15 s for a U-Net).
      state = jax.jit(self.init_fn, out_shardings=self.replicated)()
    else:
      logging.info("%s: resumed from step %d", stage.name,
                   int(checkpoints.local_value(state.step)))
    self.state, self.step = state, int(checkpoints.local_value(state.step))
    self.log.rewind(stage.name, self.step, final_validation=self.step == schedule.end_step)
    logging.info("%s: %d items, %d steps/epoch, global batch %d over %d devices, steps %d -> %d "
                 "of %d", stage.name, len(stage.train), schedule.steps_per_epoch,
                 schedule.global_batch, self.mesh.size, self.step, schedule.end_step,
                 schedule.total_steps)

  def save(self) -> None:
    """Starts saving the current step, unless it is the newest checkpoint already."""
    if self.mngr.latest_step() != self.step:
      checkpoints.save(self.mngr, self.step, self.state)

  def validate(self) -> None:
    """The validation loss at the current step, to the metrics and the log."""
    self.metrics["val_loss"] = evaluate(self.stage, self.state.params, self.eval_fn,
                                        self.config.seed, self.mesh)
    self.log.write(self.stage.name, self.step, epoch=self.step / self.schedule.steps_per_epoch,
                   val_loss=self.metrics["val_loss"])

  def train_step(self, items: np.ndarray, epoch: int, index: int) -> tuple[float, float]:
    """Batch `index` of `epoch`, one update; NonFiniteError (state kept) on a non-finite one."""
    name = self.stage.name
    batch = sharding.shard_batch(self.stage.train, items,
                                 input_pipeline.batch_rng(self.config.seed, name, epoch, index),
                                 self.batch_sharding)
    new_state, out = self.step_fn(self.state, batch)
    loss, grad_norm = sharding.host_floats(out["loss"], out["grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      self.mngr.wait_until_finished()  # So that the message names a complete checkpoint.
      raise NonFiniteError(_non_finite_message(name, self.step + 1, loss, grad_norm,
                                               self.mngr.latest_step(), self.where))
    self.state, self.step = new_state, self.step + 1
    return loss, grad_norm

  def stop(self, signum: int, progress: _Progress) -> None:
    """Saves the current step and raises Stopped."""
    self.save()
    self.mngr.wait_until_finished()
    progress.close()
    raise Stopped(f"{self.stage.name}: stopped by signal {signum} at step {self.step} of "
                  f"{self.schedule.end_step}; saved in {self.where}; run the same command to "
                  "resume", signum)

  def run_epoch(self, progress: _Progress, stop: Optional[StopRequest]) -> None:
    """The rest of the current epoch (up to the end step), with its periodic logs and saves."""
    train, schedule, step = self.config.train, self.schedule, self.step
    epoch, first = divmod(step, schedule.steps_per_epoch)
    plan = input_pipeline.epoch_batches(len(self.stage.train), self.stage.batch_size,
                                        self.config.seed, self.stage.name, epoch,
                                        self.stage.max_train_items)
    for index in range(first, min(schedule.steps_per_epoch, first + schedule.end_step - step)):
      if stop is not None and stop.signum is not None:
        self.stop(stop.signum, progress)
      loss, grad_norm = self.train_step(plan[index], epoch, index)
      progress.add(loss, grad_norm, len(plan[index]))
      if self.step % train.log_every_steps == 0 or self.step == schedule.end_step:
        self.metrics["train_loss"] = progress.log(self.log, self.step)
      every = train.checkpoint_every_steps
      if every > 0 and self.step % every == 0 and self.step < schedule.end_step:
        self.save()

  def after_epoch(self) -> None:
    """At an epoch end before the last step: validation and a save on their cadence."""
    epochs_done, rest = divmod(self.step, self.schedule.steps_per_epoch)
    if rest == 0 and self.step < self.schedule.end_step:
      if epochs_done % self.config.train.eval_every_epochs == 0:
        self.validate()
      if epochs_done % self.config.train.checkpoint_every_epochs == 0:
        self.save()

  def run(self, stop: Optional[StopRequest]) -> None:
    """Trains to the end step, then saves and validates."""
    progress = _Progress(self.stage, self.schedule, self.step)
    while self.step < self.schedule.end_step:
      self.run_epoch(progress, stop)
      self.after_epoch()
    progress.close()
    self.save()
    self.validate()
    self.mngr.wait_until_finished()


def train_stage(stage: Stage, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                log: workdir_lib.MetricsLog, mesh: Optional[Mesh] = None,
                stop: Optional[StopRequest] = None) -> tuple[TrainState, dict[str, float]]:
  """Trains (or resumes) one stage to its last step; returns the state and final metrics.

  Data-parallel over `mesh` (default: all devices): each global batch is split along "data",
  the state is replicated. Once `stop` has caught a signal, saves the current step and raises
  `Stopped` before the next.
  """
  mesh = sharding.data_mesh() if mesh is None else mesh
  run = _StageRun(stage, config, workdir, log, mesh, _schedule(stage, config, mesh))
  with checkpoints.checkpoint_manager(workdir, stage.name, config) as mngr:
    run.restore_or_init(mngr)
    run.run(stop)
  run.metrics.update(step=run.step, epoch=run.step / run.schedule.steps_per_epoch)
  return run.state, run.metrics


# --- all stages ----------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: PathLike) -> dict:
  """Trains `config.stages` in order in `workdir`; returns the final metrics per stage.

  Refuses (ConfigMismatchError) a workdir written by a config that differs outside
  RESUMABLE_FIELDS unless `config.train.allow_config_change`.
  """
  workdir = pathlib.Path(workdir)
  for stage in config.stages:
    if stage not in stages.STAGES:
      raise ValueError(f"unknown stage {stage!r} in config.stages; expected "
                       f"{tuple(stages.STAGES)}")
  # Settings and data first: a refused run leaves no config.json to block its corrected rerun.
  config_checks.validate(config)
  if workdir.exists() and not workdir.is_dir():
    raise config_checks.ConfigError(f"--workdir {workdir} exists and is not a directory")
  try:
    train_examples = data_lib.load_examples(config.data, config.data.train_split)
    val_examples = data_lib.load_examples(config.data, config.data.validation_split)
  except (FileNotFoundError, NotADirectoryError) as e:
    raise errors.DataError(str(e)) from e
  workdir.mkdir(parents=True, exist_ok=True)
  workdir_lib.check_and_write_config(config, workdir)
  # Logged once the run is accepted: a refused resume is one line on stderr, nothing else.
  logging.info("data: %d training, %d validation images (%s)", len(train_examples),
               len(val_examples), config.data.source)
  mesh = sharding.data_mesh()
  logging.info("data-parallel over %d devices (%s) in %d processes", mesh.size,
               jax.devices()[0].platform, jax.process_count())

  states: dict[str, TrainState] = {}

  def scorer_params() -> Any:
    if "scorer" in states:
      # This host's copy: scoring regions is per-host work, outside the data mesh.
      return jax.tree.map(checkpoints.local_value, states["scorer"].params)
    return checkpoints.load_params(workdir, "scorer", config)

  results = {}
  log = workdir_lib.MetricsLog(workdir)
  try:
    with StopRequest() as stop:
      for name in config.stages:
        stage = build_stage(name, config, train_examples, val_examples, scorer_params)
        states[name], results[name] = train_stage(stage, config, workdir, log, mesh, stop)
  finally:
    log.close()
  return results
