"""The thesis' U-Net baseline on the full BBBC039 training split (thesis §4.4).

    python train.py --config=configs/unet.py --workdir=workdir/unet \
        --config.data.data_dir=/path/to/bbbc039
    python eval.py --workdir=workdir/unet

Ronneberger U-Net, 4 levels (64 … 1024 features), one sigmoid output, BCE on the foreground,
Adam 1e-5, 100 epochs, batch 4 of whole 520×696 fields (reflect-padded to 528×704 for the
poolings, padding excluded from the loss). Needs a GPU. Expected on the test split (thesis
Table 3): pixel F1 ≈ 0.965 (P 0.969, R 0.961); instances are connected components, so touching
nuclei merge.
"""

from configs import default


def get_config():
  """Returns the thesis U-Net configuration."""
  config = default.get_config()
  config.stages = ("unet",)
  config.data.source = "bbbc039"
  return config
