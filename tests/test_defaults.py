"""The one source of defaults and the upgrade of config.json files written by older versions."""

import json

import pytest

from spiralnet_jax import checkpoints
from spiralnet_jax import defaults


def test_upgrade_fills_missing_fields_with_defaults_and_keeps_saved_values(tmp_path):
  saved = json.loads(defaults.get_config().to_json_best_effort())
  del saved["segmenter"]["seed_radius"]     # Written before the field existed.
  del saved["data"]["normalize_percentiles"]
  saved["segmenter"]["features"] = 7        # A saved value differs from the default.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = checkpoints.load_config(tmp_path)
  assert config.segmenter.seed_radius == 0 and tuple(config.data.normalize_percentiles) == (0, 100)
  assert config.segmenter.features == 7


@pytest.mark.parametrize("saved, message", [([], "JSON object"), (3, "JSON object"),
                                            ({}, "no regions, scorer, segmenter section"),
                                            ({"regions": {}, "scorer": {}}, "no segmenter")])
def test_upgrade_refuses_a_config_train_py_did_not_write(saved, message):
  with pytest.raises(ValueError, match=message):
    defaults.upgrade_config(saved)
