"""Training loop: one step per stage, checkpoints, exact resume, config flags, stage data.

Faults (kills, damaged checkpoints, NaN, config changes) are in test_faults.py; devices in
test_sharding.py.
"""

import json
import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import test as test_config
from spiralnet_jax import checkpoints
from spiralnet_jax import data as data_lib
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import stages
from spiralnet_jax import train_state
from spiralnet_jax.training import input_pipeline
from spiralnet_jax.training import loop
from spiralnet_jax.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(stage, **train):
  config = test_config.get_config()
  config.stages = (stage,)
  for stage_name in ("scorer", "segmenter", "unet"):
    config[stage_name].epochs = 4
  for key, value in train.items():
    config.train[key] = value
  return config


def _records(workdir, stage):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["stage"] == stage]


@pytest.mark.parametrize("stage", ["scorer", "segmenter", "unet"])
def test_one_step_per_stage_writes_checkpoint_config_and_finite_metrics(stage, tmp_path):
  config = _config(stage, max_steps=1)
  results = loop.train_and_evaluate(config, tmp_path)

  assert list(results) == [stage]
  assert results[stage]["step"] == 1
  assert sorted(p.name for p in checkpoints.checkpoint_dir(tmp_path, stage).iterdir()) == ["1"]
  assert json.loads((tmp_path / "config.json").read_text())["stages"] == [stage]
  records = _records(tmp_path, stage)
  train_records = [r for r in records if "loss" in r]
  val_records = [r for r in records if "val_loss" in r]
  assert [r["step"] for r in train_records] == [1]
  assert [r["step"] for r in val_records] == [1]
  assert math.isfinite(train_records[0]["loss"]) and math.isfinite(val_records[0]["val_loss"])
  assert train_records[0]["lr"] == getattr(config, stage).learning_rate
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  # The checkpoint restores into the same tree of parameters.
  params = checkpoints.load_params(tmp_path, stage, config)
  abstract = train_state.abstract_state(stage, config).params
  assert jax.tree.structure(params) == jax.tree.structure(abstract)


# Steps per epoch with configs/test.py: scorer 5 (40 regions, batch 8), segmenter 2, unet 2.
@pytest.mark.parametrize("stage, stop, end", [("scorer", 3, 7), ("segmenter", 1, 3),
                                              ("unet", 1, 3)])
def test_restart_resumes_at_checkpoint_and_matches_uninterrupted_run(stage, stop, end, tmp_path):
  stopped, straight = tmp_path / "stopped", tmp_path / "straight"
  loop.train_and_evaluate(_config(stage, max_steps=stop), stopped)
  assert checkpoints.checkpoint_dir(stopped, stage).joinpath(str(stop)).is_dir()
  loop.train_and_evaluate(_config(stage, max_steps=end), stopped)
  loop.train_and_evaluate(_config(stage, max_steps=end), straight)

  # The second run started at step stop + 1, not 1, and crossed an epoch boundary.
  steps = [r["step"] for r in _records(stopped, stage) if "loss" in r]
  assert steps == list(range(1, end + 1))
  assert [r["epoch"] for r in _records(stopped, stage) if "loss" in r][-1] > 1
  resumed = checkpoints.load_params(stopped, stage, _config(stage))
  uninterrupted = checkpoints.load_params(straight, stage, _config(stage))
  assert jax.tree.structure(resumed) == jax.tree.structure(uninterrupted)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _train_py(tmp_path, *overrides):
  command = [sys.executable, str(REPO / "train.py"), "--config=configs/test.py",
             f"--workdir={tmp_path}", "--config.stages=('scorer',)",
             "--config.train.max_steps=1", *overrides]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False)


def test_config_override_reaches_training(tmp_path):
  proc = _train_py(tmp_path, "--config.scorer.learning_rate=0.0123")
  assert proc.returncode == 0, proc.stderr
  assert json.loads((tmp_path / "config.json").read_text())["scorer"]["learning_rate"] == 0.0123
  # The learning rate the loop logs is the one it trained with.
  assert [r["lr"] for r in _records(tmp_path, "scorer") if "lr" in r] == [0.0123]
  assert str(checkpoints.checkpoint_dir(tmp_path, "scorer")) in proc.stdout


def test_unknown_config_field_is_a_one_line_error_naming_it(tmp_path):
  proc = _train_py(tmp_path, "--config.scorer.learnin_rate=0.1")
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "'scorer.learnin_rate'" in lines[0] and "learning_rate" in lines[0]
  assert not (tmp_path / "config.json").exists()


