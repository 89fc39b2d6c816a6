"""What every benchmark script shares: the repository's default config and its git commit."""

import importlib.util
import json
import pathlib
import subprocess

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def default_config() -> ml_collections.ConfigDict:
  """configs/default.py's config (loaded by path: benchmarks run as plain scripts)."""
  spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def git_commit() -> str:
  """HEAD's commit, with "+dirty" if the working tree has changes; "unknown" outside git."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    # Untracked files (e.g. the JSON a benchmark is writing) do not make the code dirty.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


# --- what every suite section shares -------------------------------------------------------------
import os  # noqa: E402  (kept next to the helpers that need them)
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402

# Dense (no sparsity) peak FLOP/s of the accelerators the project runs on, from NVIDIA's H100
# and H200 datasheets (nvidia.com/en-us/data-center/h100, .../h200; SXM form factor): fp32
# "non-tensor" 67 TFLOP/s; bf16 tensor core 989.5 TFLOP/s (the datasheet's 1,979 is with 2:4
# sparsity); TF32 tensor core 494.7 TFLOP/s. The H200 has the H100's compute (more, faster HBM).
GPU_PEAK_TFLOPS = {
    "H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.5,
             "source": "NVIDIA H100 SXM datasheet, dense"},
    "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.5,
             "source": "NVIDIA H200 SXM datasheet, dense (same SMs as H100)"},
}


def cpu_info() -> dict[str, Any]:
  """Model, vendor, logical cores, nominal MHz and SIMD flags from /proc/cpuinfo."""
  info = {"model": None, "vendor": "", "mhz": None, "flags": []}
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    lines = []
  for line in lines:
    key, _, value = (part.strip() for part in line.partition(":"))
    if key == "model name" and info["model"] is None:
      info["model"] = value
    elif key == "vendor_id" and not info["vendor"]:
      info["vendor"] = value
    elif key == "cpu MHz" and info["mhz"] is None:
      info["mhz"] = float(value)
    elif key == "flags" and not info["flags"]:
      info["flags"] = sorted(f for f in value.split()
                             if f.startswith("avx") or f in ("fma", "sse4_2"))
  info["model"] = info["model"] or platform.processor()
  info["cores"] = os.cpu_count()
  return info


def cpu_peak_gflops(info: dict[str, Any]) -> dict[str, Any]:
  """Theoretical fp32 peak: cores x clock x FLOPs per cycle (2 FMA pipes x SIMD lanes x 2).

  A ceiling, not a promise: the clock is /proc/cpuinfo's current value (boost not counted),
  and "cores" are the logical CPUs this machine gives us (vCPUs may be SMT siblings).
  """
  flags, vendor = set(info["flags"]), info["vendor"]
  if "avx512f" in flags and vendor == "AuthenticAMD":
    # Zen 4 runs a 512-bit FMA as two halves on its two 256-bit FMA pipes.
    per_cycle, why = 32, "AMD with AVX-512 (Zen 4): 2 x 256-bit FMA pipes = 2 x 8 lanes x 2"
  elif "avx512f" in flags:
    per_cycle, why = 64, "AVX-512 with 2 FMA units: 2 x 16 lanes x 2"
  elif "fma" in flags and "avx2" in flags:
    per_cycle, why = 32, "AVX2 + FMA, 2 FMA units: 2 x 8 lanes x 2"
  else:
    per_cycle, why = 8, "SSE, no FMA: 4 lanes x (mul + add)"
  ghz = (info["mhz"] or 0.0) / 1e3
  return {"float32_gflops": round(info["cores"] * ghz * per_cycle, 1),
          "flops_per_cycle_per_core": per_cycle, "ghz": round(ghz, 3), "cores": info["cores"],
          "source": f"theoretical: {info['cores']} cores x {ghz:.2f} GHz x {per_cycle} ({why})",
          "note": "clock as /proc/cpuinfo reports it now; boost clocks can exceed it, so "
                  "fractions of this peak can exceed 1 and are approximate"}


def device_peak() -> dict[str, Any]:
  """The device's peak FLOP/s (GFLOP/s units) and where the figure comes from."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    return cpu_peak_gflops(cpu_info())
  for name, peak in GPU_PEAK_TFLOPS.items():
    if name in device.device_kind:
      return {"float32_gflops": peak["float32"] * 1e3, "tf32_gflops": peak["tf32"] * 1e3,
              "bfloat16_gflops": peak["bfloat16"] * 1e3, "source": peak["source"]}
  return {"float32_gflops": None, "source": f"no peak known for {device.device_kind}"}


def header(mode: str, contended: bool) -> dict[str, Any]:
  """Device, versions, commit and load: the JSON header of every benchmark."""
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {
      "mode": mode,
      "contended": contended,
      "git_commit": git_commit(),
      "device": {"backend": jax.default_backend(), "kind": device.device_kind,
                 "count": jax.device_count(), "cpu": cpu_info(),
                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                   "flax": flax.__version__, "numpy": np.__version__,
                   "python": platform.python_version()},
      "peak": device_peak(),
  }


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
  """Seconds of the first call (compile included), and median/min of `repeats` later calls."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return {"first_s": round(first, 4), "median_s": round(statistics.median(times), 4),
          "min_s": round(min(times), 4), "repeats": repeats}


def compiled_with_time(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
  """(AOT-compiled `jax.jit(fn)` for `args`, compile seconds)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def cost_flops(compiled: Any) -> float | None:
  """XLA's FLOP count of a compiled function (a scan/while body is counted once)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None else None


def memory(compiled: Any = None) -> dict[str, Any]:
  """Peak memory figures: XLA's temp buffer size for `compiled`, the device allocator's
  high-water mark (None where the backend does not report it, e.g. CPU) and process peak RSS
  (a high-water mark over the whole process so far, so it only grows across a suite)."""
  out = {}
  if compiled is not None:
    try:
      analysis = compiled.memory_analysis()
      out["xla_temp_mb"] = round(analysis.temp_size_in_bytes / 2**20, 2)
      out["xla_args_out_mb"] = round((analysis.argument_size_in_bytes
                                      + analysis.output_size_in_bytes) / 2**20, 2)
    except (AttributeError, NotImplementedError):
      out["xla_temp_mb"] = None
  stats = jax.local_devices()[0].memory_stats()
  out["device_peak_mb"] = (round(stats["peak_bytes_in_use"] / 2**20, 1)
                           if stats and "peak_bytes_in_use" in stats else None)
  out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  return out


def emit(record: dict, out: str = "") -> None:
  """Prints `record` as JSON with the machine's identity (device, jax, commit); writes it to `out`
  too when given."""
  record = {**record, "commit": git_commit(), "device": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(), "jax": jax.__version__}
  text = json.dumps(record, indent=2)
  print(text)
  if out:
    pathlib.Path(out).write_text(text + "\n")


def override(config: ml_collections.ConfigDict, item: str) -> None:
  """Sets `section.field=JSON` in `config`, the value cast to the field's type (a JSON list to
  a tuple field, 1 to a float field)."""
  key, value = item.split("=", 1)
  section, field = key.split(".")
  old, new = config[section][field], json.loads(value)
  config[section][field] = new if old is None else type(old)(new)
