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
and cosine decay, the shipped model's percentile normalisation (configs/bbbc039_cpu.py's data
and training-loop settings; its SpiralNet stages are not trained). The measured result, wall time
and logs: results/bbbc039-cpu-unet/ (README).
"""

from configs import bbbc039_cpu


def get_config():
  """Returns the CPU-budget U-Net baseline."""
  config = bbbc039_cpu.get_config()  # Its data, normalisation and training-loop settings.
  config.stages = ("unet",)
  # 13 steps an epoch (100 fields, one crop each, batch 8), ~4 s a step on the 2-core CPU:
  # 910 steps, about an hour.
  config.unet.update(base_features=16, crop_size=256, batch_size=8, learning_rate=1e-3,
                     lr_schedule="cosine", warmup_epochs=2, epochs=70)
  config.eval.baselines = ()
  return config
