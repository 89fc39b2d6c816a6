"""The vmapped segmenter against the batch-native scan it replaced: forward and training time.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 \
        python benchmarks/vmap_bench.py --out=benchmarks/results/vmap_cpu.json

`Segmenter.apply` (one region's spiral vmapped across regions) and `Segmenter.apply_batch` (the
regions batched inside the convolutions), both jitted, with the shipped model's segmenter on
random regions at the prediction batch sizes; then the training loss and its gradient,
`Segmenter.loss_vmapped` against `Segmenter.loss` (batch-native, what training runs), at the shipped training batch size
with the shipped loss settings. Interleaved repetitions, medians and their ratio, and whether
the outputs are bitwise equal (else their largest difference). Prints and writes JSON with
device, versions, commit.
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


def _compare(variants: dict, args: tuple, row: dict) -> dict:
  """`row` with the variants' median times, their ratio and how far their outputs differ."""
  outs = {k: jax.tree.leaves(jax.device_get(f(*args))) for k, f in variants.items()}  # Compile.
  times = {k: [] for k in variants}
  for _ in range(_REPEATS.value):
    for name, fn in variants.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  medians = {k: float(np.median(v)) for k, v in times.items()}
  pairs = list(zip(outs["vmap"], outs["batch_native"]))
  return {**row, "median_s": medians,
          "vmap_over_batch_native": medians["vmap"] / medians["batch_native"],
          "bitwise_equal": all(np.array_equal(a, b) for a, b in pairs),
          "max_abs_difference": max(float(np.abs(a - b).max()) for a, b in pairs)}


def main(argv):
  del argv
  predictor = predict.Predictor.pretrained()
  seg, params = predictor.segmenter, predictor.segmenter_params
  rows = []
  for batch in map(int, _BATCHES.value):
    regions = np.random.default_rng(0).random((batch,) + seg.region_shape).astype(np.float32)
    rows.append(_compare({"vmap": jax.jit(seg.apply), "batch_native": jax.jit(seg.apply_batch)},
                         (params, regions, seg.initial_mask(batch)), {"batch": batch}))
  batch = int(predictor.config.segmenter.batch_size)
  rng = np.random.default_rng(1)
  regions = rng.random((batch,) + seg.region_shape).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch,) + seg.region_shape)]
  grads = {"vmap": jax.jit(jax.value_and_grad(seg.loss_vmapped)),
           "batch_native": jax.jit(jax.value_and_grad(seg.loss))}
  rows.append(_compare(grads, (params, regions, labels),
                       {"training_value_and_grad": True, "batch": batch,
                        "loss": seg.loss_type, "boundary_weight": seg.boundary_weight}))
  bench_common.emit({"rows": rows}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
