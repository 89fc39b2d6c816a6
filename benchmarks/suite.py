"""The benchmark suite: one entry point, one JSON file.

    python benchmarks/suite.py --mode=quick --out=benchmarks/results/suite_cpu-2core.json \
        [--workdir=workdir/demo] [--data_dir=/path/to/bbbc039] [--contended]
    python benchmarks/suite.py --mode=full --out=benchmarks/results/suite_h100.json ...

Sections (benchmarks/README.md says what every figure means):
  * segmenter: eager loop vs scan+vmap, `full_fov` vs `cropped` (and the exact and approximate
    reformulations), forward and training step, several batch sizes, memory, FLOP/s;
  * spiral_schedule: the dependency analysis of the spiral steps (critical path vs steps);
  * whole_image: SpiralNet prediction of a 520×696 field and a 2080×2784 mosaic, the U-Net
    baseline on the same images, and the scorer's strided conv vs crop-and-MLP.
`quick` sizes everything for a 2-core CPU (~10 minutes); `full` for one GPU. Every timing is
the median of several runs after a warm-up run, compile time apart; FLOP/s are stated against
the device peak in "peak" (with its source).
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_common  # noqa: E402  pylint: disable=g-import-not-at-top
import segmenter_bench  # noqa: E402  pylint: disable=g-import-not-at-top
import wholeimage_bench  # noqa: E402  pylint: disable=g-import-not-at-top

from spiralnet_jax import spiral  # noqa: E402  pylint: disable=g-import-not-at-top


def spiral_schedule() -> dict:
  """Critical path of the spiral's step DAG for the default geometry and several depths."""
  config = bench_common.default_config()
  shape = (config.regions.height, config.regions.width)
  n = int(config.segmenter.update_size)
  offsets = spiral.spiral_offsets(shape, n)
  out = {"region": list(shape), "update_size": n, "num_steps": len(offsets), "by_radius": {}}
  for k in range(5):
    radius = spiral.receptive_radius(k)
    schedule = spiral.wavefront_schedule(spiral.step_dependencies(offsets, shape, n, radius))
    out["by_radius"][str(radius)] = {
        "num_skip_modules": k, "critical_path": len(schedule),
        "widest_level": max(len(level) for level in schedule),
        "parallel_levels": [list(level) for level in schedule if len(level) > 1]}
  out["default_radius"] = spiral.receptive_radius(int(config.segmenter.num_skip_modules))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=("quick", "full"), default="quick")
  parser.add_argument("--out", default="", help="JSON path (default: print only)")
  parser.add_argument("--workdir", default="", help="trained SpiralNet (else random weights)")
  parser.add_argument("--data_dir", default=os.environ.get("SPIRALNET_BBBC039_DIR", ""),
                      help="full BBBC039 (else the fields bundled with the package)")
  parser.add_argument("--sections", default="segmenter,spiral_schedule,whole_image")
  parser.add_argument("--repeats", type=int, default=0, help="override the mode's repeats")
  parser.add_argument("--contended", action="store_true",
                      help="mark the numbers as taken on a machine shared with other jobs")
  args = parser.parse_args()
  sections = args.sections.split(",")
  result = bench_common.header(args.mode, args.contended)
  timings = {}
  for name in sections:
    start = time.perf_counter()
    if name == "segmenter":
      result[name] = segmenter_bench.run(args.mode, args.repeats)
    elif name == "spiral_schedule":
      result[name] = spiral_schedule()
    elif name == "whole_image":
      result[name] = wholeimage_bench.run(args.mode, args.workdir, args.data_dir, args.repeats)
    else:
      raise SystemExit(f"unknown section {name!r}")
    timings[name] = round(time.perf_counter() - start, 1)
  result["section_seconds"] = timings
  result["device"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
  text = json.dumps(result, indent=2)
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
