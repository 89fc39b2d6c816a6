"""U-Net: shapes for any input size, parameter count by hand, and the instance post-processing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from spiralnet_jax import unet


def _count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def _abstract_params(model, shape):
  return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def _random_params(model, in_features=1, seed=0):
  """Parameters shaped by `model.init` (traced only) and filled with scaled NumPy noise.

  Real `init` runs op by op and compiles every random op on XLA:CPU (tens of seconds); the
  shape tests only need some finite parameters of the right structure.
  """
  abstract = _abstract_params(model, (1, 4, 4, in_features))
  rng = np.random.default_rng(seed)
  def fill(leaf):
    fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)
  return jax.tree_util.tree_map(fill, abstract)


def _init_and_apply(model, x):
  params = _random_params(model, in_features=1)
  return params, jax.jit(model.apply)(params, x)


def _hand_param_count(base, depth, in_features=1, out_features=1):
  """Weights + biases, layer by layer, from the architecture description."""
  def conv(k, cin, cout):
    return k * k * cin * cout + cout

  c = [base * 2 ** k for k in range(depth + 1)]
  total = 0
  cin = in_features
  for k in range(depth):  # Contracting path.
    total += conv(3, cin, c[k]) + conv(3, c[k], c[k])
    cin = c[k]
  total += conv(3, c[depth - 1], c[depth]) + conv(3, c[depth], c[depth])  # Bottleneck.
  for k in range(depth):  # Expanding path: 2x2 up-conv, then two convs on [skip, up].
    total += conv(2, c[k + 1], c[k]) + conv(3, 2 * c[k], c[k]) + conv(3, c[k], c[k])
  return total + conv(1, c[0], out_features)


def test_thesis_config_param_count_matches_hand_formula():
  cfg = default.get_config().unet
  model = unet.UNet(base_features=cfg.base_features, depth=cfg.depth, out_features=1)
  params = _abstract_params(model, (1, 64, 64, 1))["params"]
  assert params["bottleneck_conv1"]["kernel"].shape == (3, 3, 1024, 1024)
  assert params["down0_conv0"]["kernel"].shape == (3, 3, 1, 64)
  assert params["up0_transpose"]["kernel"].shape == (2, 2, 128, 64)
  assert params["up0_conv0"]["kernel"].shape == (3, 3, 128, 64)
  assert params["logits"]["kernel"].shape == (1, 1, 64, 1)
  assert _count(params) == _hand_param_count(64, 4) == 31_030_593
  # With RGB input this is the widely quoted 31,031,745 of the reference U-Net implementations.
  rgb = _abstract_params(model, (1, 64, 64, 3))["params"]
  assert _count(rgb) == _hand_param_count(64, 4, in_features=3) == 31_031_745


@pytest.mark.parametrize("base, depth", [(4, 2), (8, 3)])
def test_param_count_small_configs_match_hand_formula(base, depth):
  params = _abstract_params(unet.UNet(base, depth), (1, 16, 16, 1))
  assert _count(params) == _hand_param_count(base, depth)


def test_param_count_does_not_depend_on_input_size():
  model = unet.UNet(base_features=4, depth=2)
  counts = {_count(_abstract_params(model, s)) for s in [(1, 8, 8, 1), (2, 37, 53, 1),
                                                         (1, 520, 696, 1)]}
  assert len(counts) == 1


@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (5, 3), (20, 12), (1, 1)])
def test_output_shape_equals_input_shape(shape):
  model = unet.UNet(base_features=4, depth=2, out_features=1)
  x = jnp.asarray(np.random.default_rng(1).random((2, *shape, 1)), jnp.float32)
  _, y = _init_and_apply(model, x)
  assert y.shape == (2, *shape, 1)
  assert y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))


def test_odd_sizes_are_reflect_padded_bottom_right_and_cropped():
  model = unet.UNet(base_features=4, depth=2)
  x = jnp.asarray(np.random.default_rng(2).random((1, 37, 53, 1)), jnp.float32)
  params, y = _init_and_apply(model, x)
  padded = jnp.pad(x, ((0, 0), (0, 3), (0, 3), (0, 0)), mode="reflect")  # To 40 x 56.
  y_padded = jax.jit(model.apply)(params, padded)
  assert y_padded.shape == (1, 40, 56, 1)
  np.testing.assert_allclose(y, y_padded[:, :37, :53], rtol=1e-5, atol=1e-6)


def test_channelless_input_is_one_channel():
  model = unet.UNet(base_features=4, depth=2, out_features=3)
  x = jnp.asarray(np.random.default_rng(3).random((1, 8, 12)), jnp.float32)
  params, y = _init_and_apply(model, x)
  assert y.shape == (1, 8, 12, 3)
  np.testing.assert_allclose(y, jax.jit(model.apply)(params, x[..., None]), rtol=1e-6)


def test_predict_semantic_thresholds_sigmoid():
  logits = jnp.array([[-1.0, 0.0], [0.1, 2.0]])[None, :, :, None]  # (1, 2, 2, 1)
  mask = unet.unet_predict_semantic(logits, 0.5)
  assert mask.shape == (1, 2, 2)
  np.testing.assert_array_equal(mask, [[[False, False], [True, True]]])  # sigmoid(0) = 0.5.
  np.testing.assert_array_equal(unet.unet_predict_semantic(logits, 0.8),
                                [[[False, False], [False, True]]])


def test_instances_separated_blobs_are_two():
  mask = np.zeros((10, 12), bool)
  mask[1:4, 1:4] = True
  mask[6:9, 7:11] = True
  labels = unet.instances_from_semantic(mask)
  assert labels.dtype == np.int32
  assert set(np.unique(labels)) == {0, 1, 2}
  assert np.all((labels > 0) == mask)
  assert len(np.unique(labels[1:4, 1:4])) == 1 and len(np.unique(labels[6:9, 7:11])) == 1


def test_instances_touching_blobs_merge_into_one():
  # Two nuclei sharing an edge: U-Net's semantic mask cannot separate them (thesis Fig. 29).
  mask = np.zeros((10, 12), bool)
  mask[2:6, 1:5] = True
  mask[3:7, 5:9] = True
  assert set(np.unique(unet.instances_from_semantic(mask))) == {0, 1}


def test_instances_use_four_connectivity():
  # Diagonal contact only: two components under 4-connectivity (8-connectivity would give 1).
  mask = np.zeros((6, 6), bool)
  mask[1:3, 1:3] = True
  mask[3:5, 3:5] = True
  assert unet.instances_from_semantic(mask).max() == 2
