"""Tiny smoke-test config: synthetic 64×64 nuclei, tiny models, a couple of steps per stage.

    python train.py --config=configs/test.py --workdir=/tmp/spiralnet_test

Trains every stage for `train.max_steps` steps in seconds on a CPU; the losses are finite but
the models learn nothing useful. tests/test_train.py uses it.
"""

from configs import default


def get_config():
  """Returns the test configuration."""
  config = default.get_config()
  config.stages = ("scorer", "segmenter", "unet")

  config.data.source = "synthetic"
  config.data.synthetic_num_train = 2
  config.data.synthetic_num_eval = 1
  config.data.synthetic_shape = (64, 64)  # 5 × 4 = 20 regions per image.

  config.scorer.hidden = 8
  config.scorer.epochs = 1
  config.scorer.batch_size = 8

  config.segmenter.branch_features = 8
  config.segmenter.features = 8
  config.segmenter.skip_features = 8
  config.segmenter.num_skip_modules = 1
  config.segmenter.epochs = 1
  config.segmenter.batch_size = 2

  config.unet.base_features = 4
  config.unet.depth = 2
  config.unet.epochs = 1
  config.unet.batch_size = 1
  config.unet.crop_size = 32  # Training on random crops; validation on whole images.

  config.train.log_every_steps = 1
  config.train.max_steps = 2
  return config
