"""The spiral's XLA:CPU compile options (`predict.cpu_ynn_fusion`): what they set, and that
they change nothing but the speed."""

import dataclasses

import jax
import numpy as np
import pytest

from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import xla_cpu


_ELTWISE = (("xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_ELTWISE"),)


def test_eltwise_restricts_ynnpack_to_elementwise_fusions_and_default_sets_nothing():
  assert jax.default_backend() == "cpu"  # CI and the tests run on the CPU.
  for step in ("cropped", "full_fov"):
    assert xla_cpu.spiral_options("eltwise", step) == _ELTWISE
    assert xla_cpu.spiral_options("default", step) == ()
  with pytest.raises(ValueError, match="cpu_ynn_fusion"):
    xla_cpu.spiral_options("convolution", "cropped")


def test_auto_is_eltwise_for_the_cropped_step_and_the_default_for_the_full_fov_step():
  assert xla_cpu.spiral_options("auto", "cropped") == _ELTWISE
  assert xla_cpu.spiral_options("auto", "full_fov") == ()


def test_off_the_cpu_nothing_is_set(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert xla_cpu.spiral_options("eltwise", "cropped") == ()


def test_an_option_the_compiler_rejects_falls_back_to_its_defaults(caplog):
  assert xla_cpu._accepted("xla_cpu_experimental_ynn_fusion_type",  # pylint: disable=protected-access
                           "LIBRARY_FUSION_TYPE_ELTWISE")
  assert not xla_cpu._accepted("xla_cpu_experimental_ynn_fusion_type",  # pylint: disable=protected-access
                               "NOT_A_FUSION_TYPE")
  assert "compiling with its defaults" in caplog.text


def _with_fusion(predictor: predict.Predictor, fusion: str) -> predict.Predictor:
  config = predictor.config.copy_and_resolve_references()
  config.predict.cpu_ynn_fusion = fusion
  return dataclasses.replace(predictor, config=config)


def test_the_spiral_compiled_either_way_gives_the_same_probabilities_and_instances():
  shipped = predict.Predictor.pretrained()
  regions = np.random.default_rng(0).random((8,) + shipped.segmenter.region_shape, np.float32)
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image[:160, :240]
  probs, instances = {}, {}
  for fusion in ("default", "eltwise"):
    predictor = _with_fusion(shipped, fusion)
    probs[fusion] = predict.segment_regions(predictor, regions)
    instances[fusion] = predict.predict_instances(predictor, image)
  # Only the library that runs each kernel differs; on the 2-core CI CPU the outputs are bitwise
  # equal, elsewhere a last-ulp difference in a convolution's summation order is allowed.
  np.testing.assert_allclose(probs["eltwise"], probs["default"], rtol=0, atol=1e-6)
  assert instances["default"].max() > 5
  np.testing.assert_array_equal(instances["eltwise"], instances["default"])
