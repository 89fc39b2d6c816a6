"""Files per second of `spiralnet-segment --dask` on 1 and 2 LocalCluster workers, same run.

    python benchmarks/dask_files_bench.py --files=8 --out=benchmarks/results/dask_files_cpu.json

Writes `files` copies of the bundled test fields (alternating) to a temporary folder and times
the whole command (cluster start, model load per worker, segmentation, writing) with the shipped
model, for each worker count; prints and writes JSON with device, versions and commit.
"""

import pathlib
import sys
import tempfile
import time

from absl import app
from absl import flags
import tifffile

from spiralnet_jax import data as data_lib
from spiralnet_jax import segment

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

_FILES = flags.DEFINE_integer("files", 8, "Input files.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to time.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")


def main(argv):
  del argv
  fields = [ex.image for ex in data_lib.load_split("test", data_lib.sample_dir())]
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    inputs = pathlib.Path(folder) / "in"
    inputs.mkdir()
    for i in range(_FILES.value):
      tifffile.imwrite(inputs / f"field{i:03d}.tif", fields[i % len(fields)])
    for workers in map(int, _WORKERS.value):
      out = pathlib.Path(folder) / f"out{workers}"
      start = time.perf_counter()
      code = segment.main([str(inputs), "--output-dir", str(out), "--dask", "--workers",
                           str(workers), "--quiet"])
      seconds = time.perf_counter() - start
      rows.append({"workers": workers, "exit_status": code, "seconds": seconds,
                   "files_per_s": _FILES.value / seconds})
  bench_common.emit({"files": _FILES.value, "field_shape": list(fields[0].shape), "rows": rows},
                    _OUT.value)


if __name__ == "__main__":
  app.run(main)
