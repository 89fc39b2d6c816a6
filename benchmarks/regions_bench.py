"""Times cutting and labelling all regions of one 520×696 image; prints one JSON object.

Usage:
  python benchmarks/regions_bench.py [--data_dir DIR] [--repeats 15] [--warmup 3]

With --data_dir (or $SPIRALNET_BBBC039_DIR) the first training field of BBBC039 is used, its
mask decoded here (4-connected components per red value) so that the benchmark depends only on
`spiralnet_jax.regions` and `spiralnet_jax.scorer`; otherwise a synthetic image of random discs.
Also times `scorer.score_image` (one strided convolution) with random Scorer params.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from spiralnet_jax import regions
from spiralnet_jax import scorer

import bench_common

_SHAPE = (520, 696)


def _bbbc039_field(data_dir: pathlib.Path) -> tuple[str, np.ndarray, np.ndarray]:
  """(name, normalised image, instance labels) of the first training field."""
  import skimage.io
  import skimage.measure
  import tifffile

  stem = (data_dir / "metadata" / "training.txt").read_text().split()[0].removesuffix(".png")
  image = tifffile.imread(data_dir / "images" / f"{stem}.tif").astype(np.float32)
  span = image.max() - image.min()
  image = (image - image.min()) / span if span > 0 else np.zeros_like(image)
  red = skimage.io.imread(data_dir / "masks" / f"{stem}.png")[..., 0]
  labels = np.zeros(red.shape, np.int32)
  for value in np.unique(red[red > 0]):
    comp = skimage.measure.label(red == value, connectivity=1)
    labels[comp > 0] = comp[comp > 0] + labels.max()
  return stem, image, labels


def _synthetic_field(seed: int = 0) -> tuple[str, np.ndarray, np.ndarray]:
  """(name, image, labels) with ~120 random discs of radius 6–14 (BBBC039-like density)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:_SHAPE[0], :_SHAPE[1]]
  labels = np.zeros(_SHAPE, np.int32)
  for k in range(1, 121):
    cy, cx = rng.integers(0, _SHAPE[0]), rng.integers(0, _SHAPE[1])
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(6, 14) ** 2] = k
  image = (labels > 0) * 0.6 + rng.random(_SHAPE, dtype=np.float32) * 0.4
  return "synthetic", image.astype(np.float32), labels


def _time(fn, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
  """Wall-clock and process-CPU milliseconds of `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    fn()
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append((time.perf_counter() - start) * 1e3)
    cpu.append((time.process_time() - start_cpu) * 1e3)
  return wall, cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=os.environ.get("SPIRALNET_BBBC039_DIR", ""))
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--hidden", type=int, default=128)
  args = parser.parse_args()

  geom = regions.RegionGeometry.from_config(bench_common.default_config().regions)
  name, image, labels = (_bbbc039_field(pathlib.Path(args.data_dir)) if args.data_dir
                         else _synthetic_field())
  cut = regions.cut_and_label(image, labels, geom)
  cut_ms, cut_cpu_ms = _time(lambda: regions.cut_and_label(image, labels, geom), args.repeats, args.warmup)

  params = scorer.Scorer(args.hidden).init(jax.random.key(0), jnp.zeros((1,) + geom.shape))
  score_ms, _ = _time(lambda: scorer.score_image(params["params"], image, geom), args.repeats,
                   args.warmup)

  print(json.dumps({
      "benchmark": "regions.cut_and_label",
      "source": name,
      "image_shape": list(image.shape),
      "num_regions": int(cut.scores.size),
      "num_label_scores_over_0.4": int(np.sum(cut.scores > 0.4)),
      "cut_and_label_median_ms": round(statistics.median(cut_ms), 2),
      "cut_and_label_min_ms": round(min(cut_ms), 2),
      # Process CPU time: less sensitive than wall time to other jobs on a shared machine
      # (NumPy runs this single-threaded, so on an idle machine the two agree).
      "cut_and_label_cpu_median_ms": round(statistics.median(cut_cpu_ms), 2),
      "score_image_median_ms": round(statistics.median(score_ms), 2),
      "score_image_hidden": args.hidden,
      "repeats": args.repeats,
      "warmup": args.warmup,
      "load_average": list(os.getloadavg()),
      "device": {"jax_backend": jax.default_backend(), "jax_device": str(jax.devices()[0]),
                 "cpu": bench_common.cpu_info()["model"], "cpu_count": os.cpu_count()},
      "versions": {"python": sys.version.split()[0], "jax": jax.__version__,
                   "numpy": np.__version__},
      "git_commit": bench_common.git_commit(),
  }, indent=2))


if __name__ == "__main__":
  main()
