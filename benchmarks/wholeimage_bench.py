"""Whole-image prediction: SpiralNet (scorer + segmenter + continuation + assembly), the U-Net
baseline, and the scorer's strided convolution vs crop-and-MLP, on real BBBC039 fields.

One section of benchmarks/suite.py. Images: one 520×696 test field, and a 2080×2784 mosaic of
4×4 test fields. SpiralNet runs `predict.predict_instances` exactly as a user would; its
region counts come from one `predict.predict_pieces` call on the same image (the warm-up).
"""

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import models
from spiralnet_jax import predict as predict_lib
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import unet as unet_lib
from spiralnet_jax import unet_predict

import bench_common
import segmenter_bench

# Fraction of regions the random-weight scorer passes when no trained model is given: about
# what the trained demo scorer selects on BBBC039 (~300 of 1,452 regions per field).
_RANDOM_SELECTED_FRACTION = 0.2


def load_images(data_dir: str, mosaic_side: int = 4) -> dict[str, Any]:
  """{"field": (520, 696) raw image, "mosaic": (4·520, 4·696), "names": [...]} of test fields.

  From `data_dir` (the full BBBC039) when given; else the fields bundled with the package
  (8, so the mosaic repeats each twice; recorded in "names").
  """
  if data_dir:
    examples = data_lib.load_split("test", data_dir, max_images=mosaic_side ** 2)
  else:
    sample = data_lib.sample_dir()
    examples = [data_lib.load_example(sample, name) for split in ("test", "validation",
                                                                   "training")
                for name in data_lib.read_split_names(sample, split)]
  images = [e.image for e in examples]
  tiles = [images[i % len(images)] for i in range(mosaic_side ** 2)]
  rows = [np.concatenate(tiles[r * mosaic_side:(r + 1) * mosaic_side], axis=1)
          for r in range(mosaic_side)]
  return {"field": images[0], "mosaic": np.concatenate(rows, axis=0),
          "names": [examples[i % len(examples)].name for i in range(mosaic_side ** 2)],
          "source": "data_dir" if data_dir else "bundled sample"}


def make_predictor(workdir: str, image: np.ndarray) -> tuple[predict_lib.Predictor, dict]:
  """The trained predictor from `workdir`, or thesis-config random weights with the scorer
  threshold set to pass ~20% of the field's regions (random scores would pass none or all)."""
  if workdir:
    predictor = predict_lib.Predictor.from_workdir(workdir)
    return predictor, {"params": "trained", "workdir": str(workdir)}
  config = bench_common.default_config()
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  scorer_params = scorer_lib.Scorer(config.scorer.hidden).init(
      jax.random.key(0), jnp.zeros((1,) + geom.shape))["params"]
  predictor = predict_lib.Predictor.from_params(config, scorer_params, None)
  segmenter_params = predictor.segmenter.init(jax.random.key(1))
  scores = predict_lib.score_image(predictor, image)
  threshold = float(np.quantile(scores, 1 - _RANDOM_SELECTED_FRACTION))
  config = ml_collections.ConfigDict(config.to_dict())
  config.scorer.threshold = threshold
  predictor = predict_lib.Predictor.from_params(config, scorer_params, segmenter_params)
  return predictor, {"params": "random", "scorer_threshold": round(threshold, 6),
                     "note": "random weights: region counts and continuation moves are not "
                             "a trained model's"}