def test_epoch_batches_is_a_seeded_permutation_of_fixed_batch_shape():
  plan = input_pipeline.epoch_batches(10, 4, seed=0, stage="scorer", epoch=3)
  assert plan.shape == (3, 4)
  assert sorted(set(plan.ravel().tolist())) == list(range(10))
  assert np.array_equal(plan.ravel()[10:], plan.ravel()[:2])  # Last batch filled from the start.
  np.testing.assert_array_equal(
      plan, input_pipeline.epoch_batches(10, 4, seed=0, stage="scorer", epoch=3))
  batches = input_pipeline.epoch_batches
  assert not np.array_equal(plan, batches(10, 4, seed=0, stage="scorer", epoch=4))
  assert not np.array_equal(plan, batches(10, 4, seed=1, stage="scorer", epoch=3))
  assert input_pipeline.epoch_batches(3, 8, seed=0, stage="unet", epoch=0).shape == (1, 3)
  subset = input_pipeline.epoch_batches(10, 2, seed=0, stage="segmenter", epoch=0, max_items=4)
  assert subset.shape == (2, 2) and len(set(subset.ravel().tolist())) == 4


def _training_cuts(config):
  """The training examples and, independently of the input pipeline, every region's targets."""
  geom = regions_lib.RegionGeometry.from_config(config.regions)
  examples = data_lib.load_examples(config.data, "training")
  return examples, [regions_lib.cut_and_label(data_lib.normalize(ex.image), ex.labels, geom)
                    for ex in examples]


def test_segmenter_data_is_label_selected_regions_with_central_labels():
  config = test_config.get_config()
  examples, cuts = _training_cuts(config)
  stage = loop.build_stage("segmenter", config, examples, examples[:1])
  scores = np.concatenate([c.scores for c in cuts])
  expected = np.flatnonzero(scores > config.scorer.threshold)
  assert len(expected) > 0
  np.testing.assert_array_equal(stage.train.selected, expected)
  batch = stage.train.batch(np.arange(len(expected)), None)
  np.testing.assert_array_equal(batch["regions"],
                                np.concatenate([c.regions for c in cuts])[expected])
  np.testing.assert_array_equal(batch["labels"],
                                np.concatenate([c.labels for c in cuts])[expected])


@pytest.mark.parametrize("bias, selects_all", [(0.5, True), (0.3, False)])
def test_segmenter_trains_on_regions_the_scorer_passes(bias, selects_all):
  # A scorer with zero weights scores every region `bias`: all pass t = 0.4, or none does.
  config = test_config.get_config()
  config.segmenter.train_regions = "scorer"
  examples = data_lib.load_examples(config.data, "training")
  params = jax.tree.map(np.zeros_like, stages.get("scorer").init_params(config, jax.random.key(0)))
  params["out"]["bias"] = np.array([bias], np.float32)
  build = lambda: loop.build_stage("segmenter", config, examples, examples[:1],
                                   scorer_params=lambda: params)
  if selects_all:
    stage = build()
    np.testing.assert_array_equal(stage.train.selected, np.arange(len(stage.train.regions)))
  else:
    with pytest.raises(ValueError, match="no training region's scorer score passes"):
      build()


def test_scorer_data_pairs_every_region_with_its_label_score():
  config = test_config.get_config()
  examples, cuts = _training_cuts(config)
  stage = loop.build_stage("scorer", config, examples, examples[:1])
  batch = stage.train.batch(np.arange(len(stage.train)), None)
  np.testing.assert_array_equal(batch["regions"], np.concatenate([c.regions for c in cuts]))
  np.testing.assert_array_equal(batch["scores"], np.concatenate([c.scores for c in cuts]))


def test_unet_data_pads_with_zero_weight_and_crops_inside():
  image = np.arange(30 * 37, dtype=np.uint16).reshape(30, 37)
  labels = (np.arange(30 * 37).reshape(30, 37) % 3 == 0).astype(np.int32)
  data = input_pipeline.UNetData([data_lib.Example("a", image, labels)], depth=2, crop_size=0)
  batch = data.batch(np.array([0]), None)
  assert batch["images"].shape == (1, 32, 40, 1)
  assert batch["weight"].sum() == 30 * 37 and batch["weight"][0, :30, :37].all()
  np.testing.assert_array_equal(batch["images"][0, :30, :37, 0], data_lib.normalize(image))
  np.testing.assert_array_equal(batch["foreground"][0, :30, :37, 0], labels > 0)

  cropped = input_pipeline.UNetData([data_lib.Example("a", image, labels)], depth=2, crop_size=16)
  crop = cropped.batch(np.array([0, 0]), np.random.default_rng(0))
  assert crop["images"].shape == (2, 16, 16, 1)


# --- recipe options: flips, touching regions, learning-rate schedules ------------------------------

def test_flip_regions_flips_each_row_as_told():
  regions = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  flips = np.array([[True, False], [True, True]])
  out = input_pipeline.flip_regions(regions, flips)
  np.testing.assert_array_equal(out[0], regions[0, ::-1])
  np.testing.assert_array_equal(out[1], regions[1, ::-1, ::-1])
  np.testing.assert_array_equal(regions, np.arange(24).reshape(2, 3, 4))  # Input untouched.


