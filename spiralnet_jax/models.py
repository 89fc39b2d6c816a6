"""One model abstraction for eval.py, spiralnet-segment and its Dask workers: plain functions.

A `Model` is what every consumer of a trained (or classical) model needs and nothing more:
`predict(image, progress=None) -> (semantic, instances)` of a normalised (H, W) float32 image,
the normalisation percentiles and nucleus diameter the model was trained with, and for SpiralNet
its two stages on their own (`score`, `segment`) for the thesis' Tables 1-2. Built here, once, by
`spiralnet`, `unet` and `otsu_watershed`; tests inject fakes by constructing `Model` directly.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import ml_collections
import numpy as np

from spiralnet_jax import classical
from spiralnet_jax import predict as predict_lib
from spiralnet_jax import unet_predict
from spiralnet_jax.reports import OTSU_WATERSHED, SPIRALNET, UNET

@dataclasses.dataclass(frozen=True)
class Model:
  """A model as plain functions of a normalised image.

  predict: (image, progress=None) -> (semantic bool (H, W), instances int (H, W)).
  score: image -> (rows, cols) scorer scores on the region grid (SpiralNet only).
  segment: regions (B, h, w) -> probabilities (B, h, w, 3) from an empty mask (SpiralNet only).
  """

  name: str
  predict: Callable[..., tuple[np.ndarray, np.ndarray]]
  percentiles: tuple[float, float]  # The normalisation the model was trained with.
  nucleus_diameter: float  # Of its training data (px): what --diameter rescales to.
  score: Optional[Callable[[np.ndarray], np.ndarray]] = None
  segment: Optional[Callable[[np.ndarray], np.ndarray]] = None


def _trained_with(config: ml_collections.ConfigDict) -> dict:
  """The normalisation and nucleus size fields of a model trained with `config`."""
  return {"percentiles": predict_lib.percentiles(config),
          "nucleus_diameter": float(config.data.nucleus_diameter)}


def spiralnet(predictor: predict_lib.Predictor) -> Model:
  """SpiralNet: the full pipeline, the scorer on the region grid and the bare segmenter."""

  def run(image: np.ndarray, progress: Optional[predict_lib.Progress] = None):
    # Images arrive normalised, so they are not stretched again.
    return predict_lib.predict_prepared(predictor, image, progress)

  return Model(SPIRALNET, run, **_trained_with(predictor.config),
               score=lambda image: predict_lib.score_prepared(predictor, image),
               segment=lambda regions: predict_lib.segment_regions(predictor, regions))


def unet(predictor: unet_predict.UNetPredictor) -> Model:
  """The U-Net baseline: thresholded sigmoid, connected components as instances."""

  def run(image: np.ndarray, progress: Optional[predict_lib.Progress] = None):
    return unet_predict.predict_unet_prepared(predictor, image, progress)

  return Model(UNET, run, **_trained_with(predictor.config))


def otsu_watershed(config: ml_collections.ConfigDict) -> Model:
  """The classical baseline (spiralnet_jax.classical) with the numbers of `config.classical`."""
  c = config.classical

  def run(image: np.ndarray, progress: Optional[predict_lib.Progress] = None):
    del progress  # One pass over the image: nothing to report.
    return classical.otsu_watershed(image, float(c.sigma), int(c.min_distance), int(c.min_size))

  return Model(OTSU_WATERSHED, run, **_trained_with(config))
