"""SpiralNet learns: both stages trained briefly on synthetic nuclei segment unseen ones.

This is the honest end-to-end check of the method: real training (spiralnet_jax.training), real
prediction (scorer → spiral segmenter → continuation → assembly), real metrics, on images
the model never saw. The same pipeline with untrained weights must score far lower.
"""

import jax
import pytest

from configs import synthetic as synthetic_config
from spiralnet_jax import data as data_lib
from spiralnet_jax import metrics
from spiralnet_jax import predict
from spiralnet_jax import stages
from spiralnet_jax.training import loop


def _scores(predictor, examples):
  pairs = [(ex.labels, predict.predict_instances(predictor, ex.image)) for ex in examples]
  pixel = metrics.pixel_scores(pairs)
  instance = metrics.instance_scores(pairs, thresholds=(0.5,))
  return pixel["f1"], float(instance["f1"][0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = synthetic_config.get_config()
  workdir = tmp_path_factory.mktemp("synthetic")
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def test_trained_spiralnet_segments_unseen_synthetic_nuclei(trained):
  config, workdir = trained
  test_examples = data_lib.load_examples(config.data, "test")
  train_names = {ex.name for ex in data_lib.load_examples(config.data, "training")}
  assert not train_names & {ex.name for ex in test_examples}
  predictor = predict.Predictor.from_workdir(workdir)
  pixel_f1, instance_f1 = _scores(predictor, test_examples)
  print(f"trained: pixel F1 {pixel_f1:.3f}, instance F1@0.5 {instance_f1:.3f}")
  assert pixel_f1 >= 0.85
  # The bar the synthetic recipe was built to. Measured 0.901 (0.887 and 0.923 at seeds 1 and 2; configs/synthetic.py),
  # below the 0.937 of the true foreground's connected components: touching nuclei still merge.
  assert instance_f1 >= 0.8


def test_untrained_spiralnet_scores_far_lower(trained):
  config, _ = trained
  test_examples = data_lib.load_examples(config.data, "test")
  rng_scorer, rng_segmenter = jax.random.split(jax.random.PRNGKey(1))
  predictor = predict.Predictor.from_params(
      config, stages.get("scorer").init_params(config, rng_scorer),
      stages.get("segmenter").init_params(config, rng_segmenter))
  pixel_f1, instance_f1 = _scores(predictor, test_examples)
  print(f"untrained: pixel F1 {pixel_f1:.3f}, instance F1@0.5 {instance_f1:.3f}")
  assert pixel_f1 < 0.5
  assert instance_f1 < 0.3