def test_flipped_batches_flip_labels_with_images_and_only_in_training():
  config = test_config.get_config()
  config.segmenter.flip = True
  examples = data_lib.load_examples(config.data, "training")
  stage = loop.build_stage("segmenter", config, examples, examples[:1])
  items = np.arange(len(stage.train))
  plain = stage.train.batch(items, None)
  flipped = stage.train.batch(items, np.random.default_rng(0))
  instances = stage.train.regions.instance_regions(stage.train.selected[items])
  flips = np.random.default_rng(0).integers(0, 2, size=(len(items), 2)).astype(bool)
  np.testing.assert_array_equal(flipped["regions"],
                                input_pipeline.flip_regions(plain["regions"], flips))
  geom = stage.train.regions.geom
  np.testing.assert_array_equal(flipped["labels"], regions_lib.central_labels(
      input_pipeline.flip_regions(instances, flips), geom))
  assert flips.any() and not np.array_equal(flipped["regions"], plain["regions"])


def test_touching_items_hand_made():
  # 9×9 regions every 4 px: region centres (in image coordinates) lie on multiples of 4.
  geom = regions_lib.RegionGeometry(height=9, width=9, stride=4, pad=4, score_window=3)

  def touching(lab, centres):
    data = input_pipeline.RegionData(
        [data_lib.Example("x", np.zeros((20, 20), np.uint16), lab)], geom)
    where = [int(np.flatnonzero((data.origins[0] == np.array(c) + geom.pad - geom.centre)
                                .all(axis=1))[0]) for c in centres]
    return input_pipeline.touching_items(input_pipeline.SegmenterData(data, np.array(where)))

  lab = np.zeros((20, 20), np.int32)
  lab[6:11, 6:11] = 1    # The nucleus at region centre (8, 8) ...
  lab[6:11, 11:14] = 2   # ... touches nucleus 2, the central one of the region at (8, 12).
  lab[16:19, 16:19] = 3  # Alone.
  np.testing.assert_array_equal(touching(lab, [(8, 8), (8, 12), (16, 16), (0, 0)]),
                                [True, True, False, False])
  lab[6:11, 11] = 0      # One background column apart: no longer touching.
  np.testing.assert_array_equal(touching(lab, [(8, 8), (8, 12)]), [False, False])


def test_touching_repeat_adds_touching_regions_again():
  config = test_config.get_config()
  config.data.source, config.data.max_images = "sample", 1  # A real, crowded BBBC039 field.
  examples = data_lib.load_examples(config.data, "training")
  once = loop.build_stage("segmenter", config, examples, examples[:1]).train
  config.segmenter.touching_repeat = 3
  thrice = loop.build_stage("segmenter", config, examples, examples[:1]).train
  touching = once.selected[input_pipeline.touching_items(once)]
  assert 0 < len(touching) < len(once)
  np.testing.assert_array_equal(thrice.selected,
                                np.concatenate([once.selected, touching, touching]))


def test_cosine_schedule_warms_up_then_decays_to_zero():
  lr = train_state.learning_rate_fn(1e-3, "cosine", total_steps=100, warmup_steps=10)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(lr(55)), 5e-4, rtol=1e-5)  # Half way down the cosine.
  assert float(lr(100)) == 0.0
  assert train_state.learning_rate_fn(1e-3, "constant", 100, 10) == 1e-3
  with pytest.raises(ValueError, match="lr_schedule"):
    train_state.learning_rate_fn(1e-3, "linear", 100, 10)


def test_epochs_may_change_on_resume_only_under_a_constant_rate():
  old = json.loads(test_config.get_config().to_json_best_effort())
  new = json.loads(test_config.get_config().to_json_best_effort())
  new["segmenter"]["epochs"] += 1
  assert workdir_lib.config_changes(old, new) == []
  old["segmenter"]["lr_schedule"] = new["segmenter"]["lr_schedule"] = "cosine"
  assert workdir_lib.config_changes(old, new) == ["segmenter.epochs: 1 -> 2"]


def test_init_weights_start_a_stage_from_exported_parameters(tmp_path):
  from spiralnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  config = _config("segmenter", max_steps=1)
  config.segmenter.learning_rate = 0.0  # The one step leaves the parameters as they start.
  seeded = jax.tree.map(lambda x: np.asarray(x) + 0.5,
                        stages.get("segmenter").init_params(config, jax.random.key(3)))
  weights = tmp_path / "weights"
  weights.mkdir()
  pretrained.save_params(weights / "segmenter.npz", seeded)
  config.train.init_weights = str(weights)
  loop.train_and_evaluate(config, tmp_path / "run")
  got = checkpoints.load_params(tmp_path / "run", "segmenter", config)
  jax.tree.map(np.testing.assert_array_equal, got, seeded)
  # Weights of another model size are refused with what differs.
  config.segmenter.features = 4
  with pytest.raises(ValueError, match="does not fit this config's segmenter"):
    loop.train_and_evaluate(config, tmp_path / "other")
