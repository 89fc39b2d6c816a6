"""Segmenter throughput on the CPU: batches in flight at once (threads) × batch size × width ×
the spiral's XLA:CPU compile options (`predict.cpu_ynn_fusion`).

    python benchmarks/threads_bench.py --out=benchmarks/results/threads_cpu-2core.json

Regions per second of the jitted spiral (`predict`'s own segment function, the shipped config's
`cropped` step, 56 steps) over 256 random 52×58 regions, for each segmenter width
(thesis 32/64/32, shipped 16/32/16, quarter 8/16/8; random weights: the time does not depend on
them), each `predict.cpu_ynn_fusion` ("default": XLA:CPU hands the convolutions to YNNPACK;
"eltwise": only elementwise fusions, the convolutions stay XLA's), each batch size and each
thread count: the batches are called from that many threads at once, as
`continuation.run_batched` does. Median of `--repeats` passes after a warm-up.
With XLA's FLOP count per region (`segmenter_bench.xla_gflop_per_region`) each width's best
setting is also given as GFLOP/s and as a fraction of the CPU's theoretical float32 peak.
Prints and writes JSON with device, versions and commit.
"""

from concurrent import futures
import pathlib
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from spiralnet_jax import predict
from spiralnet_jax import stages

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position
import segmenter_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

_WIDTHS = {"thesis": (32, 64, 32), "shipped": (16, 32, 16), "quarter": (8, 16, 8)}
_FUSIONS = flags.DEFINE_list("fusions", ["default", "eltwise"], "predict.cpu_ynn_fusion values.")
_BATCHES = flags.DEFINE_list("batches", ["4", "8", "16"], "Region batch sizes.")
_THREADS = flags.DEFINE_list("threads", ["1", "2", "3", "4"], "Thread counts.")
_REGIONS = flags.DEFINE_integer("regions", 256, "Regions per pass.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes per setting.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def _predictor(shipped: predict.Predictor, width: tuple[int, int, int],
               fusion: str) -> predict.Predictor:
  """The shipped predictor with a segmenter of `width` (random weights unless shipped)."""
  config = shipped.config.copy_and_resolve_references()
  config.predict.cpu_ynn_fusion = fusion
  seg = config.segmenter
  params = shipped.segmenter_params
  if (seg.branch_features, seg.features, seg.skip_features) != width:
    seg.branch_features, seg.features, seg.skip_features = width
    params = stages.get("segmenter").init_params(config, jax.random.key(0))
  return predict.Predictor.from_params(config, shipped.scorer_params, params)


def _regions_per_s(predictor: predict.Predictor, batch: int, threads: int) -> float:
  """Median regions/s of `_REGIONS` regions in batches of `batch` on `threads` threads."""
  fn = predict._segment_fn(predictor)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  batches = [rng.random((batch,) + predictor.segmenter.region_shape, np.float32)
             for _ in range(max(1, _REGIONS.value // batch))]
  mask = predictor.segmenter.initial_mask(batch)
  np.asarray(fn(batches[0], mask))  # Compile.
  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    with futures.ThreadPoolExecutor(threads) as pool:
      list(pool.map(lambda x: np.asarray(fn(x, mask)), batches))
    rates.append(len(batches) * batch / (time.perf_counter() - start))
  return statistics.median(rates)


def main(argv):
  del argv
  rows, peak, shipped = {}, bench_common.device_peak(), predict.Predictor.pretrained()
  for name, width in _WIDTHS.items():
    rates = {}
    for fusion in _FUSIONS.value:
      predictor = _predictor(shipped, width, fusion)
      for batch in map(int, _BATCHES.value):
        for threads in map(int, _THREADS.value):
          key = f"{fusion}_b{batch}_t{threads}"
          rates[key] = round(_regions_per_s(predictor, batch, threads), 1)
          print(name, key, rates[key], flush=True)
    gflop = segmenter_bench.xla_gflop_per_region(predictor.segmenter, predictor.segmenter_params)
    best = max(rates, key=rates.get)
    rows[name] = {"widths": list(width), "gflop_per_region": round(gflop, 4),
                  "regions_per_s": rates, "best": best,
                  "best_gflop_per_s": round(rates[best] * gflop, 1),
                  "best_fraction_of_peak": round(rates[best] * gflop / peak["float32_gflops"], 3)}
  bench_common.emit({"benchmark": "segmenter regions/s: threads x batch x width",
                     "regions": _REGIONS.value, "repeats": _REPEATS.value, "widths": rows,
                     "cpu": bench_common.cpu_info(), "peak": peak}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
