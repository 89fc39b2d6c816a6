"""Config validation in one place: bad settings are refused before anything is written."""

import subprocess
import sys

import pytest

from configs import test as test_config
from spiralnet_jax import config_checks
from spiralnet_jax.training import loop

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_the_shipped_configs_are_valid():
  import importlib  # pylint: disable=g-import-not-at-top
  names = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")
  assert {"default", "spiral", "bbbc039_cpu", "bbbc039_cpu_quarter"} <= set(names)
  for name in names:
    config_checks.validate(importlib.import_module(f"configs.{name}").get_config())
  quarter = importlib.import_module("configs.bbbc039_cpu_quarter")
  finetune = quarter.get_config("finetune")
  config_checks.validate(finetune)
  assert (finetune.segmenter.features, finetune.segmenter.boundary_weight) == (16, 5.0)
  with pytest.raises(ValueError, match="'base' or 'finetune'"):
    quarter.get_config("full")


@pytest.mark.parametrize("field, value, message", [
    ("segmenter.learning_rate", -1e-3, "segmenter.learning_rate must be >= 0, got -0.001"),
    ("scorer.epochs", 0, "scorer.epochs must be >= 1, got 0"),
    ("unet.batch_size", 0, "unet.batch_size must be >= 1, got 0"),
    ("predict.region_batch_size", 0, "predict.region_batch_size must be >= 1"),
    ("assembly.threshold", 1.5, "assembly.threshold must be in [0, 1], got 1.5"),
    ("segmenter.loss", "l2", "segmenter.loss must be one of ('final', 'per_step')"),
    ("data.normalize_percentiles", (50.0, 10.0), "data.normalize_percentiles must satisfy"),
])
def test_bad_values_are_named(field, value, message):
  config = test_config.get_config()
  section, key = field.split(".")
  with config.unlocked():
    config[section][key] = value
  with pytest.raises(config_checks.ConfigError, match="invalid config") as e:
    config_checks.validate(config)
  assert message in str(e.value)


def test_every_problem_is_listed_at_once():
  config = test_config.get_config()
  config.scorer.epochs = 0
  config.segmenter.batch_size = -1
  found = config_checks.problems(config)
  assert len(found) == 2 and "scorer.epochs" in found[0] and "segmenter.batch_size" in found[1]


def test_a_refused_run_writes_nothing_into_the_workdir(tmp_path):
  config = test_config.get_config()
  config.segmenter.learning_rate = -1.0
  with pytest.raises(config_checks.ConfigError):
    loop.train_and_evaluate(config, tmp_path / "wd")
  assert not (tmp_path / "wd").exists()


def test_train_py_refuses_bad_settings_a_file_workdir_and_missing_data_in_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  cases = [
      (["--config.scorer.epochs=0", f"--workdir={tmp_path / 'a'}"], "scorer.epochs must be"),
      ([f"--workdir={blocker}"], "exists and is not a directory"),
      (["--config.data.source=bbbc039", "--config.data.data_dir=/nonexistent",
        f"--workdir={tmp_path / 'b'}"], "is not a BBBC039 directory"),
  ]
  for args, reason in cases:
    run = subprocess.run([sys.executable, "train.py", "--config=configs/test.py", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [l for l in run.stderr.splitlines() if l.startswith("train.py: error: ")]
    assert run.returncode == 1, run.stderr[-2000:]
    assert len(lines) == 1 and reason in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _leaves(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def test_every_numeric_field_of_the_defaults_has_its_valid_range():
  from spiralnet_jax import defaults  # pylint: disable=g-import-not-at-top
  leaves = dict(_leaves(defaults.get_config()))
  numeric = {name for name, value in leaves.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)}
  assert numeric - set(config_checks.RANGES) == set()  # A new field needs its range.
  assert set(config_checks.RANGES) - numeric == set()  # No range for a field that is gone.
  strings = {name for name, value in leaves.items() if isinstance(value, str)}
  assert set(config_checks.CHOICES) <= strings