def spiralnet(predictor: predict_lib.Predictor, image: np.ndarray, repeats: int,
              gflop_per_region: float, peak: float | None) -> dict[str, Any]:
  """Seconds per image of `predict_instances`, regions scored and segmented, FLOP/s, and where
  the time goes (scoring, segmenting the selected regions, continuation, assembly).

  With `repeats` = 0 the breakdown run (compiles already done by an earlier image) is the
  timing: quick mode's mosaic, where a second whole run would double the section's time.
  """
  config = predictor.config
  geom = dataclasses.replace(predictor.geom, stride=int(config.predict.stride))
  rows, cols = regions_lib.grid_shape(image.shape, geom)
  prepared = predict_lib.prepare_image(image)
  # Breakdown run (also the warm-up that compiles every batch bucket this image needs).
  start = time.perf_counter()
  scores = scorer_lib.score_image(predictor.scorer_params, prepared, geom,
                                  bucket=int(config.predict.shape_bucket))
  selected = scorer_lib.select_regions(scores, float(config.scorer.threshold))
  score_s = time.perf_counter() - start
  origins = regions_lib.region_origins(image.shape, geom)[selected]
  crops = continuation.crop_regions(regions_lib.reflect_pad(prepared, geom.pad), geom.pad,
                                    origins, geom)
  start = time.perf_counter()
  predict_lib.segment_regions(predictor, crops)
  segment_s = time.perf_counter() - start
  start = time.perf_counter()
  pieces = predict_lib.predict_pieces(predictor, image)
  pieces_s = time.perf_counter() - start
  start = time.perf_counter()
  instances = assembly.assemble_from_config(pieces, image.shape, config.assembly)[1]
  assembly_s = time.perf_counter() - start
  if repeats:
    timing = bench_common.timed(lambda: predict_lib.predict_instances(predictor, image),
                                repeats, warmup=0)
  else:
    total = pieces_s + assembly_s
    timing = {"first_s": None, "median_s": round(total, 4), "min_s": round(total, 4),
              "repeats": 0, "note": "pieces + assembly of the breakdown run (no repeat)"}
  segmented = len(pieces.origins)
  scored = rows * cols
  out = {"image_shape": list(image.shape), **timing,
         "seconds_per_image": timing["median_s"],
         "regions_scored": scored, "regions_selected": int(selected.size),
         "regions_segmented": segmented, "continuation_moves": segmented - int(selected.size),
         "instances": int(instances.max()),
         "regions_scored_per_s": round(scored / timing["median_s"], 1),
         "regions_segmented_per_s": round(segmented / timing["median_s"], 1),
         # predict_pieces = scoring + segmenting the selected regions + continuation (moves,
         # their segmentation, connected-component filtering); continuation is the rest.
         "breakdown_s": {"score": round(score_s, 3), "segment_selected": round(segment_s, 3),
                         "continuation_rest": round(pieces_s - score_s - segment_s, 3),
                         "assembly": round(assembly_s, 3)},
         "segment_selected_regions_per_s": round(selected.size / segment_s, 1),
         "segmenter_gflop_per_region": round(gflop_per_region, 4)}
  out["segmenter_gflop_per_s"] = round(segmented * gflop_per_region / timing["median_s"], 1)
  if peak:
    out["segmenter_fraction_of_peak"] = round(out["segmenter_gflop_per_s"] / peak, 4)
  return out


