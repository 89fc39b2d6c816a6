"""SpiralNet on synthetic nuclei: both stages learn in under two minutes on a 2-core CPU.

    python train.py --config=configs/synthetic.py --workdir=workdir/synthetic
    python eval.py --workdir=workdir/synthetic

Generated fluorescence-like nuclei (spiralnet_jax.data.synthetic, 128×160 fields, few placed
touching) stand in for BBBC039. The thesis geometry is kept (52×58 regions, stride 16, 8×8
spiral updates); the segmenter is half width with one skip module and trains with the
FFN-style per-step loss, which learned the central/other distinction fastest in a short CPU
budget. tests/test_learning.py trains this config; measured on the 2-core CPU (jax 0.10.2):
train ~75-95 s, on the 4 unseen test fields pixel F1 0.955, instance F1@0.5 0.784 (P 0.967,
R 0.659, 6 merges); untrained weights score 0 on both.
"""

from configs import default


def get_config():
  """Returns the synthetic-nuclei configuration."""
  config = default.get_config()
  config.stages = ("scorer", "segmenter")
  config.data.source = "synthetic"
  config.data.synthetic_num_train = 24
  config.data.synthetic_num_eval = 4
  config.data.synthetic_shape = (128, 160)
  config.data.synthetic_touch_probability = 0.1

  config.scorer.learning_rate = 1e-3
  config.scorer.epochs = 30
  config.scorer.batch_size = 64

  config.segmenter.branch_features = 16
  config.segmenter.features = 32
  config.segmenter.skip_features = 16
  config.segmenter.num_skip_modules = 1
  config.segmenter.loss = "per_step"
  config.segmenter.learning_rate = 2e-3
  config.segmenter.epochs = 15
  config.segmenter.batch_size = 16
  config.segmenter.remat = False  # 16 regions fit in memory; remat would cost a third more.

  config.predict.region_batch_size = 64
  config.train.log_every_steps = 20
  config.train.eval_every_epochs = 1000  # Validation loss once, at the end of each stage.
  return config
