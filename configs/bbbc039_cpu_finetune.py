"""Fine-tuning the shipped model to separate touching nuclei: boundary-weighted loss, 2 epochs.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python train.py --config=configs/bbbc039_cpu_finetune.py \
        --workdir=workdir/bbbc039_cpu_finetune --config.data.data_dir=/path/to/bbbc039

Starts from the weights of `configs/bbbc039_cpu.py` (`train.init_weights`, the package's
spiralnet_jax/weights/bbbc039_cpu by default) and trains the segmenter 2 more epochs of 27,000
regions with pixels where touching nuclei meet weighted 6× (`segmenter.boundary_weight` 5,
radius 3 px): on the base model most remaining merges are nuclei that no candidate separates
(tools/error_sources.py), which assembly cannot undo. The scorer is kept as shipped (one epoch
at learning rate 0, so the workdir holds both stages). Both recipes together stay within the
150-minute CPU budget (93.2 + 41.2 min, the latter sharing the CPU with evaluations).
Measured (results/bbbc039-cpu-recipe/finetune/shipped_eval/, test split, the prediction
defaults below; `python tools/eval_weights.py` with the exported weights): pixel F1 0.967,
instance F1@0.5 0.927, pooled mAP 0.734, 123 merges, other-objects F1 0.833; the thesis path
with the same weights: 0.969 / 0.904 / 0.702, 257 merges.
"""

from configs import bbbc039_cpu
from spiralnet_jax import pretrained


def get_config():
  """Returns the fine-tuning recipe (base: the shipped CPU recipe)."""
  config = bbbc039_cpu.get_config()
  config.train.init_weights = str(pretrained.weights_dir("bbbc039_cpu"))
  # The scorer unchanged: Adam at rate 0 leaves every parameter as loaded.
  config.scorer.learning_rate = 0.0
  config.scorer.epochs = 1
  config.segmenter.boundary_weight = 5.0
  config.segmenter.boundary_radius = 3
  config.segmenter.epochs = 2
  config.segmenter.learning_rate = 3e-4
  config.segmenter.lr_schedule = "cosine"
  config.segmenter.warmup_epochs = 0.05

  # Prediction (chosen on validation, tools/recipe/seeding_comparison.py; results/
  # bbbc039-cpu-recipe/seeding/): one region per peak of the stride-4 score map, a second look
  # at two-lobed candidates, and assembly that withdraws mergers. The thesis path is
  # --config.predict.seeds=grid --config.predict.lobes=False
  # --config.assembly.split_containers=False --config.assembly.split_valleys=False
  # --config.continuation.max_moves=4.
  config.predict.seeds = "peaks"
  config.predict.lobes = True
  config.predict.lobe_min_distance = 4
  config.predict.lobe_min_depth = 2.0
  # Lobe regions only for candidates with a neck (solidity ≤ 0.93): validation F1@0.5 0.9276
  # and 130 merges against 0.9275 and 131 for every two-lobed candidate, 1.33x faster
  # (results/bbbc039-cpu-recipe/seeding/validation_finetuned_lobes_d4_h2_sol*.json).
  config.predict.lobe_max_solidity = 0.93
  # A lobe region's object is not followed over region edges, and an object at most 2 regions
  # on (session 10; results/bbbc039-cpu-recipe/seeding/validation_finetuned_*max_moves*.json,
  # *follow_lobes_off*.json): validation F1@0.5 0.9271 and 118 merges against 0.9276 and 130,
  # 226 spirals a field against 262 (1.14x faster, benchmarks/results/predict_ab_cpu-2core.json).
  # A cut-off lobe object overlaps its neighbour's less, so the split rule withdraws more mergers.
  config.predict.follow_lobes = False
  config.continuation.max_moves = 2
  config.assembly.split_containers = True
  config.assembly.split_containment = 0.5
  # Instances split along dark valleys in the image (spiralnet_jax.valleys; session 11): the
  # mergers no candidate separates. Validation F1@0.5 0.9264 and 110 merges against 0.9271 and
  # 118 (ratio 0.86: the fewest merges within 0.001 of the best F1; 0.84: 0.9271, 112; 0.88:
  # 0.9241, 108; results/bbbc039-cpu-recipe/seeding/valleys_ratio_validation.json).
  config.assembly.split_valleys = True
  config.assembly.valley_ratio = 0.86
  return config
