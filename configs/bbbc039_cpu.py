"""The shipped model's recipe: SpiralNet on all 100 BBBC039 training fields, 2-core CPU.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python train.py --config=configs/bbbc039_cpu.py --workdir=workdir/bbbc039_cpu \
        --config.data.data_dir=/path/to/bbbc039
    python eval.py --config=configs/bbbc039_cpu.py --workdir=workdir/bbbc039_cpu --splits=test

Half-width segmenter (16/32/16, K = 2) and the thesis geometry; percentile normalisation, a
seeded initial mask, per-step loss, flips, warm-up + cosine rate (each departure from the thesis
and why: docs/design.md; the validation ablation: results/bbbc039-cpu-recipe/ablation.md).
Measured (2-core CPU, jax 0.10.2): training 93 min (scorer 2.3, segmenter 90); test split pixel
F1 0.970 (P 0.970, R 0.969), instance F1@0.5 0.897, pooled mAP 0.686, DSB2018 0.687, 313
merges, other-objects F1 0.828; validation 0.963 / 0.896 / 0.668 (results/bbbc039-cpu-recipe/).
Resuming is bitwise exact with the same device count (2 here).
"""

from configs import demo


def get_config():
  """Returns the CPU recipe for the shipped BBBC039 model."""
  config = demo.get_config()
  config.data.source = "bbbc039"
  config.data.max_images = 0
  # Robust to hot and saturated pixels (see spiralnet_jax.data.intensity).
  config.data.normalize_percentiles = (1.0, 99.8)

  config.scorer.epochs = 20

  config.segmenter.seed_radius = 3
  config.segmenter.loss = "per_step"
  config.segmenter.flip = True
  config.segmenter.batch_size = 16
  config.segmenter.learning_rate = 1e-3
  config.segmenter.lr_schedule = "cosine"
  config.segmenter.warmup_epochs = 0.05
  # 5 epochs of 27,000 of the 29,673 label-selected regions (a fresh random subset each epoch):
  # 135k region-spirals, what fits the time budget at ~29 regions/s.
  config.segmenter.epochs = 5
  config.segmenter.max_train_regions = 27000

  # eval.py scores the classical baseline beside the model, under the same protocol.
  config.eval.baselines = ("otsu_watershed",)

  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 200
  config.train.max_to_keep = 2
  config.train.eval_every_epochs = 1000
  config.train.max_eval_regions = 2000
  return config
