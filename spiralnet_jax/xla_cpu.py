"""XLA:CPU compile options for the spiral, the inference hot loop (`predict.cpu_ynn_fusion`).

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. For the `cropped` step's
convolutions (batch 8, 8-20 px windows, 3-32 channels) its kernels are slower than XLA's own:
restricting YNNPACK to elementwise fusions ("eltwise") leaves the convolutions to XLA's kernels
and makes the shipped segmenter 1.3-1.5x faster on the 2-core CPU with bitwise the same outputs
(`benchmarks/threads_bench.py`; the equality is a test). The `full_fov` step's 52x58 windows are
the other way round (18.5 against 14.0 regions/s with 2 threads), so "auto" picks "eltwise" for
`cropped` and XLA's default for `full_fov`. The scorer, the U-Net and training steps gain
nothing from it, so only the spiral is compiled with it.

The option is a debug option of the CPU backend: it is set only when JAX runs on the CPU, and
a jaxlib that does not know it (or rejects its value) compiles with XLA's defaults instead.
"""

import functools
import logging

import jax

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# Config value -> the option's value (XLA's LibraryFusionType enum); "default": no option.
_FUSIONS = {"default": None, "eltwise": "LIBRARY_FUSION_TYPE_ELTWISE"}
FUSIONS = ("auto",) + tuple(_FUSIONS)


@functools.cache
def _accepted(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler takes `option = value` (one tiny compile, cached)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(1.0).compile()
  except Exception as e:  # pylint: disable=broad-except  # jaxlib raises its own error types.
    logging.warning("XLA:CPU does not take %s=%s (%s); compiling with its defaults", option,
                    value, str(e).splitlines()[0])
    return False
  return True


def spiral_options(fusion: str, step: str) -> tuple[tuple[str, str], ...]:
  """Compile options (hashable pairs) for the spiral of `segmenter.step` = `step` under
  `predict.cpu_ynn_fusion` = `fusion`."""
  if fusion not in FUSIONS:
    raise ValueError(f"predict.cpu_ynn_fusion must be one of {FUSIONS}, got {fusion!r}")
  if fusion == "auto":
    fusion = "eltwise" if step == "cropped" else "default"
  value = _FUSIONS[fusion]
  if value is None or jax.default_backend() != "cpu" or not _accepted(_OPTION, value):
    return ()
  return ((_OPTION, value),)
