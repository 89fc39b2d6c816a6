"""The CPU demo: SpiralNet on the BBBC039 fields bundled with the package, minutes on a laptop.

    python train.py --config=configs/demo.py --workdir=workdir/demo
    python eval.py --workdir=workdir/demo

Trains the scorer and a half-width segmenter on the 4 bundled training fields (5,808 regions;
1,320 pass the threshold) and evaluates on the 2 validation and 2 test fields. Method and
geometry are the thesis' (configs/default.py); only sizes and schedules shrink to fit ~10
minutes of train + eval on 2 CPU cores: the segmenter has half the features (16/32/16, K = 2),
both stages use a 10× larger learning rate, the scorer trains 40 epochs, the segmenter 3.
Measured on the 2-core CPU (jax 0.10.2; trained at a5eb62a, evaluated at 58e8045): train 3.6 min (segmenter ~20
regions/s), eval 1.5 min; validation pixel F1 0.944 (P 0.988, R 0.904), instance F1@0.5 0.806;
test pixel F1 0.909 (P 0.997, R 0.835), instance F1@0.5 0.830, mAP 0.463 — clearly learned,
below the thesis' 0.969: the segmenter has barely learned the "other objects" channel (F1 0.05),
so touching nuclei merge (19 merges on the 2 test fields).
"""

from configs import default


def get_config():
  """Returns the demo configuration."""
  config = default.get_config()
  config.stages = ("scorer", "segmenter")
  config.data.source = "sample"

  config.scorer.learning_rate = 1e-3
  config.scorer.epochs = 40

  config.segmenter.branch_features = 16
  config.segmenter.features = 32
  config.segmenter.skip_features = 16
  config.segmenter.learning_rate = 1e-3
  config.segmenter.epochs = 3
  config.segmenter.batch_size = 16
  # Batches of 16 regions fit in memory without rematerialisation, which saves a third.
  config.segmenter.remat = False

  config.train.log_every_steps = 20
  config.train.eval_every_epochs = 1000  # Validation loss once, at the end of each stage.
  return config
