"""Data-parallel training over a `jax.sharding.Mesh`: 2 forced CPU devices against 1.

jax in the pytest process is already initialised with one CPU device, so the 2-device run is a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=2 set before jax is imported.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import test as test_config
from spiralnet_jax import checkpoints
from spiralnet_jax import data as data_lib
from spiralnet_jax import stages
from spiralnet_jax.training import input_pipeline
from spiralnet_jax.training import loop
from spiralnet_jax.training import sharding as sharding_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("scorer", "segmenter", "unet")


def _config():
  config = test_config.get_config()
  config.stages = STAGES
  for stage in STAGES:
    config[stage].epochs = 4
  config.unet.batch_size = 2  # Global batches: scorer 8, segmenter 2, unet 2.
  config.train.max_steps = 3
  return config


_TWO_DEVICE_RUN = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from spiralnet_jax import data as data_lib
    from spiralnet_jax.training import errors as training_errors
    from spiralnet_jax.training import loop
    from spiralnet_jax.training import sharding as sharding_lib
    from tests import test_sharding
    config = test_sharding._config()
    loop.train_and_evaluate(config, sys.argv[1])

    mesh = sharding_lib.data_mesh()
    examples = data_lib.load_examples(config.data, "training")
    stage = loop.build_stage("scorer", config, examples, examples[:1])
    batch = sharding_lib.shard_batch(stage.train, np.arange(8), None,
                                     NamedSharding(mesh, PartitionSpec("data")))
    shards = sorted((s.device.id, s.index[0].start, s.index[0].stop)
                    for s in batch["regions"].addressable_shards)
    config.scorer.batch_size = 3
    try:
      loop.train_and_evaluate(config, sys.argv[2])
      error = None
    except training_errors.BatchSizeError as e:
      error = str(e)
    print(json.dumps({"devices": jax.device_count(), "mesh": mesh.size, "shards": shards,
                      "error": error}))
""")


@pytest.fixture(scope="module")
def two_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two_devices")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _TWO_DEVICE_RUN, str(workdir / "run"), str(workdir / "odd")],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir / "run", json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_devices_split_each_batch_in_halves(two_device_run):
  _, report = two_device_run
  assert report["devices"] == 2 and report["mesh"] == 2
  assert report["shards"] == [[0, 0, 4], [1, 4, 8]]


def test_batch_that_does_not_split_over_the_devices_is_a_clear_error(two_device_run):
  _, report = two_device_run
  assert report["error"] == ("scorer: a global batch of 3 items does not split over 2 devices; "
                             "make scorer.batch_size a multiple of 2")


@pytest.mark.parametrize("stage", STAGES)
def test_two_devices_match_one_device_after_three_steps(two_device_run, stage, tmp_path_factory):
  # The segmenter runs the custom-VJP convolution on CPU: it must shard like plain jax.
  workdir, _ = two_device_run
  one = tmp_path_factory.getbasetemp() / "one_device"
  if not one.exists():
    assert jax.device_count() == 1
    loop.train_and_evaluate(_config(), one)
  two_params = checkpoints.load_params(workdir, stage, _config())
  one_params = checkpoints.load_params(one, stage, _config())
  assert jax.tree.structure(two_params) == jax.tree.structure(one_params)
  spec = stages.get(stage)
  init = spec.init_params(_config(), spec.init_rng(_config()))
  moved = False
  for a, b, c in zip(jax.tree.leaves(two_params), jax.tree.leaves(one_params),
                     jax.tree.leaves(init)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
    moved |= not np.array_equal(np.asarray(b), np.asarray(c))
  assert moved  # Three steps changed the parameters, so agreeing is not trivial.


def test_host_rows_of_a_one_device_mesh_are_the_whole_batch():
  mesh = sharding_lib.data_mesh()
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  assert sharding_lib.host_rows(sharding, 6) == slice(0, 6)


def test_a_hosts_rows_of_a_cropped_batch_are_those_rows_of_the_global_batch():
  # Hosts draw every crop of the global batch, then keep their rows: splitting the batch
  # between hosts must not change any row.
  config = test_config.get_config()
  examples = data_lib.load_examples(config.data, "training")
  data = input_pipeline.UNetData(examples, depth=2, crop_size=32)
  items = np.array([1, 0, 1, 0])
  rng = lambda: input_pipeline.batch_rng(0, "unet", 3, 1)
  whole = data.batch(items, rng())
  for rows in (slice(0, 2), slice(2, 4), slice(1, 3)):
    part = data.batch(items, rng(), rows)
    for key in whole:
      np.testing.assert_array_equal(part[key], whole[key][rows])
  assert not np.array_equal(whole["images"][0], whole["images"][2])  # Crops differ per row.


def test_a_two_device_checkpoint_resumes_on_one_device(two_device_run, tmp_path):
  workdir, _ = two_device_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  config = _config()
  config.stages = ("scorer",)
  config.train.max_steps = 4
  loop.train_and_evaluate(config, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["stage"] == "scorer" and "loss" in r] == [1, 2, 3, 4]
  assert checkpoints.checkpoint_dir(tmp_path, "scorer").joinpath("4").is_dir()
