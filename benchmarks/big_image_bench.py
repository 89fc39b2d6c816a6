"""Streamed SpiralNet prediction of one big synthetic image: seconds and peak RSS; prints JSON.

Usage:
  python benchmarks/big_image_bench.py [--workdir workdir/demo] [--size 10000] [--batch_size 8]
      [--scorer_threshold T] [--out benchmarks/results/big_image_shipped_cpu-2core.json]

Without --workdir: the shipped model (`Predictor.pretrained()`, its own prediction config).

With --scorer_threshold T (above the model's) fewer regions pass: the same code path end to end
with less segmenter work, for checking the memory bound quickly (the claims, and so assembly,
shrink too, so it understates the peak; timings are not the model's). Without it, the model's
own threshold: the real workload (for the demo model ~67k selected regions at 10,000², hours on
2 CPU cores).
After prediction it also writes what the command writes per image (label TIFF, per-nucleus CSV)
to a temporary folder and times that.

The image is a seeded 1000×1000 `spiralnet_jax.data.synthetic` field (BBBC039-like nuclei,
uint16) tiled to size×size: generating 10⁸ pixels of nuclei directly would itself cost more
memory than the prediction, and tiling keeps the nucleus density, so the work per pixel, of a
real field. Peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` of this process (a fresh
process per run, so nothing earlier counts): it includes JAX, the model and the input image.
Timings on a shared machine are contended; `load_average` says how busy it was.
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

import flax
import jax
import jaxlib
import numpy as np

from spiralnet_jax import checkpoints
from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import segment_io
from spiralnet_jax.data import synthetic

import bench_common

_TILE = 1000


def _rss_mb() -> float:
  """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
  try:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float("nan")


def _image(source: str, size: int, seed: int) -> np.ndarray:
  """The size×size test image: a synthetic field or the bundled test fields, tiled."""
  if source == "synthetic":
    fields = [synthetic.generate(seed, shape=(_TILE, _TILE))[0]]
  else:
    fields = [ex.image for ex in data_lib.load_split("test", data_lib.sample_dir())]
  h, w = fields[0].shape
  rows, cols = -(-size // h), -(-size // w)
  return np.block([[fields[(r + c) % len(fields)] for c in range(cols)]
                   for r in range(rows)])[:size, :size]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="",
                      help="a train.py workdir (scorer + segmenter); default: the shipped model")
  parser.add_argument("--size", type=int, default=10000)
  parser.add_argument("--batch_size", type=int, default=0, help="0: the workdir config's")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--source", choices=("synthetic", "sample"), default="synthetic",
                      help="tile a synthetic field, or the package's bundled BBBC039 test "
                           "fields (alternating, 520×696 each)")
  parser.add_argument("--scorer_threshold", type=float, default=None,
                      help="override the model's scorer threshold (quick memory checks)")
  parser.add_argument("--out", default="", help="also write the JSON here")
  args = parser.parse_args()

  checkpoints.quiet_orbax_logging()
  predictor = (predict.Predictor.from_workdir(args.workdir) if args.workdir
               else predict.Predictor.pretrained())
  if args.batch_size > 0:
    config = predictor.config.copy_and_resolve_references()
    config.predict.region_batch_size = args.batch_size
    predictor = predict.Predictor.from_params(config, predictor.scorer_params,
                                              predictor.segmenter_params)
  image = _image(args.source, args.size, args.seed)
  if args.scorer_threshold is not None:
    config = predictor.config.copy_and_resolve_references()
    config.scorer.threshold = args.scorer_threshold
    predictor = predict.Predictor.from_params(config, predictor.scorer_params,
                                              predictor.segmenter_params)
  rss_before = _current_rss_mb()

  selected = []
  start = time.perf_counter()

  def progress(done: int, total: int) -> None:
    selected.append(total)
    # One line per chunk on stderr, so a long run can be followed (and its peak read early).
    print(f"regions {done}/{total}  {time.perf_counter() - start:.0f} s  peak RSS "
          f"{_rss_mb():.0f} MiB", file=sys.stderr, flush=True)

  semantic, instances = predict.predict(predictor, image, progress=progress)
  seconds = time.perf_counter() - start
  num_selected = selected[-1] if selected else 0
  config = predictor.config
  peak_predict = _rss_mb()

  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    count = int(instances.max())
    segment_io.write_tiff(pathlib.Path(tmp) / "labels.tif",
                          instances.astype(segment_io.label_dtype(count)))
    segment_io.write_csv(pathlib.Path(tmp) / "nuclei.csv",
                         segment_io.measurements(instances, image))
    labels_mb = (pathlib.Path(tmp) / "labels.tif").stat().st_size / 2**20
  seconds_outputs = time.perf_counter() - start

  print_out = {
      "benchmark": "predict.predict (streamed) on a big image",
      "image_shape": list(image.shape),
      "image_dtype": str(image.dtype),
      "source": (f"synthetic.generate(seed={args.seed}, shape=({_TILE}, {_TILE})) tiled"
                 if args.source == "synthetic" else "bundled BBBC039 test fields, tiled"),
      "workdir": str(args.workdir) or "shipped (spiralnet_jax/weights, default)",
      "seeds": str(config.predict.seeds), "lobes": bool(config.predict.lobes),
      "threads": predict.threads(config),
      "region_batch_size": int(config.predict.region_batch_size),
      "chunk_regions": int(config.predict.chunk_regions),
      "stripe_rows": int(config.predict.stripe_rows),
      "prediction_stride": int(config.predict.get("stride", config.regions.stride)),
      "scorer_threshold": float(config.scorer.threshold),
      "scorer_threshold_overridden": args.scorer_threshold is not None,
      "selected_regions": int(num_selected),
      "nuclei": int(instances.max()),
      "foreground_fraction": round(float(semantic.mean()), 4),
      "seconds": round(seconds, 1),
      "selected_regions_per_s": round(num_selected / seconds, 1),
      "seconds_outputs": round(seconds_outputs, 1),
      "labels_tiff_mb": round(labels_mb, 1),
      "rss_before_predict_mb": round(rss_before, 1),
      "peak_rss_predict_mb": round(peak_predict, 1),
      "peak_rss_mb": round(_rss_mb(), 1),
      "load_average": list(os.getloadavg()),
      "device": {"jax_backend": jax.default_backend(), "jax_device": str(jax.devices()[0]),
                 "cpu": bench_common.cpu_info()["model"], "cpu_count": os.cpu_count()},
      "versions": {"python": sys.version.split()[0], "jax": jax.__version__,
                   "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                   "numpy": np.__version__},
      "git_commit": bench_common.git_commit(),
  }
  text = json.dumps(print_out, indent=2)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
