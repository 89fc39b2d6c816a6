"""Whole-image prediction: score regions, segment the selected ones, follow objects, assemble.

    predictor = Predictor.from_workdir("/tmp/spiralnet")
    labels = predict_instances(predictor, image)  # int32 (H, W), 0 = background.

Compilations stay bounded whatever the image sizes: the scorer convolution runs on the
reflect-padded image zero-padded up to multiples of `predict.shape_bucket` (its valid grid is
sliced off afterwards), and the segmenter sees batches of `predict.region_batch_size` regions,
a remainder zero-padded to the next of a few halving bucket sizes (continuation.batch_bucket),
which also bounds memory.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Optional, Union

import jax
import ml_collections
import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import segmenter as segmenter_lib

PathLike = Union[str, pathlib.Path]


@dataclasses.dataclass(frozen=True)
class Predictor:
  """Both stages' parameters plus the config that built them (and the derived geometry)."""

  config: ml_collections.ConfigDict
  scorer_params: Any
  segmenter_params: Any
  # Derived from `config` when not given; kept as fields so `dataclasses.replace` reuses them.
  geom: Optional[regions_lib.RegionGeometry] = dataclasses.field(default=None, compare=False)
  segmenter: Optional[segmenter_lib.Segmenter] = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    if self.geom is None:
      object.__setattr__(self, "geom", regions_lib.RegionGeometry.from_config(self.config.regions))
    if self.segmenter is None:
      object.__setattr__(self, "segmenter", segmenter_lib.Segmenter.from_config(self.config))

  @classmethod
  def from_params(cls, config: ml_collections.ConfigDict, scorer_params: Any,
                  segmenter_params: Any) -> "Predictor":
    """A predictor from in-memory parameters (e.g. straight after training)."""
    return cls(config=config, scorer_params=scorer_params, segmenter_params=segmenter_params)

  @classmethod
  def from_workdir(cls, workdir: PathLike,
                   config: Optional[ml_collections.ConfigDict] = None) -> "Predictor":
    """Restores the latest scorer and segmenter checkpoints written by training in `workdir`.

    The config defaults to `<workdir>/config.json`, which training writes.
    """
    # Imported here: train_lib pulls in the data pipeline and logging, which prediction
    # from in-memory parameters does not need.
    from spiralnet_jax import train_lib  # pylint: disable=g-import-not-at-top
    workdir = pathlib.Path(workdir)
    if config is None:
      config = train_lib.load_config(workdir)
    return cls.from_params(config, train_lib.load_params(workdir, "scorer", config),
                           train_lib.load_params(workdir, "segmenter", config))


def prepare_image(image: Any) -> np.ndarray:
  """Validates a 2-D numeric image and min–max normalises it to float32 [0, 1]."""
  image = np.asarray(image)
  if image.ndim != 2:
    raise ValueError(f"expected a 2-D (H, W) image, got shape {image.shape}")
  if image.size == 0:
    raise ValueError(f"expected an image of at least 1×1, got shape {image.shape}")
  if image.dtype.kind not in "biuf":
    raise ValueError(f"expected a boolean or real numeric image, got dtype {image.dtype}")
  if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
    raise ValueError("image contains NaN or infinite values")
  return data_lib.normalize(image)


def score_image(predictor: Predictor, image: Any) -> np.ndarray:
  """(rows, cols) scorer outputs for every region of a (raw) image."""
  return scorer_lib.score_image(predictor.scorer_params, prepare_image(image), predictor.geom,
                                bucket=int(predictor.config.predict.shape_bucket))


@functools.partial(jax.jit, static_argnums=0)
def _segment_batch(segmenter: segmenter_lib.Segmenter, params: Any, region_batch: jax.Array,
                   init_mask: jax.Array) -> jax.Array:
  """One fixed-size batch through the whole spiral (compiled once per segmenter and shape)."""
  return segmenter.apply(params, region_batch, init_mask)


def _segment_fn(predictor: Predictor):
  """segment_fn(regions, init_mask) -> probs for `continuation`, with the params bound."""
  return functools.partial(_segment_batch, predictor.segmenter, predictor.segmenter_params)


def segment_regions(predictor: Predictor, region_batch: np.ndarray,
                    init_mask: Optional[np.ndarray] = None) -> np.ndarray:
  """(N, h, w, 3) float32 probabilities of (N, h, w) regions, in fixed-size chunks."""
  region_batch = np.asarray(region_batch, np.float32)
  if init_mask is None:
    init_mask = np.zeros(region_batch.shape + (3,), np.float32)
  return continuation.run_batched(_segment_fn(predictor), region_batch,
                                  np.asarray(init_mask, np.float32),
                                  int(predictor.config.predict.region_batch_size))


def _predict_pieces(predictor: Predictor, image: np.ndarray) -> continuation.Pieces:
  """Pieces of an already prepared (normalised) image."""
  config = predictor.config
  # Prediction may cut regions on a denser grid than training: a nucleus that no 16-px grid
  # point lands on is never any region's central object (thesis §3.1: overlapping crops at
  # prediction). Scorer and segmenter are indifferent to the stride.
  # (.get: config.json files written before predict.stride existed used the training grid.)
  geom = dataclasses.replace(predictor.geom,
                             stride=int(config.predict.get("stride", predictor.geom.stride)))
  scores = scorer_lib.score_image(predictor.scorer_params, image, geom,
                                  bucket=int(config.predict.shape_bucket))
  selected = scorer_lib.select_regions(scores, float(config.scorer.threshold))
  origins = regions_lib.region_origins(image.shape, geom)[selected]
  crops = continuation.crop_regions(regions_lib.reflect_pad(image, geom.pad), geom.pad, origins,
                                    geom)
  probs = segment_regions(predictor, crops)
  if config.continuation.connected_only:
    probs = continuation.keep_connected(probs, continuation.centre_anchor(len(probs), geom),
                                        float(config.continuation.threshold))
  first = continuation.Pieces(origins, probs, np.arange(len(origins), dtype=np.int32))
  if not config.continuation.enabled:
    return first._replace(probs=continuation.central_probs(first.probs))
  return continuation.continue_objects(
      _segment_fn(predictor), image, first, geom, max_moves=int(config.continuation.max_moves),
      threshold=float(config.continuation.threshold),
      batch_size=int(config.predict.region_batch_size),
      connected_only=bool(config.continuation.connected_only))


def predict_pieces(predictor: Predictor, image: Any) -> continuation.Pieces:
  """All segmented pieces of an image: one object per selected region, plus its moves."""
  return _predict_pieces(predictor, prepare_image(image))


def predict(predictor: Predictor, image: Any) -> tuple[np.ndarray, np.ndarray]:
  """(semantic bool (H, W), instances int32 (H, W)) of an image of any size and dtype."""
  image = prepare_image(image)
  return assembly.assemble_from_config(_predict_pieces(predictor, image), image.shape,
                                       predictor.config.assembly)


def predict_instances(predictor: Predictor, image: Any) -> np.ndarray:
  """int32 (H, W) instance labels, 0 = background, ids 1..N."""
  return predict(predictor, image)[1]


def predict_semantic(predictor: Predictor, image: Any) -> np.ndarray:
  """bool (H, W) foreground mask."""
  return predict(predictor, image)[0]
