"""Whole-field prediction time of config variants of the shipped model, interleaved, one run.

    SPIRALNET_BBBC039_DIR=/path/to/bbbc039 python benchmarks/predict_ab_bench.py --fields=10 \
        --variant='whole:predict.exit_rings=[]' --variant='exit_2_3:predict.exit_rings=[2,3]' \
        --out=benchmarks/results/predict_ab_cpu-2core.json

Each variant is the shipped config with `section.field=JSON` overrides (`;`-separated), or, named
`name@DIR`, the weights exported in DIR with their own config and the overrides. The first
`fields` validation fields are normalised once; every variant predicts the first of them once
(compilation), then every field in turn, variant after variant, `repeats` times, so drifts in
the machine's speed fall on all variants alike. Reports per variant the median seconds per
field, its ratio to the first variant's, how many fields give instances identical to the first
variant's, and the spirals run per field (regions segmented, continuation and lobes included).
Prints and writes JSON with device, versions and commit. Quiet machine only.
"""

import dataclasses
import pathlib
import statistics
import sys
import time

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import early_exit
from spiralnet_jax import predict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_FIELDS = flags.DEFINE_integer("fields", 10, "Validation fields to time.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed passes over the fields.")
_VARIANTS = flags.DEFINE_multi_string("variant", [], "name:section.field=JSON[;...]")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def variant(base: predict.Predictor, spec: str) -> tuple[str, predict.Predictor]:
  """(name, the predictor under the overrides of `spec`; `name@weights_dir`: other weights)."""
  name, _, overrides = spec.partition(":")
  name, _, weights = name.partition("@")
  if weights:
    base = predict.Predictor.from_weights(weights)
  config = base.config.copy_and_resolve_references()
  for item in filter(None, overrides.split(";")):
    bench_common.override(config, item)
  return name, dataclasses.replace(base, config=config)


class _Counter:
  """Counts the regions every spiral call of the process segments (steps not included)."""

  def __init__(self):
    self.regions = 0
    self._batched, self._exit = continuation.run_batched, early_exit.run
    continuation.run_batched = self._count(self._batched, 1)
    early_exit.run = self._count(self._exit, 2)

  def _count(self, fn, regions_arg):
    def counted(*args, **kwargs):
      self.regions += len(args[regions_arg])
      return fn(*args, **kwargs)
    return counted


def main(argv):
  del argv
  base = predict.Predictor.pretrained()
  variants = dict(variant(base, spec) for spec in _VARIANTS.value)
  images = [predict.prepare_image(ex.image, predict.percentiles(base.config))
            for ex in data_lib.load_split("validation", max_images=_FIELDS.value)]
  for predictor in variants.values():
    predict.predict_prepared(predictor, images[0])
  counter = _Counter()
  times = {name: [] for name in variants}
  spirals = {name: 0 for name in variants}
  labels = {name: [] for name in variants}
  for repeat in range(_REPEATS.value):
    for image in images:
      for name, predictor in variants.items():
        before, start = counter.regions, time.perf_counter()
        _, instances = predict.predict_prepared(predictor, image)
        times[name].append(time.perf_counter() - start)
        if repeat == 0:
          spirals[name] += counter.regions - before
          labels[name].append(instances)
  first = next(iter(variants))
  reference = statistics.median(times[first])
  rows = {name: {"overrides": spec.partition(":")[2],
                 "median_s_per_field": round(statistics.median(times[name]), 4),
                 "ratio_to_first": round(statistics.median(times[name]) / reference, 4),
                 "fields_identical_to_first": sum(
                     np.array_equal(a, b) for a, b in zip(labels[name], labels[first])),
                 "spirals_per_field": round(spirals[name] / len(images), 1)}
          for name, spec in zip(variants, _VARIANTS.value)}
  bench_common.emit({**bench_common.header("predict_ab", contended=False),
                     "fields": len(images), "repeats": _REPEATS.value, "variants": rows},
                    _OUT.value)


if __name__ == "__main__":
  app.run(main)
