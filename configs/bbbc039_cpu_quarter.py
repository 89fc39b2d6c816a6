"""The shipped recipe at a quarter of the thesis width (8/16/8, K = 2): the fast model.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python train.py --config=configs/bbbc039_cpu_quarter.py --workdir=workdir/quarter_base
    python tools/export_weights.py workdir/quarter_base workdir/quarter_base/export
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python train.py --config=configs/bbbc039_cpu_quarter.py:finetune \
        --workdir=workdir/quarter --config.train.init_weights=workdir/quarter_base/export

The two stages of the shipped model (`configs/bbbc039_cpu.py`, then
`configs/bbbc039_cpu_finetune.py` with its prediction defaults), every number the same but the
segmenter's widths: a quarter of the thesis' features cost about a quarter of the convolutions'
FLOPs; on the 2-core CPU it trains ~1.8x and predicts ~1.8x as many regions per second as the
shipped half-width model. For the speed–accuracy trade-off of the two widths; measured results
in results/bbbc039-cpu-quarter/.
"""

import ml_collections

from configs import bbbc039_cpu
from configs import bbbc039_cpu_finetune


def get_config(stage: str = "base") -> ml_collections.ConfigDict:
  """The quarter-width recipe: "base" (configs/bbbc039_cpu.py) or "finetune"."""
  recipes = {"base": bbbc039_cpu.get_config, "finetune": bbbc039_cpu_finetune.get_config}
  if stage not in recipes:
    raise ValueError(f"configs/bbbc039_cpu_quarter.py takes 'base' or 'finetune', got {stage!r}")
  config = recipes[stage]()
  config.segmenter.branch_features = 8
  config.segmenter.features = 16
  config.segmenter.skip_features = 8
  # At this width XLA:CPU's YNNPACK convolutions are the faster ones (2-core Xeon, batch 8,
  # 3 threads: 403 against 343 regions/s; benchmarks/results/threads_cpu-2core.json).
  config.predict.cpu_ynn_fusion = "default"
  return config