def unet(config: ml_collections.ConfigDict, images: dict[str, np.ndarray], base_features: int,
         repeats: int, peak: float | None) -> dict[str, Any]:
  """The U-Net baseline's whole-image prediction (models.unet, random weights)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.unet.base_features = base_features
  net = unet_lib.UNet(base_features=base_features, depth=int(config.unet.depth))
  out = {"base_features": base_features, "depth": int(config.unet.depth),
         "params": "random (timing does not depend on the weights)"}
  params = None
  for key, image in images.items():
    prepared = predict_lib.prepare_image(image)
    if params is None:
      params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 1)))["params"]
    model = models.unet(unet_predict.UNetPredictor.from_params(config, params))
    timing = bench_common.timed(lambda: model.predict(prepared), repeats)
    compiled = jax.jit(lambda p, x: net.apply({"params": p}, x)).lower(
        params, jnp.zeros((1,) + image.shape + (1,))).compile()
    gflop = bench_common.cost_flops(compiled) / 1e9
    out[key] = {"image_shape": list(image.shape), **timing,
                "seconds_per_image": timing["median_s"], "gflop_per_image": round(gflop, 1),
                "gflop_per_s": round(gflop / timing["median_s"], 1),
                "memory": bench_common.memory(compiled)}
    if peak:
      out[key]["fraction_of_peak"] = round(out[key]["gflop_per_s"] / peak, 4)
  return out


def scorer(config: ml_collections.ConfigDict, image: np.ndarray, repeats: int) -> dict[str, Any]:
  """Regions/s of whole-image scoring as one strided conv vs cutting crops and the MLP."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  model = scorer_lib.Scorer(int(config.scorer.hidden))
  params = model.init(jax.random.key(0), jnp.zeros((1,) + geom.shape))["params"]
  prepared = predict_lib.prepare_image(image)
  rows, cols = regions_lib.grid_shape(image.shape, geom)
  mlp = jax.jit(lambda p, crops: model.apply({"params": p}, crops))

  def crop_and_mlp():
    return mlp(params, regions_lib.extract_regions(prepared, geom))

  conv = bench_common.timed(lambda: scorer_lib.score_image(params, prepared, geom), repeats)
  crops = bench_common.timed(crop_and_mlp, repeats)
  agree = float(np.abs(np.asarray(crop_and_mlp()).reshape(rows, cols)
                       - scorer_lib.score_image(params, prepared, geom)).max())
  padded = regions_lib.reflect_pad(prepared, geom.pad)
  flops = bench_common.cost_flops(
      scorer_lib.score_padded.lower(params, padded, geom).compile())
  return {"image_shape": list(image.shape), "regions": rows * cols, "hidden": model.hidden,
          "strided_conv": {**conv, "regions_per_s": round(rows * cols / conv["median_s"], 1),
                           "gflop": round(flops / 1e9, 3)},
          "crop_and_mlp": {**crops, "regions_per_s": round(rows * cols / crops["median_s"], 1)},
          "conv_over_mlp": round(crops["median_s"] / conv["median_s"], 2),
          "max_abs_difference": agree}


def run(mode: str, workdir: str, data_dir: str, repeats: int = 0) -> dict[str, Any]:
  """The whole-image section."""
  repeats = repeats or (2 if mode == "quick" else 5)
  peak = bench_common.device_peak().get("float32_gflops")
  images = load_images(data_dir)
  predictor, provenance = make_predictor(workdir, images["field"])
  gflop = segmenter_bench.xla_gflop_per_region(predictor.segmenter, predictor.segmenter_params)
  seg = predictor.config.segmenter
  out = {"images": {"source": images["source"], "field": images["names"][0],
                    "mosaic": images["names"], "mosaic_shape": list(images["mosaic"].shape)},
         "predictor": {**provenance, "segmenter_widths": [int(seg.branch_features),
                                                          int(seg.features),
                                                          int(seg.skip_features)],
                       "segmenter_step": seg.step, "predict_stride": int(
                           predictor.config.predict.stride),
                       "region_batch_size": int(predictor.config.predict.region_batch_size)},
         "spiralnet": {}}
  for key, count in (("field", repeats), ("mosaic", 0 if mode == "quick" else repeats)):
    out["spiralnet"][key] = spiralnet(predictor, images[key], count, gflop, peak)
  config = bench_common.default_config()
  # Thesis width (64) on the field; the mosaic in quick mode with width 16 (the thesis U-Net on
  # 2080×2784 needs several GB of activations per layer on a CPU).
  out["unet_thesis_width"] = unet(config, {"field": images["field"]} if mode == "quick"
                                  else {k: images[k] for k in ("field", "mosaic")},
                                  int(config.unet.base_features), repeats, peak)
  if mode == "quick":
    out["unet_width16"] = unet(config, {k: images[k] for k in ("field", "mosaic")}, 16, repeats,
                               peak)
  out["scorer"] = scorer(config, images["field"], 5 if mode == "quick" else 20)
  return out
