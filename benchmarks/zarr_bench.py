"""A huge image from Zarr on a Dask LocalCluster: `spiralnet-segment big.zarr --scheduler ...`.

    python benchmarks/zarr_bench.py --size=10000 --workers=2 \
        --out=benchmarks/results/zarr_10k_2workers.json

Builds a size×size uint16 Zarr store (chunks of 1024²) by tiling the bundled BBBC039 test fields
(520×696 each, alternating, so the nucleus density is a real field's), starts a LocalCluster of
`workers` single-threaded worker processes (as `--dask` does, `segment_dask.local_cluster`), and
times the whole command with the shipped model (model load in the client, compilation in each
worker, every block, painting the labels). Then the peak RSS of each worker process
(`ru_maxrss` since it started: JAX, the model, its blocks) and of this process (the client: the
plan, the labels it paints block by block). Prints and writes JSON with device, versions and
commit.
"""

import os
import pathlib
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import blocks
from spiralnet_jax import data as data_lib
from spiralnet_jax import segment
from spiralnet_jax import segment_dask

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_SIZE = flags.DEFINE_integer("size", 10000, "Side of the square image (px).")
_WORKERS = flags.DEFINE_integer("workers", 2, "LocalCluster worker processes.")
_BLOCK = flags.DEFINE_integer("block", blocks.BLOCK, "Core side of a block (px).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def _peak_rss_mb() -> float:
  """Peak resident set size of the calling process, MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_store(path: pathlib.Path, size: int) -> None:
  """The tiled test fields as a (size, size) uint16 Zarr array, one field at a time."""
  import zarr  # pylint: disable=g-import-not-at-top
  fields = [ex.image for ex in data_lib.load_split("test", data_lib.sample_dir())]
  height, width = fields[0].shape
  store = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024),
                          dtype=np.uint16)
  for i, top in enumerate(range(0, size, height)):
    for j, left in enumerate(range(0, size, width)):
      field = fields[(i + j) % len(fields)]
      store[top:top + height, left:left + width] = field[:size - top, :size - left]


def main(argv):
  del argv
  import distributed  # pylint: disable=g-import-not-at-top
  import zarr  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as folder:
    image = pathlib.Path(folder) / "big.zarr"
    _write_store(image, _SIZE.value)
    with segment_dask.local_cluster(_WORKERS.value) as cluster, \
         distributed.Client(cluster) as client:
      start = time.perf_counter()
      code = segment.main([str(image), "--scheduler", cluster.scheduler_address,
                           "--block", str(_BLOCK.value), "--output-dir", folder, "--quiet"])
      seconds = time.perf_counter() - start
      workers_mb = client.run(_peak_rss_mb)
      environ = client.run(lambda: {k: os.environ.get(k) for k in (
          "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")})
    labels = zarr.open_array(str(pathlib.Path(folder) / "big_labels.zarr"), mode="r")
    info = dict(labels.attrs)["spiralnet_jax"]
  bench_common.emit({
      "benchmark": "spiralnet-segment on a Zarr image, blocks on a Dask LocalCluster",
      "exit_status": code, "image_shape": [_SIZE.value, _SIZE.value], "image_dtype": "uint16",
      "source": "bundled BBBC039 test fields (520x696) tiled", "model": "shipped (default)",
      "workers": _WORKERS.value, "threads_per_worker": 1, "worker_environ": environ,
      "block": info["block"], "margin": info["margin"],
      "num_blocks": len(blocks.windows((_SIZE.value, _SIZE.value), info["block"],
                                       info["margin"])),
      "nuclei": info["num_nuclei"], "seconds": round(seconds, 1),
      "megapixels_per_s": round(_SIZE.value ** 2 / 1e6 / seconds, 3),
      "peak_rss_mb_per_worker": {k: round(v, 1) for k, v in workers_mb.items()},
      "peak_rss_mb_client": round(_peak_rss_mb(), 1),
      "load_average": list(os.getloadavg())}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
