"""Checkpoints of a workdir: Orbax managers, checksummed saves, verified restores, model loading.

Each stage keeps its own Orbax checkpoints under `<workdir>/checkpoints/<stage>/<step>/`, one
`TrainState` per step, with a CRC-32 of every leaf in the step's custom metadata. Restoring
takes the newest step that restores and matches its checksums, and moves newer damaged steps
aside. Training saves and resumes through this module; inference loads parameters and checks
that they fit a config through it, so nothing else knows Orbax's folder layout.
"""

from __future__ import annotations

import json
import logging as py_logging
import pathlib
import warnings
import zlib
from typing import Any, Optional, Sequence, Union

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from spiralnet_jax import defaults
from spiralnet_jax import errors
from spiralnet_jax import stages
from spiralnet_jax import train_state
from spiralnet_jax.errors import CheckpointError

PathLike = Union[str, pathlib.Path]


class MismatchError(ValueError):
  """A checkpoint whose parameter shapes are not those of the model a config builds."""


# The `custom_metadata` key under which every checkpoint stores its per-leaf checksums.
_CHECKSUMS = "crc32"


def _drop_orbax_info(record: py_logging.LogRecord) -> bool:
  return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logging() -> None:
  """Drops Orbax's INFO records (~30 lines per checkpoint save) so progress lines stay visible."""
  logging.get_absl_handler().addFilter(_drop_orbax_info)


def checkpoint_dir(workdir: PathLike, stage: str) -> pathlib.Path:
  """`<workdir>/checkpoints/<stage>` (absolute, as Orbax requires)."""
  return pathlib.Path(workdir).resolve() / "checkpoints" / stage


def checkpoint_steps(workdir: PathLike, stage: str) -> list[int]:
  """The finished checkpoint steps of `stage` in `workdir`, ascending (unfinished saves are
  `<step>.orbax-checkpoint-tmp-*` and do not count)."""
  path = checkpoint_dir(workdir, stage)
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def checkpoint_manager(workdir: PathLike, stage: str, config: ml_collections.ConfigDict,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """The Orbax manager of `stage`'s checkpoints in `workdir` (keeps `train.max_to_keep`)."""
  # Saves are asynchronous; each is written to `<step>.orbax-checkpoint-tmp-*` and renamed to
  # `<step>` when complete (atomic on a local file system), and older steps beyond max_to_keep
  # are deleted only after that rename. A kill at any moment leaves complete steps only; tmp
  # directories are never listed as steps.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir, stage),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep,
                                           create=True, read_only=read_only))


def local_value(x: Any) -> np.ndarray:
  """This process's copy of a replicated array (on one host: the array)."""
  return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def state_checksums(state: Any) -> dict[str, int]:
  """CRC-32 of every leaf's bytes, keyed by its tree path."""
  # Orbax's OCDBT format checksums its index but not the array chunks: with orbax 0.12.8 a
  # flipped byte in a parameter file restores without error, so each save stores these.
  leaves, _ = jax.tree_util.tree_flatten_with_path(state)
  return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(local_value(leaf)).data)
          for path, leaf in leaves}


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Starts saving `state` as `step` (asynchronously), with its per-leaf checksums."""
  mngr.save(step, args=ocp.args.StandardSave(state),
            custom_metadata={_CHECKSUMS: state_checksums(state)})


def _restore_verified(mngr: ocp.CheckpointManager, step: int, abstract: Any) -> Any:
  """Restores one step and checks it against the checksums saved with it."""
  state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  expected = (mngr.metadata(step).custom_metadata or {}).get(_CHECKSUMS)
  if not isinstance(expected, dict):
    # `save` always stores them: a checkpoint without them was written by something else or
    # lost them, and nothing then vouches for its arrays.
    raise ValueError(f"no {_CHECKSUMS} checksums in its metadata (every checkpoint this "
                     "project writes has them)")
  got = state_checksums(state)
  bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
  if bad:
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    raise ValueError(f"checksum mismatch in {bad[0]}{more}")
  return state


def restore_newest(mngr: ocp.CheckpointManager, abstract: Any,
                   stage: str) -> tuple[Optional[Any], dict[int, str]]:
  """The newest checkpoint that restores and verifies (None if none does), and {step: reason}
  of the newer steps that failed, newest first; each failure is also logged as one line."""
  failed: dict[int, str] = {}
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      state = _restore_verified(mngr, step, abstract)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever a damaged checkpoint raises (JSON, tensorstore, checksum errors), the answer is
      # the same: report it and try the previous step.
      reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
      logging.warning("%s: checkpoint step %d cannot be restored (%s)", stage, step, reason)
      failed[step] = reason
      continue
    if failed:
      logging.warning("%s: fell back to checkpoint step %d (newer unrestorable: %s)", stage,
                      step, ", ".join(map(str, failed)))
    return state, failed
  return None, failed


def set_aside(directory: pathlib.Path, steps: Sequence[int], stage: str) -> None:
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


def resume(mngr: ocp.CheckpointManager, abstract: Any, stage: str,
           allow_fresh_start: bool) -> Optional[Any]:
  """The newest restorable state to resume from, or None to start fresh.

  Newer unrestorable steps are moved aside. When steps exist but none restores: CheckpointError
  (leaving them in place) unless `allow_fresh_start`.
  """
  state, failed = restore_newest(mngr, abstract, stage)
  where = pathlib.Path(mngr.directory)
  if state is None and failed and not allow_fresh_start:
    raise CheckpointError(
        f"{stage}: no checkpoint under {where} restores (unrestorable steps: "
        f"{', '.join(map(str, failed))}); pass --config.train.allow_fresh_start=True to "
        "train this stage from scratch")
  if failed:
    set_aside(where, failed, stage)
    mngr.reload()
    if state is None:
      logging.warning("%s: no checkpoint restores; training from scratch", stage)
  return state


def load_config(workdir: PathLike) -> ml_collections.ConfigDict:
  """The config training wrote to `<workdir>/config.json`, upgraded over today's defaults."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"no config.json in {workdir}; pass the config explicitly")
  try:
    return defaults.upgrade_config(json.loads(path.read_text()))
  except ValueError as e:  # json.JSONDecodeError is one too.
    raise errors.ConfigFileError(f"{path} is not a config train.py wrote: {e}") from e


