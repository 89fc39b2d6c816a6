"""The trainable stages as typed specs: each builds its model from a config and initialises it.

`config.stages` names stages by string; `get(name)` is the one place a name becomes a spec.
Training (`spiralnet_jax.training`) and inference (`predict`, `checkpoints`) both build models
here, so a config always means the same network on both sides. Nothing here trains.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import unet as unet_lib


@dataclasses.dataclass(frozen=True)
class StageSpec(abc.ABC):
  """One stage: its name, its fixed id and the unit of one batch item."""

  name: str
  # Fixed ids: they seed each stage's parameters and data order independently of which stages
  # a run trains.
  stage_id: int
  unit: str  # What one batch item is, for throughput logs: "regions" or "images".

  @abc.abstractmethod
  def model(self, config: ml_collections.ConfigDict) -> Any:
    """The stage's network as `config` describes it."""

  @abc.abstractmethod
  def init_params(self, config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
    """Fresh parameters of the stage's model."""

  def abstract_params(self, config: ml_collections.ConfigDict) -> Any:
    """Shapes and dtypes of the stage's parameters (`jax.ShapeDtypeStruct`s), without FLOPs."""
    return jax.eval_shape(lambda: self.init_params(config, self.init_rng(config)))

  def init_rng(self, config: ml_collections.ConfigDict) -> jax.Array:
    """The initialisation key of the stage: the seed folded with the stage id."""
    # "rbg" keys: XLA:CPU compiles a threefry initialiser per layer slowly (a depth-2 U-Net's
    # init took 14 s to compile with threefry, 2.5 s with rbg); the numbers stay deterministic.
    return jax.random.fold_in(jax.random.key(config.seed, impl="rbg"), self.stage_id)


@dataclasses.dataclass(frozen=True)
class ScorerStage(StageSpec):
  """Stage 1: the region scorer."""

  def model(self, config: ml_collections.ConfigDict) -> scorer_lib.Scorer:
    """The scorer MLP (`config.scorer.hidden` units)."""
    return scorer_lib.Scorer(hidden=config.scorer.hidden)

  def init_params(self, config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
    """Fresh scorer parameters for regions of `config.regions`' shape."""
    geom = regions_lib.RegionGeometry.from_config(config.regions)
    return self.model(config).init(rng, jnp.zeros((1,) + geom.shape))["params"]


@dataclasses.dataclass(frozen=True)
class SegmenterStage(StageSpec):
  """Stage 2: the recursive segmenter."""

  def model(self, config: ml_collections.ConfigDict) -> segmenter_lib.Segmenter:
    """The segmenter (step network and spiral geometry) of `config`."""
    return segmenter_lib.Segmenter.from_config(config)

  def init_params(self, config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
    """Fresh step-network parameters."""
    return self.model(config).init(rng)


@dataclasses.dataclass(frozen=True)
class UNetStage(StageSpec):
  """The U-Net baseline."""

  def model(self, config: ml_collections.ConfigDict) -> unet_lib.UNet:
    """The U-Net of `config.unet`."""
    return unet_lib.UNet(base_features=int(config.unet.base_features), depth=int(config.unet.depth))

  def init_params(self, config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
    """Fresh U-Net parameters (initialised on the smallest input it takes)."""
    side = 2**config.unet.depth
    return self.model(config).init(rng, jnp.zeros((1, side, side, 1)))["params"]


SCORER = ScorerStage(name="scorer", stage_id=0, unit="regions")
SEGMENTER = SegmenterStage(name="segmenter", stage_id=1, unit="regions")
UNET = UNetStage(name="unet", stage_id=2, unit="images")
STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (SCORER, SEGMENTER, UNET)}


def get(name: str) -> StageSpec:
  """The spec of the stage called `name`; ValueError for an unknown name."""
  try:
    return STAGES[name]
  except KeyError:
    raise ValueError(f"unknown stage {name!r}; expected one of {tuple(STAGES)}") from None
