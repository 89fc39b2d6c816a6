"""Whole-field prediction side by side: the thesis path, the default path and the baselines.

    SPIRALNET_BBBC039_DIR=/path/to/bbbc039 python benchmarks/paths_bench.py --fields=3 \
        --out=benchmarks/results/paths_cpu-2core.json

The first `fields` BBBC039 test fields (520×696), one process, same run, with the shipped model:
  * thesis: the thesis' method (grid seeds at stride 16, every region all 56 spiral steps with
    the `full_fov` step, the thesis' merge rule), the shipped weights;
  * default: the shipped config (score-map peak seeds, lobe regions, the split rule, the valley
    split, `cropped`);
  * unet: the U-Net baseline at the config's width (random weights: its time does not depend
    on them); otsu_watershed: the classical baseline.
Each path runs once over a warm-up field (compilation), then over every field, timed per field;
JAX backend compilations during the timed pass are counted (a field of the same size must
compile nothing). With `--mosaic=n` (default 4: 2080×2784) the default path also runs on an n×n
mosaic of the fields, normalised once: a warm-up, then two timed runs. Reports medians per
field, default/thesis speed-up, nuclei found, and instance F1@0.5 of both SpiralNet paths
(these fields only; not a recipe's score). Prints and writes JSON with device, versions and
commit.
"""

import pathlib
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import models
from spiralnet_jax import predict
from spiralnet_jax import unet as unet_lib
from spiralnet_jax import unet_predict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_FIELDS = flags.DEFINE_integer("fields", 10, "Test fields to time.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "BBBC039 (default: SPIRALNET_BBBC039_DIR).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")
_PATHS = flags.DEFINE_list("paths", ["thesis", "default", "unet", "otsu_watershed"],
                           "Paths to time (the speed-up needs thesis and default).")
_THREADS = flags.DEFINE_integer("threads", -1, "predict.threads of every path (-1: the "
                                "shipped config's; 1: one segmenter batch at a time).")
_MOSAIC = flags.DEFINE_integer("mosaic", 4, "Also time the default path on a mosaic of this many "
                               "fields per side (0: no mosaic).")

_COMPILES = []  # One entry per backend compilation (jax.monitoring).


def _count_compiles(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == "/jax/core/compile/backend_compile_duration":
    _COMPILES.append(event)


def _models(shipped: predict.Predictor) -> dict[str, models.Model]:
  """The four paths as `models.Model`s."""
  thesis = shipped.config.copy_and_resolve_references()
  thesis.predict.seeds, thesis.predict.lobes = "grid", False
  thesis.assembly.split_containers, thesis.segmenter.step = False, "full_fov"
  thesis.assembly.split_valleys = False
  thesis.continuation.max_moves = 4  # The SPEC's; the shipped config follows 2 moves.
  config = shipped.config
  net = unet_lib.UNet(base_features=int(config.unet.base_features), depth=int(config.unet.depth))
  unet_params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 1)))["params"]
  return {
      "thesis": models.spiralnet(predict.Predictor.from_params(
          thesis, shipped.scorer_params, shipped.segmenter_params)),
      "default": models.spiralnet(shipped),
      "unet": models.unet(unet_predict.UNetPredictor.from_params(config, unet_params)),
      "otsu_watershed": models.otsu_watershed(config)}


def _run(model: models.Model, images: list[np.ndarray], labels: list[np.ndarray]) -> dict:
  """Warm-up, then per-field seconds, compilations during the timed pass, nuclei and F1@0.5."""
  model.predict(images[0])
  before, seconds, pairs = len(_COMPILES), [], []
  for image, truth in zip(images, labels):
    start = time.perf_counter()
    _, instances = model.predict(image)
    seconds.append(time.perf_counter() - start)
    pairs.append((truth, np.asarray(instances)))
  scores = metrics.instance_scores(pairs, thresholds=(0.5,))
  return {"median_s": statistics.median(seconds), "seconds": [round(s, 3) for s in seconds],
          "compilations_timed": len(_COMPILES) - before,
          "nuclei": int(sum(len(np.unique(p[p > 0])) for _, p in pairs)),
          "instance_f1@0.5": float(scores["f1"][0]), "merges": int(scores["merges"])}


def _mosaic(model: models.Model, examples: list, n: int, percentiles) -> dict:
  """The default path on an n×n mosaic of the fields (raw, alternating), normalised once:
  one warm-up (its stripe shapes compile), then timed twice."""
  mosaic = np.block([[examples[(r + c) % len(examples)].image for c in range(n)]
                     for r in range(n)])
  image = data_lib.normalize(mosaic, percentiles)
  model.predict(image)
  before, seconds = len(_COMPILES), []
  for _ in range(2):
    start = time.perf_counter()
    _, instances = model.predict(image)
    seconds.append(time.perf_counter() - start)
  return {"shape": list(image.shape), "median_s": statistics.median(seconds),
          "seconds": [round(s, 3) for s in seconds], "compilations_timed": len(_COMPILES) - before,
          "nuclei": int(np.asarray(instances).max())}


def main(argv):
  del argv
  jax.monitoring.register_event_duration_secs_listener(_count_compiles)
  examples = data_lib.load_split("test", _DATA_DIR.value, max_images=_FIELDS.value)
  shipped = predict.Predictor.pretrained()
  if _THREADS.value >= 0:
    shipped.config.predict.threads = _THREADS.value
  images = [data_lib.normalize(ex.image, predict.percentiles(shipped.config)) for ex in examples]
  labels = [ex.labels for ex in examples]
  rows, paths = {}, _models(shipped)
  for name, model in paths.items():
    if name not in _PATHS.value:
      continue
    rows[name] = _run(model, images, labels)
    print(name, rows[name]["median_s"], flush=True)  # Progress: the thesis path is slow.
  mosaic = (_mosaic(paths["default"], examples, _MOSAIC.value,
                    predict.percentiles(shipped.config)) if _MOSAIC.value else None)
  bench_common.emit({
      "benchmark": "whole-field prediction, thesis path vs default path vs baselines",
      "mosaic_default_path": mosaic, "threads": predict.threads(shipped.config),
      "fields": [ex.name for ex in examples], "field_shape": list(images[0].shape),
      "model": "shipped (spiralnet_jax/weights, default)", "paths": rows,
      "default_over_thesis_speedup": (rows["thesis"]["median_s"] / rows["default"]["median_s"]
                                      if {"thesis", "default"} <= rows.keys() else None),
      "cpu": bench_common.cpu_info(), "peak": bench_common.device_peak()}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