def load_params(workdir: PathLike, stage: str, config: ml_collections.ConfigDict) -> Any:
  """The parameters of a stage's newest restorable checkpoint; FileNotFoundError if none exists.

  An unrestorable newer checkpoint is logged and skipped; CheckpointError if none restores.
  """
  # Onto one local device, whatever devices saved it (without a target sharding Orbax refuses
  # a checkpoint written by a different device count).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          train_state.abstract_state(stage, config))
  with checkpoint_manager(workdir, stage, config) as mngr:
    state, failed = restore_newest(mngr, abstract, stage)
    loaded = max((s for s in mngr.all_steps() if s not in failed), default=None)
  where = checkpoint_dir(workdir, stage)
  if state is None:
    if failed:
      raise CheckpointError(f"{stage}: no checkpoint under {where} restores (unrestorable "
                            f"steps: {', '.join(map(str, failed))})")
    raise FileNotFoundError(f"no {stage} checkpoint under {where}")
  if failed:
    # Loud, not just logged: these are not the weights the user pointed at.
    newest = max(failed)
    warnings.warn(errors.CheckpointFallbackWarning(
        f"{stage}: the newest checkpoint (step {newest} under {where}) cannot be restored "
        f"({failed[newest]}); using the older step {loaded}"), stacklevel=2)
  return state.params


# --- do these weights fit the config? ---------------------------------------------------------


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in leaves}


def stored_param_shapes(workdir: PathLike, stage: str, step: int) -> dict[str, tuple[int, ...]]:
  """{parameter path: shape} of a checkpoint step, from its metadata only (no arrays read)."""
  step_dir = checkpoint_dir(workdir, stage) / str(step)
  metadata = ocp.StandardCheckpointer().metadata(step_dir / "default").item_metadata.tree
  return _shapes(metadata["params"])


def check_fits(workdir: PathLike, stage: str,
               config: Optional[ml_collections.ConfigDict] = None) -> None:
  """Raises unless `stage`'s newest checkpoint has the parameter shapes of the model `config`
  (default: the workdir's config.json) builds, reading metadata only.

  FileNotFoundError: no finished checkpoint; CheckpointError: its metadata does not read;
  MismatchError: a parameter is missing, extra or of another shape (the first one is named).
  """
  steps = checkpoint_steps(workdir, stage)
  if not steps:
    raise FileNotFoundError(f"no {stage} checkpoint (expected {checkpoint_dir(workdir, stage)}"
                            "/<step>/); is this a train.py workdir that trained that stage?")
  which = "its config.json" if config is None else "the config"
  config = load_config(workdir) if config is None else config
  expected = _shapes(stages.get(stage).abstract_params(config))
  stored, reasons = None, []
  for step in reversed(steps):  # Newest first; restoring skips a damaged step the same way.
    try:
      stored = stored_param_shapes(workdir, stage, step)
      break
    except Exception as e:  # pylint: disable=broad-except
      reasons.append(f"step {step}: {errors.one_line(e)}")
  if stored is None:
    raise CheckpointError(f"cannot read any {stage} checkpoint's metadata ({'; '.join(reasons)})")
  for name in sorted(set(expected) | set(stored)):
    if expected.get(name) != stored.get(name):
      raise MismatchError(f"{stage} weights do not fit {which}: params{name} has shape "
                       f"{stored.get(name)} in the checkpoint but {expected.get(name)} in the "
                       "model the config builds")
