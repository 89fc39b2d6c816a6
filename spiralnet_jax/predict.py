"""Whole-image prediction: score regions, segment the selected ones, follow objects, assemble.

    predictor = Predictor.from_workdir("/tmp/spiralnet")
    labels = predict_instances(predictor, image)  # int32 (H, W), 0 = background.

Prediction streams, so memory is bounded by the batch and chunk sizes plus a few arrays the size
of the image (the image, the outputs, and the sparse thresholded claims assembly reads):

1. Scores come from row stripes of `predict.stripe_rows` grid rows. The scorer is per region, so
   a stripe's scores are those regions' scores whatever else the image holds.
2. The selected regions, in raster order, are cut into chunks of at most `predict.chunk_regions`
   regions spanning at most `predict.stripe_rows` grid rows. A chunk is segmented, its objects
   are followed over region edges (`continuation`), and its pieces are reduced to their claims
   (`assembly.claims`); then the pieces are dropped. Under `predict.lobes` the chunk's
   candidates with two or more lobes get a region on each lobe (`spiralnet_jax.seeding`),
   segmented and followed the same way. `predict.chunks_in_flight` chunks run at once.
3. Assembly runs once, on all claims; then `assembly.split_valleys` (`spiralnet_jax.valleys`).

Streaming is exact, not an approximation: object ids are the global raster indices of the
selected regions, as in whole-image prediction; everything continuation does is per object, and
a chunk sees an image window tall enough that none of its objects' pieces can reach (or reflect
across) a window edge that is not an image edge; assembly does not depend on the order or the
chunking of the claims. `predict_pieces` keeps every piece of the image (one chunk), which is
what the streamed result is tested against. (Exact up to XLA's float rounding, which on some
CPUs differs by an ulp with a region's slot in a batch: continuation moves land in other slots
when streamed, and a near-tie between two instances at a pixel may then flip.)

Compilations stay bounded whatever the image sizes: a scoring stripe is zero-padded up to
multiples of `predict.shape_bucket` (equal stripes of at most `stripe_rows` rows), and the
segmenter sees batches of `predict.region_batch_size` regions, a remainder padded to the next of
a few halving bucket sizes (continuation.batch_bucket). (The U-Net predicts in tiles instead.)

A constant image has no contrast, hence no nuclei: `predict` returns empty masks for it without
running the networks (which would otherwise see an all-zero image).
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import os
import pathlib
from typing import Any, Callable, Optional, Union

import jax
import ml_collections
import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import checkpoints
from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import early_exit
from spiralnet_jax import pretrained
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scale
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import seeding
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import spiral_compile
from spiralnet_jax import stages
from spiralnet_jax import valleys

# progress(done, total): called as prediction advances (regions, or U-Net tiles).
Progress = Callable[[int, int], None]

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
      object.__setattr__(self, "segmenter", stages.SEGMENTER.model(self.config))

  @classmethod
  def from_params(cls, config: ml_collections.ConfigDict, scorer_params: Any,
                  segmenter_params: Any) -> "Predictor":
    """A predictor from in-memory parameters (e.g. straight after training)."""
    return cls(config=config, scorer_params=scorer_params, segmenter_params=segmenter_params)

  @classmethod
  def from_workdir(cls, workdir: PathLike,
                   config: Optional[ml_collections.ConfigDict] = None) -> "Predictor":
    """The newest scorer and segmenter checkpoints of a train.py `workdir` (config: its own)."""
    workdir = pathlib.Path(workdir)
    config = checkpoints.load_config(workdir) if config is None else config
    return cls.from_params(config, checkpoints.load_params(workdir, "scorer", config),
                           checkpoints.load_params(workdir, "segmenter", config))

  @classmethod
  def from_weights(cls, path: PathLike) -> "Predictor":
    """A predictor from an exported weights directory (`spiralnet_jax.pretrained`)."""
    config, params = pretrained.load(path)
    return cls.from_params(config, params["scorer"], params["segmenter"])

  @classmethod
  def pretrained(cls, name: str = pretrained.DEFAULT_NAME) -> "Predictor":
    """The weights shipped with the package (BBBC039, trained on the CPU; see their
    provenance.json): `labels = predict_instances(Predictor.pretrained(), image)`."""
    return cls.from_weights(pretrained.weights_dir(name))


def percentiles(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """The normalisation percentiles a model was trained with (`data.normalize_percentiles`)."""
  low, high = config.data.normalize_percentiles
  return float(low), float(high)


# Validation and blockwise normalisation of a raw image (data.intensity).
prepare_image = data_lib.intensity.prepare_image


def score_prepared(predictor: Predictor, image: np.ndarray) -> np.ndarray:
  """(rows, cols) scorer outputs for every region (training grid) of a prepared image."""
  return scorer_lib.score_image(predictor.scorer_params, image, predictor.geom,
                                bucket=int(predictor.config.predict.shape_bucket))


def score_image(predictor: Predictor, image: Any) -> np.ndarray:
  """(rows, cols) scorer outputs for every region (training grid) of a raw image."""
  return score_prepared(predictor, prepare_image(image, percentiles(predictor.config)))


def _segment_fn(predictor: Predictor) -> continuation.SegmentFn:
  """segment_fn(regions, init_mask) -> probs for `continuation`, with the params bound."""
  config = predictor.config.predict
  return spiral_compile.segment_fn(predictor.segmenter, predictor.segmenter_params,
                                   str(config.cpu_ynn_fusion), int(config.region_batch_size),
                                   threads(predictor.config))


def segment_regions(predictor: Predictor, region_batch: np.ndarray,
                    init_mask: Optional[np.ndarray] = None) -> np.ndarray:
  """(N, h, w, 3) float32 probabilities of (N, h, w) regions, in fixed-size chunks."""
  region_batch = np.asarray(region_batch, np.float32)
  if init_mask is None:
    init_mask = predictor.segmenter.initial_mask(len(region_batch))
  return continuation.run_batched(_segment_fn(predictor), region_batch,
                                  np.asarray(init_mask, np.float32),
                                  int(predictor.config.predict.region_batch_size),
                                  threads(predictor.config))


def threads(config: ml_collections.ConfigDict) -> int:
  """Segmenter batches / score stripes run at once: `predict.threads`, or (0) the usable cores
  on the CPU and 1 elsewhere (an accelerator wants whole batches, not more of smaller ones)."""
  wanted = int(config.predict.threads)
  if wanted > 0:
    return wanted
  return len(os.sched_getaffinity(0)) if jax.default_backend() == "cpu" else 1


def _prediction_geom(predictor: Predictor,
                     stride: Optional[int] = None) -> regions_lib.RegionGeometry:
  """The region geometry at the prediction stride (or at `stride`); the networks are indifferent
  to it (thesis §3.1: overlapping crops at prediction)."""
  stride = int(predictor.config.predict.stride if stride is None else stride)
  return dataclasses.replace(predictor.geom, stride=stride)


def _stripe_rows(config: ml_collections.ConfigDict) -> int:
  return max(1, int(config.predict.stripe_rows))


def score_grid(predictor: Predictor, image: np.ndarray,
               stride: Optional[int] = None) -> np.ndarray:
  """(rows, cols) scores of every region of a prepared image on the grid of `stride` px
  (default `predict.stride`), in equal stripes of at most `predict.stripe_rows` grid rows (each
  its own padded window of the image, so the padded image never exists whole), `threads(config)`
  stripes at once."""
  geom = _prediction_geom(predictor, stride)
  config = predictor.config
  bucket = int(config.predict.shape_bucket)
  rows, cols = regions_lib.grid_shape(image.shape, geom)
  if rows == 0 or cols == 0:
    return np.zeros((rows, cols), np.float32)
  # Equal stripes: a last stripe of a few rows would cost a whole one (it is padded to the shape).
  stripe = -(-rows // -(-rows // _stripe_rows(config)))
  height = (stripe - 1) * geom.stride + geom.height  # Padded rows one stripe reads.
  shape = [height, image.shape[1] + 2 * geom.pad]
  if bucket > 0:
    shape = [n + (-n % bucket) for n in shape]

  def score_stripe(first: int) -> np.ndarray:
    top = first * geom.stride
    window = regions_lib.padded_rows(image, geom.pad, top,
                                     min(top + height, image.shape[0] + 2 * geom.pad))
    # Every stripe has the same shape (one compilation): zeros below the last one only add grid
    # rows past the real grid, which are sliced off.
    window = np.pad(np.asarray(window, np.float32), [(0, shape[0] - window.shape[0]),
                                                (0, shape[1] - window.shape[1])])
    scores = scorer_lib.score_padded(predictor.scorer_params, window, geom)
    return np.asarray(scores[:min(stripe, rows - first), :cols])
  with futures.ThreadPoolExecutor(threads(config)) as pool:
    return np.concatenate(list(pool.map(score_stripe, range(0, rows, stripe))))


def selected_origins(predictor: Predictor, image: np.ndarray) -> np.ndarray:
  """(S, 2) image-coordinate origins of the selected regions, in raster order.

  `predict.seeds` says where (spiralnet_jax.seeding): the passing regions of the prediction
  grid, or one region per peak of the fine score map.
  """
  config = predictor.config
  threshold = float(config.scorer.threshold)
  if config.predict.seeds == "grid":
    geom = _prediction_geom(predictor)
    cells = seeding.grid_cells(score_grid(predictor, image), threshold)
  elif config.predict.seeds == "peaks":
    geom = _prediction_geom(predictor, int(config.predict.peak_stride))
    cells = seeding.peak_cells(score_grid(predictor, image, geom.stride), threshold,
                               int(config.predict.peak_min_distance))
  else:
    raise ValueError(f"predict.seeds must be 'grid' or 'peaks', got {config.predict.seeds!r}")
  return seeding.cell_origins(cells, geom)


def _max_moves(config: ml_collections.ConfigDict) -> int:
  return int(config.continuation.max_moves) if config.continuation.enabled else 0


def _segment_objects(predictor: Predictor, image: np.ndarray, origins: np.ndarray,
                     object_ids: np.ndarray, max_moves: int) -> continuation.Pieces:
  """Pieces of the objects of the selected regions at `origins` (segmented, then followed).

  Works on the window of image rows those objects can reach (`window_rows`), so a chunk of a
  big image costs the chunk, not the image.
  """
  config = predictor.config
  geom = _prediction_geom(predictor)
  if len(origins) == 0:
    return continuation.Pieces(np.zeros((0, 2), np.int32), np.zeros((0,) + geom.shape,
                                                                    np.float32),
                               np.zeros(0, np.int32))
  top, bottom = continuation.window_rows(origins, image.shape[0], geom, max_moves)
  window = image[top:bottom]
  local = origins - np.array([top, 0])
  crops = continuation.crop_regions(regions_lib.reflect_pad(window, geom.pad), geom.pad, local,
                                    geom)
  probs = _fresh_objects(predictor, crops)
  del crops
  first = continuation.Pieces(local.astype(np.int32), probs, np.asarray(object_ids, np.int32))
  if max_moves == 0:
    pieces = first._replace(probs=continuation.central_probs(first.probs))
  else:
    pieces = continuation.continue_objects(
        _segment_fn(predictor), window, first, geom, max_moves=max_moves,
        threshold=float(config.continuation.threshold),
        batch_size=int(config.predict.region_batch_size),
        connected_only=bool(config.continuation.connected_only), threads=threads(config))
  return pieces._replace(origins=(pieces.origins + np.array([top, 0])).astype(np.int32))


def _fresh_objects(predictor: Predictor, crops: np.ndarray) -> np.ndarray:
  """(N, h, w, 3) probabilities of fresh regions, channel 0 kept to the anchored objects under
  `continuation.connected_only`, where `predict.exit_rings` stops enclosed ones (exact)."""
  config, geom = predictor.config, _prediction_geom(predictor)
  if not config.continuation.connected_only:
    return segment_regions(predictor, crops)
  threshold, batch = float(config.continuation.threshold), int(config.predict.region_batch_size)
  if config.predict.exit_rings:
    fns = spiral_compile.exit_fns(predictor.segmenter, predictor.segmenter_params,
                                  str(config.predict.cpu_ynn_fusion), batch, threads(config))
    probs = early_exit.run(fns, predictor.segmenter, crops, geom,
                           tuple(config.predict.exit_rings), threshold, batch, threads(config))
  else:
    probs = segment_regions(predictor, crops)
  return continuation.keep_connected(probs, continuation.centre_anchor(len(probs), geom),
                                     threshold)


def _lobe_pieces(predictor: Predictor, image: np.ndarray, claimed: assembly.Claims,
                 num_selected: int) -> Optional[continuation.Pieces]:
  """Pieces of regions centred on the lobes of `claimed`'s candidates (`predict.lobes`).

  Lobe j of object o has id num_selected + o·max_lobes + j: unique, and the same however the
  objects are chunked. None when the option is off or no candidate has two lobes.
  """
  cfg = predictor.config.predict
  if not cfg.lobes:
    return None
  centres, parents, index = seeding.object_lobes(
      claimed.pixel, claimed.object_id, image.shape[1], int(cfg.lobe_min_distance),
      float(cfg.lobe_min_depth), int(cfg.max_lobes), float(cfg.lobe_max_solidity))
  if not len(centres):
    return None
  order = np.lexsort((centres[:, 1], centres[:, 0]))  # Raster order, as the first regions.
  ids = num_selected + parents * int(cfg.max_lobes) + index
  moves = _max_moves(predictor.config) if cfg.follow_lobes else 0
  return _segment_objects(predictor, image, seeding.centre_origins(centres[order], predictor.geom),
                          ids[order], moves)


def predict_pieces(predictor: Predictor, image: Any) -> continuation.Pieces:
  """All segmented pieces of an image at once: one object per selected region, plus its moves
  (and the lobe regions' objects, under `predict.lobes`).

  Holds every piece (memory grows with the image); `predict` streams instead.
  """
  image = prepare_image(image, percentiles(predictor.config))
  origins = selected_origins(predictor, image)
  pieces = _segment_objects(predictor, image, origins, np.arange(len(origins)),
                            _max_moves(predictor.config))
  claimed = assembly.claims(pieces, image.shape, float(predictor.config.assembly.threshold))
  lobes = _lobe_pieces(predictor, image, claimed, len(origins))
  return pieces if lobes is None else continuation.Pieces(*map(np.concatenate, zip(pieces, lobes)))


def _chunk_claims(predictor: Predictor, image: np.ndarray, origins: np.ndarray, start: int,
                  stop: int) -> list[assembly.Claims]:
  """The claims of the objects of selected regions start..stop-1 (and of their lobes)."""
  threshold = float(predictor.config.assembly.threshold)
  pieces = _segment_objects(predictor, image, origins[start:stop], np.arange(start, stop),
                            _max_moves(predictor.config))
  parts = [assembly.claims(pieces, image.shape, threshold)]
  del pieces
  lobes = _lobe_pieces(predictor, image, parts[0], len(origins))
  if lobes is not None:
    parts.append(assembly.claims(lobes, image.shape, threshold))
  return parts


def predict_claims(predictor: Predictor, image: np.ndarray,
                   progress: Optional[Progress] = None) -> assembly.Claims:
  """The claims of every object of a prepared image, chunk by chunk (see the module doc),
  `predict.chunks_in_flight` chunks at once."""
  config = predictor.config
  origins = selected_origins(predictor, image)
  spans = regions_lib.chunks(origins[:, 0], int(config.predict.chunk_regions),
                             _stripe_rows(config) * _prediction_geom(predictor).stride)
  if progress is not None:
    progress(0, len(origins))
  parts = []
  # A chunk's host work (continuation bookkeeping, lobes, claims) leaves cores idle that the
  # next chunk's spirals can use; the claims are the same whatever the order (module doc).
  with futures.ThreadPoolExecutor(max(1, int(config.predict.chunks_in_flight))) as pool:
    jobs = [pool.submit(_chunk_claims, predictor, image, origins, *span) for span in spans]
    for (_, stop), job in zip(spans, jobs):
      parts.extend(job.result())
      if progress is not None:
        progress(stop, len(origins))
  return assembly.concatenate_claims(parts, image.shape)


def empty_masks(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """The (semantic, instances) prediction of an image without nuclei."""
  return np.zeros(shape, bool), np.zeros(shape, np.int32)


def predict(predictor: Predictor, image: Any, progress: Optional[Progress] = None,
            diameter: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """(semantic bool (H, W), instances int32 (H, W)) of an image of any size and dtype.

  Streamed (see the module doc); `progress(done, total)` follows the selected regions.
  `diameter`: its nuclei's size in px; the image is rescaled to the training data's
  (`spiralnet_jax.scale`), the masks brought back to (H, W). None: no rescaling.
  """
  return predict_prepared(predictor, prepare_image(image, percentiles(predictor.config)),
                          progress, diameter)


def predict_prepared(predictor: Predictor, image: np.ndarray,
                     progress: Optional[Progress] = None,
                     diameter: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """`predict` of an image that is already `prepare_image`'s output (normalised once)."""
  if diameter is not None:
    return scale.at_diameter(lambda x: predict_prepared(predictor, x, progress), image,
                             diameter, predictor.config.data.nucleus_diameter)
  if not image.any():  # Normalised constant image: no contrast, no nuclei.
    return empty_masks(image.shape)
  cfg = predictor.config.assembly
  claimed = [predict_claims(predictor, image, progress)]  # Popped: freed once assembled.
  # Freed before assembly (the memory peak): the float32 image; kept: a float16 copy (valleys).
  shape, image = image.shape, valleys.kept_image(image, cfg)
  semantic, instances = assembly.assemble_claims_from_config(claimed.pop(), shape, cfg)
  return semantic, valleys.split_from_config(instances, image, cfg)


def predict_instances(predictor: Predictor, image: Any,
                      diameter: Optional[float] = None) -> np.ndarray:
  """int32 (H, W) instance labels, 0 = background, ids 1..N (`predict`'s `diameter`)."""
  return predict(predictor, image, diameter=diameter)[1]


def predict_semantic(predictor: Predictor, image: Any,
                     diameter: Optional[float] = None) -> np.ndarray:
  """bool (H, W) foreground mask (`predict`'s `diameter`)."""
  return predict(predictor, image, diameter=diameter)[0]
