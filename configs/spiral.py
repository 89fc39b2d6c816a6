"""SpiralNet as in the thesis: scorer then segmenter on the full BBBC039 training split.

    python train.py --config=configs/spiral.py --workdir=workdir/spiral \
        --config.data.data_dir=/path/to/bbbc039
    python eval.py --workdir=workdir/spiral

Every number is the thesis' as docs/design.md pins it down (spiralnet_jax/defaults.py): 52×58 regions at stride 16, scorer (hidden
128, Adam 1e-4, 100 epochs, batch 256), threshold 0.4, segmenter (K = 2, n = 8, Adam 1e-4,
100 epochs, batch 32, BCE on the final mask, exact cropped steps). Needs a GPU: ~29,650
training regions pass the threshold, ~2.7 M region-spirals over 100 epochs. Expected on the
test split (thesis Table 2): pixel F1 ≈ 0.969 (P 0.963, R 0.977).
"""

from configs import default


def get_config():
  """Returns the thesis SpiralNet configuration."""
  config = default.get_config()
  config.stages = ("scorer", "segmenter")
  config.data.source = "bbbc039"
  # A GPU wants big batches of spirals; on a CPU predict with --config.predict.region_batch_size=8
  # (spiralnet-segment --batch-size 8).
  config.predict.region_batch_size = 256
  return config
