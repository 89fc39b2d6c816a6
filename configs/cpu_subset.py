"""The longest honest CPU run: the demo's CPU-sized models on 16 BBBC039 training fields.

    python train.py --config=configs/cpu_subset.py --workdir=workdir/cpu_subset \
        --config.data.data_dir=/path/to/bbbc039
    python eval.py --config=configs/cpu_subset.py --workdir=workdir/cpu_subset \
        --config.data.data_dir=/path/to/bbbc039 --config.data.max_images=0 --splits=test

Trains on the first 16 fields of the official training split (validation loss on the first 16
validation fields) for about 25 minutes on a 2-core CPU, and is evaluated on the whole official
test split (50 fields). What it measured is in results/bbbc039-cpu/README.md.
"""

from configs import demo


def get_config():
  """Returns the CPU-subset configuration."""
  config = demo.get_config()
  config.data.source = "bbbc039"
  config.data.max_images = 16
  config.scorer.epochs = 40
  config.segmenter.epochs = 6
  config.train.log_every_steps = 50
  return config
