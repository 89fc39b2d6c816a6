"""The models spiralnet-segment runs: the shipped weights, a train.py workdir, exported weights.

`load_model(weights, model, batch_size)` gives a `models.Model` (the abstraction eval.py uses
too): (prepared image, progress) -> (semantic, instances), with the normalisation and nucleus
size the model was trained with; any problem with the weights is one `UsageError` line (exit
status 2).
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Optional

from spiralnet_jax import errors
from spiralnet_jax import segment_io

if TYPE_CHECKING:  # The model stack (JAX) loads only when a model does: --help stays quick.
  from spiralnet_jax.models import Model


class UsageError(Exception):
  """A problem with the whole run (exit status 2)."""


def default_weights() -> pathlib.Path:
  """The weights shipped with the package (spiralnet_jax/weights/bbbc039_cpu_finetune)."""
  from spiralnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  path = pretrained.weights_dir()
  if not pretrained.is_weights_dir(path):
    raise UsageError(f"the packaged weights are missing from {path}; reinstall the package or "
                     "pass --weights WORKDIR (a train.py workdir)")
  return path


def load_model(weights: Optional[str], model: str, batch_size: int = 0) -> Model:
  """The SpiralNet or U-Net model of a train.py workdir; UsageError with one line if unusable."""
  from spiralnet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import models  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import unet_predict  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(weights) if weights else default_weights()
  if workdir.is_file():
    raise UsageError(f"--weights {workdir} is a file; pass the folder that holds config.json "
                     "(a train.py workdir or exported weights)")
  if not workdir.is_dir():
    raise UsageError(f"weights directory {workdir} does not exist (pass --weights WORKDIR, a "
                     "train.py workdir)")
  if pretrained.is_weights_dir(workdir):
    return _exported_model(workdir, model, batch_size)
  try:
    config = checkpoints.load_config(workdir)
  except errors.ConfigFileError as e:
    raise UsageError(str(e)) from e
  except (OSError, ValueError) as e:
    raise UsageError(f"{workdir}: not a train.py workdir: {segment_io.one_line(e)}") from e
  if batch_size > 0:
    config.predict.region_batch_size = batch_size
  stages = ("scorer", "segmenter") if model == "spiralnet" else ("unet",)
  for stage in stages:
    try:
      checkpoints.check_fits(workdir, stage)  # Against its config.json, from metadata only.
    except (FileNotFoundError, checkpoints.CheckpointError, checkpoints.MismatchError) as e:
      raise UsageError(f"{workdir}: {e}") from e
  try:
    if model == "spiralnet":
      return models.spiralnet(predict.Predictor.from_workdir(workdir, config))
    return models.unet(unet_predict.UNetPredictor.from_workdir(workdir, config))
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{workdir}: cannot load the {model} weights: {segment_io.one_line(e)}") from e


def _exported_model(path: pathlib.Path, model: str, batch_size: int) -> Model:
  """The SpiralNet of an exported weights directory (`spiralnet_jax.pretrained`)."""
  from spiralnet_jax import models  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  if model != "spiralnet":
    raise UsageError(f"{path}: exported weights hold SpiralNet only; pass --weights WORKDIR "
                     f"(a train.py workdir) for --model {model}")
  try:
    predictor = predict.Predictor.from_weights(path)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{path}: cannot load the exported weights: {segment_io.one_line(e)}") from e
  if batch_size > 0:
    predictor.config.predict.region_batch_size = batch_size
  return models.spiralnet(predictor)
