"""A training workdir's own files: config.json (and the guard that refuses a changed config), logs.

Resuming is exact only under the config that started a run, so `check_and_write_config` compares
the workdir's config.json with the new config, less the fields that keep resuming exact
(RESUMABLE_FIELDS), before it writes the new one. `MetricsLog` writes TensorBoard events and
`metrics.jsonl`, rewound on resume so that replayed steps appear once.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from absl import logging
import jax
import ml_collections
import tensorboardX

from spiralnet_jax import defaults
from spiralnet_jax.training.errors import ConfigMismatchError


# Fields (dotted paths, or prefixes of them) that may differ between the config that wrote a
# workdir and the one that resumes it: with any of them changed the resumed run still equals an
# uninterrupted run under the new config. Logging, checkpoint and validation cadence, where to
# stop, which stages to train, settings used only after training, where the same data lives, and
# epoch counts (batch order depends on (seed, stage, epoch) only, so under a constant learning
# rate more epochs extend the same run; `config_changes` refuses them under a decaying one).
# data.eval_splits was never read and is gone; workdirs whose config.json has it still resume.
RESUMABLE_FIELDS = (
    "stages", "data.data_dir", "data.tfds_data_dir", "data.validation_split", "data.eval_splits",
    "data.nucleus_diameter",
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


def check_and_write_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Refuses a workdir whose config.json differs from `config` (see RESUMABLE_FIELDS) unless
  train.allow_config_change, then writes `config` there (atomically)."""
  new = json.loads(config.to_json_best_effort())
  path = workdir / "config.json"
  if path.is_file():
    try:
      saved = json.loads(path.read_text())
      defaults.check_saved_config(saved)  # Refuses what train.py never wrote ({}, a list, ...).
      changes = config_changes(saved, new)
    except ValueError as e:  # json.JSONDecodeError is one too.
      changes = [f"config.json is not a config train.py wrote ({e})"]
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
    """One record: `scalars` of `stage` at `step` (every one but "epoch" also to TensorBoard)."""
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
    """Flushes and closes both logs."""
    if self._enabled:
      self._writer.close()
      self._jsonl.close()
