"""The vmapped segmenter against the batch-native scan it replaced: forward time, same run.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 \
        python benchmarks/vmap_bench.py --out=benchmarks/results/vmap_cpu.json

`Segmenter.apply` (one region's spiral vmapped across regions) and `Segmenter.apply_batch` (the
regions batched inside the convolutions), both jitted, with the shipped model's segmenter on
random regions at the prediction batch sizes; interleaved repetitions, medians and their ratio,
and whether the outputs are bitwise equal. Prints and writes JSON with device, versions, commit.
"""

import pathlib
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from spiralnet_jax import predict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_BATCHES = flags.DEFINE_list("batches", ["8", "32"], "Regions per call.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls per variant and batch.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def main(argv):
  del argv
  predictor = predict.Predictor.pretrained()
  seg, params = predictor.segmenter, predictor.segmenter_params
  variants = {"vmap": jax.jit(seg.apply), "batch_native": jax.jit(seg.apply_batch)}
  rows = []
  for batch in map(int, _BATCHES.value):
    regions = np.random.default_rng(0).random((batch,) + seg.region_shape).astype(np.float32)
    mask = seg.initial_mask(batch)
    outs = {k: np.asarray(f(params, regions, mask)) for k, f in variants.items()}  # Compile.
    times = {k: [] for k in variants}
    for _ in range(_REPEATS.value):
      for name, fn in variants.items():
        start = time.perf_counter()
        fn(params, regions, mask).block_until_ready()
        times[name].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    rows.append({"batch": batch, "median_s": medians,
                 "vmap_over_batch_native": medians["vmap"] / medians["batch_native"],
                 "bitwise_equal": bool(np.array_equal(outs["vmap"], outs["batch_native"]))})
  bench_common.emit({"rows": rows}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
