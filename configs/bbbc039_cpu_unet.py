"""The U-Net baseline under the shipped model's protocol and CPU budget (all 100 BBBC039
training fields, the 2-core CPU, well inside the 150-minute budget of the shipped recipe).

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python train.py --config=configs/bbbc039_cpu_unet.py --workdir=workdir/bbbc039_cpu_unet \
        --config.data.data_dir=/path/to/bbbc039
    python eval.py --config=configs/bbbc039_cpu_unet.py --workdir=workdir/bbbc039_cpu_unet \
        --splits=validation,test

The thesis' U-Net (4 levels, BCE on the foreground, instances = connected components) at a
quarter of its width (16 ... 256 features: the thesis width needs ~3 s per forward pass of one
field on this CPU), trained on random 256 x 256 crops in batches of 8 with Adam at 1e-3, warm-up
and cosine decay, the shipped model's percentile normalisation. The measured result, wall time
and logs: results/bbbc039-cpu-unet/ (README).
"""

from configs import default


def get_config():
  """Returns the CPU-budget U-Net baseline."""
  config = default.get_config()
  config.stages = ("unet",)
  config.data.source = "bbbc039"
  config.data.normalize_percentiles = (1.0, 99.8)  # As the shipped SpiralNet.
  config.unet.base_features = 16
  config.unet.crop_size = 256
  config.unet.batch_size = 8
  config.unet.learning_rate = 1e-3
  config.unet.lr_schedule = "cosine"
  config.unet.warmup_epochs = 2
  # 13 steps an epoch (100 fields, one crop each, batch 8), ~4 s a step on the 2-core CPU:
  # 910 steps, about an hour.
  config.unet.epochs = 70
  config.eval.baselines = ()
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 200
  config.train.max_to_keep = 2
  config.train.eval_every_epochs = 1000
  return config
