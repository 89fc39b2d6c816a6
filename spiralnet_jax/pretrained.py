"""Shipped weights: parameters as plain .npz arrays (no pickle) beside their config.json.

A weights directory holds `config.json` (the config the model was trained with),
`scorer.npz` and `segmenter.npz` (one array per parameter, named by its path in the parameter
tree, e.g. `image_conv/kernel`) and `provenance.json` (commit, data, split, wall time,
validation and test metrics). `tools/export_weights.py` writes one from a train.py workdir;
the package ships `spiralnet_jax/weights/bbbc039_cpu_finetune/` (configs/bbbc039_cpu_finetune.py),
the default of `spiralnet-segment` and `predict.Predictor.pretrained()`, and the weights it was
fine-tuned from, `weights/bbbc039_cpu/` (configs/bbbc039_cpu.py).
"""

import json
import pathlib
from typing import Any, Union

import ml_collections
import numpy as np

from spiralnet_jax import defaults

PathLike = Union[str, pathlib.Path]
STAGES = ("scorer", "segmenter")
DEFAULT_NAME = "bbbc039_cpu_finetune"


def weights_dir(name: str = DEFAULT_NAME) -> pathlib.Path:
  """The directory of the shipped weights `name` inside the installed package."""
  return pathlib.Path(__file__).resolve().parent / "weights" / name


def is_weights_dir(path: PathLike) -> bool:
  """Whether `path` holds exported weights (rather than a train.py workdir)."""
  path = pathlib.Path(path)
  return all((path / f"{stage}.npz").is_file() for stage in STAGES)


def _leaves(params: Any, prefix: str = "") -> dict[str, Any]:
  """{"a/b/kernel": leaf} of a nested parameter dict (leaves as they are)."""
  out = {}
  for key, value in params.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(_leaves(value, name + "/"))
    else:
      out[name] = value
  return out


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """{"a/b/kernel": array} of a nested parameter dict."""
  return {name: np.asarray(leaf) for name, leaf in _leaves(params).items()}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
  """The nested parameter dict of `flatten_params`' output."""
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def save_params(path: PathLike, params: Any) -> None:
  """Writes `params` to an .npz (uncompressed: float weights barely compress)."""
  np.savez(path, **flatten_params(params))


def load_params(path: PathLike) -> dict:
  """Reads parameters written by `save_params` (never unpickles)."""
  with np.load(path, allow_pickle=False) as npz:
    return unflatten_params({name: npz[name] for name in npz.files})


def load_stage_params(path: PathLike, stage: str, like: Any) -> dict:
  """The `stage` parameters of a weights directory, checked to have `like`'s tree and shapes.

  `like` is the parameter tree (arrays or ShapeDtypeStructs) the caller's config builds; a
  model of another size or kind is refused with what differs, rather than failing later.
  """
  file = pathlib.Path(path) / f"{stage}.npz"
  if not file.is_file():
    raise FileNotFoundError(f"no {stage} weights at {file} (expected an exported weights "
                            "directory, see tools/export_weights.py)")
  with np.load(file, allow_pickle=False) as npz:
    loaded = {name: npz[name] for name in npz.files}
  like = _leaves(like)
  got = {name: tuple(v.shape) for name, v in loaded.items()}
  wanted = {name: tuple(leaf.shape) for name, leaf in like.items()}
  if got != wanted:
    diff = sorted(set(got.items()) ^ set(wanted.items()))[:6]
    raise ValueError(f"{file} does not fit this config's {stage}: differing (name, shape) "
                     f"{diff}")
  return unflatten_params({name: np.asarray(v, like[name].dtype) for name, v in loaded.items()})


def load_config(path: PathLike) -> ml_collections.ConfigDict:
  """The config.json of a weights directory, upgraded over today's defaults."""
  return defaults.upgrade_config(json.loads((pathlib.Path(path) / "config.json").read_text()))


def load(path: PathLike) -> tuple[ml_collections.ConfigDict, dict[str, dict]]:
  """(config, {stage: params}) of a weights directory."""
  path = pathlib.Path(path)
  return load_config(path), {stage: load_params(path / f"{stage}.npz") for stage in STAGES}


def provenance(path: PathLike = None) -> dict:
  """The provenance record of a weights directory (default: the shipped weights)."""
  path = weights_dir() if path is None else pathlib.Path(path)
  return json.loads((path / "provenance.json").read_text())
