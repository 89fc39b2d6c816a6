"""Tests for spiralnet_jax.segmenter (StepNet, Segmenter) and spiralnet_jax.conv (custom VJP)."""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.extend
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from spiralnet_jax import conv
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import spiral

_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"
_NHWC = ("NHWC", "HWIO", "NHWC")


def _default_config():
  spec = importlib.util.spec_from_file_location("default_config", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _config(shape=(20, 22), n=4, k=2, step="cropped", loss="final", small=True, **overrides):
  """The default config with a small region geometry and (if `small`) narrow layers."""
  config = _default_config()
  config.regions.height, config.regions.width = shape
  seg = config.segmenter
  seg.update_size, seg.num_skip_modules, seg.step, seg.loss = n, k, step, loss
  if small:
    seg.branch_features, seg.features, seg.skip_features = 4, 8, 4
  for name, value in overrides.items():
    seg[name] = value
  return config


def _random_params(segmenter, seed=0):
  """Random params of `segmenter.init`'s structure, biases included (zero biases would hide
  differences between zero-padded features and features computed from the zero canvas).
  Drawn with NumPy: compiling jax.random for every parameter shape costs seconds on CPU."""
  rng = np.random.default_rng(seed)

  def draw(shape):
    scale = 0.3 if len(shape.shape) == 1 else 1.5 / np.sqrt(np.prod(shape.shape[:-1]))
    return jnp.asarray(scale * rng.normal(size=shape.shape), jnp.float32)

  return jax.tree.map(draw, jax.eval_shape(segmenter.init, jax.random.key(seed)))


def _border_regions(shape, batch, seed=0):
  """Regions cut at the corners of a reflect-padded random image (as the data pipeline does)."""
  rng = np.random.default_rng(seed)
  height, width = shape
  image = rng.random((height + 5, width + 7), dtype=np.float32)
  pad = max(height, width) // 2
  padded = np.pad(image, pad, mode="reflect")
  corners = [(0, 0), (padded.shape[0] - height, padded.shape[1] - width), (0, 3), (4, 0)]
  return jnp.asarray(np.stack([padded[y:y + height, x:x + width]
                               for y, x in corners[:batch]]))


def _random_mask(shape, batch, seed=1):
  logits = np.random.default_rng(seed).normal(size=(batch,) + shape + (3,))
  return jnp.asarray(jax.nn.softmax(logits, axis=-1), jnp.float32)


def _labels(shape, batch, seed=2):
  classes = np.random.default_rng(seed).integers(0, 3, size=(batch,) + shape)
  return jnp.asarray(np.eye(3, dtype=np.float32)[classes])


def _pair(config_kwargs):
  """The same geometry as a full_fov and a cropped segmenter."""
  return (segmenter_lib.Segmenter.from_config(_config(step="full_fov", **config_kwargs)),
          segmenter_lib.Segmenter.from_config(_config(step="cropped", **config_kwargs)))


# --- conv.py: the custom-VJP convolution ----------------------------------------------------------
@pytest.mark.parametrize("padding,kernel", [("SAME", (3, 3)), ("VALID", (3, 3)), ("SAME", (1, 1)),
                                            (((2, 0), (1, 2)), (3, 2))])
def test_conv_vjp_equals_autodiff(padding, kernel):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 9, 11, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel + (5, 7)), jnp.float32)
  y_shape = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC).shape
  weights = jnp.asarray(rng.normal(size=y_shape), jnp.float32)

  def loss(conv_fn, x, w):
    y = conv_fn(x, w, (1, 1), padding, dimension_numbers=_NHWC)
    return jnp.sum(jnp.sin(y) * weights)

  y_custom = conv.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)
  y_lax = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)
  np.testing.assert_array_equal(y_custom, y_lax)
  got = jax.grad(lambda x, w: loss(conv.conv_general_dilated, x, w), (0, 1))(x, w)
  want = jax.grad(lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1))(x, w)
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5 * float(jnp.abs(h).max()))


def test_conv_vjp_backward_is_plain_nhwc_convolutions():
  """Every convolution in the gradient of a StepNet is an ordinary NHWC x HWIO convolution
  (no lhs dilation, no feature groups, canonical dimension numbers): XLA:CPU's fast form."""
  net = segmenter_lib.StepNet(4, 8, 4, 1, conv_general_dilated=conv.conv_general_dilated)
  image, mask = jnp.ones((2, 12, 12, 1)), jnp.ones((2, 12, 12, 3))
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), image, mask, "VALID"))
  grad = jax.grad(lambda p: net.apply(p, image, mask, "VALID").sum())
  eqns = [e for e in jax.make_jaxpr(grad)(params).jaxpr.eqns]

  def convs(eqns):
    for e in eqns:
      if e.primitive.name == "conv_general_dilated":
        yield e
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        yield from convs(sub.eqns)

  found = list(convs(eqns))
  canonical = lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC)
  # 6 forward convs, each with an input and a kernel gradient (XLA drops the unused input
  # gradients of the two branch convs).
  assert len(found) == 3 * 6
  for e in found:
    assert e.params["dimension_numbers"] == canonical
    assert e.params["lhs_dilation"] == (1, 1) and e.params["window_strides"] == (1, 1)
    assert e.params["feature_group_count"] == 1 and e.params["batch_group_count"] == 1


def test_conv_rejects_unsupported_arguments():
  x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2))
  with pytest.raises(ValueError):
    conv.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=_NHWC)
  with pytest.raises(ValueError):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))


# --- StepNet -------------------------------------------------------------------------------------
def test_stepnet_param_count_and_shapes_by_hand():
  config = _default_config()
  segmenter = segmenter_lib.Segmenter.from_config(config)
  params = _random_params(segmenter)
  apply = jax.jit(segmenter.net.apply, static_argnums=3)
  # image 9*1*32+32, mask 9*3*32+32, merge 9*64*64+64, 2 x (9*64*32+32 + 9*32*64+64), head 64*3+3.
  expected = 320 + 896 + 36928 + 2 * (18464 + 18496) + 195
  assert sum(p.size for p in jax.tree.leaves(params)) == expected
  image, mask = jnp.zeros((2, 14, 15, 1)), jnp.zeros((2, 14, 15, 3))
  assert apply(params, image, mask, "SAME").shape == (2, 14, 15, 3)
  assert apply(params, image, mask, "VALID").shape == (2, 2, 3, 3)


def test_stepnet_logits_can_be_negative():
  # No ReLU before the sigmoid (deliberate deviation from the thesis).
  segmenter = segmenter_lib.Segmenter.from_config(_config())
  probs = jax.jit(segmenter.apply)(_random_params(segmenter), _border_regions((20, 22), 2))
  assert float(probs.min()) < 0.5 < float(probs.max())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_receptive_radius_is_the_networks_dependency_range(k):
  """An output pixel depends on inputs exactly r = receptive_radius(K) pixels away, no further."""
  net = segmenter_lib.StepNet(4, 8, 4, k)
  size, centre = 25, 12
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((1, size, size, 1)), jnp.float32)
  mask = jnp.asarray(rng.random((1, size, size, 3)), jnp.float32)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), image, mask, "SAME"))
  params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), jnp.float32), shapes)

  @jax.jit
  def input_grads(image, mask):
    return jax.grad(lambda im, m: net.apply(params, im, m, "SAME")[0, centre, centre].sum(),
                    (0, 1))(image, mask)

  grads = input_grads(image, mask)
  support = (jnp.abs(grads[0][0, ..., 0]) + jnp.abs(grads[1][0]).sum(-1)) > 0
  rows, cols = np.nonzero(np.asarray(support))
  r = spiral.receptive_radius(k)
  assert np.abs(rows - centre).max() == r and np.abs(cols - centre).max() == r


# --- Segmenter: full_fov vs cropped ---------------------------------------------------------------
@pytest.mark.parametrize("k,shape", [(1, (20, 22)), (2, (20, 22)), (4, (28, 30))])
def test_cropped_equals_full_fov(k, shape):
  full, cropped = _pair(dict(shape=shape, n=4, k=k))
  assert cropped.window_shape == (4 + 2 * spiral.receptive_radius(k),) * 2
  params = _random_params(full)
  regions = _border_regions(shape, 4)
  init_mask = _random_mask(shape, 4)
  for mask in (None, init_mask):
    got = jax.jit(cropped.apply)(params, regions, mask)
    want = jax.jit(full.apply)(params, regions, mask)
    assert got.shape == (4,) + shape + (3,)
    assert float(jnp.abs(got - want).max()) < 1e-5
  # The init mask matters, so the comparison above exercised the fed-back mask.
  assert float(jnp.abs(jax.jit(cropped.apply)(params, regions, init_mask)
                       - jax.jit(cropped.apply)(params, regions)).max()) > 1e-3


def test_cropped_equals_full_fov_default_geometry():
  config = _default_config()
  config.segmenter.step = "full_fov"
  full = segmenter_lib.Segmenter.from_config(config)
  config.segmenter.step = "cropped"
  cropped = segmenter_lib.Segmenter.from_config(config)
  assert (len(cropped.offsets), cropped.radius, cropped.window_shape) == (56, 6, (20, 20))
  params = _random_params(full)
  regions = _border_regions((52, 58), 2)
  init_mask = _random_mask((52, 58), 2)
  diff = jnp.abs(jax.jit(cropped.apply)(params, regions, init_mask)
                 - jax.jit(full.apply)(params, regions, init_mask))
  assert float(diff.max()) < 1e-5


def test_cropped_rejects_geometry_where_it_would_not_be_exact():
  # 20 x 22, n = 4: the centre block lies 7 px inside the FOV, K = 4 needs r = 10.
  with pytest.raises(ValueError, match="exact"):
    segmenter_lib.Segmenter.from_config(_config(shape=(20, 22), k=4, step="cropped"))
  assert segmenter_lib.Segmenter.from_config(_config(shape=(20, 22), k=4, step="full_fov"))


@pytest.mark.parametrize("field,value", [("step", "fast"), ("loss", "l2"), ("dtype", "float16"),
                                         ("cpu_conv_vjp", "yes")])
def test_from_config_rejects_unknown_strings(field, value):
  with pytest.raises(ValueError):
    segmenter_lib.Segmenter.from_config(_config(**{field: value}))


# --- Segmenter: the recursion ---------------------------------------------------------------------
@pytest.mark.parametrize("step", ["cropped", "full_fov"])
def test_each_step_writes_exactly_its_in_region_block(step):
  segmenter = segmenter_lib.Segmenter.from_config(_config(step=step))
  params = _random_params(segmenter)
  regions = _border_regions((20, 22), 2)
  image_canvas = segmenter.to_canvas(regions[..., None])
  # A sentinel outside [0, 1] in the region; the canvas around the region is zero.
  mask_canvas = segmenter.to_canvas(jnp.full((2, 20, 22, 3), -1.0))
  outside = np.asarray(segmenter.to_canvas(jnp.ones((2, 20, 22, 3)))) == 0
  step_fn = jax.jit(segmenter.step_fn)
  (top, _), (left, _) = segmenter.canvas_pads
  n = segmenter.update_size
  for y, x in segmenter.offsets:
    new = step_fn(params, image_canvas, mask_canvas, jnp.asarray([y, x], jnp.int32))
    changed = np.asarray(jnp.any(new != mask_canvas, axis=(0, 3)))
    expected = np.zeros_like(changed)
    expected[top + max(y, 0):top + min(y + n, 20), left + max(x, 0):left + min(x + n, 22)] = True
    np.testing.assert_array_equal(changed, expected)
    mask_canvas = new
  # The eager loop equals the scan, everything was written, and the canvas border stays zero.
  assert np.all(np.asarray(mask_canvas)[outside] == 0)
  final = segmenter.from_canvas(mask_canvas)
  assert float(final.min()) >= 0
  np.testing.assert_allclose(
      final, jax.jit(segmenter.apply)(params, regions, jnp.full((2, 20, 22, 3), -1.0)), atol=1e-6)


def test_vmapped_apply_equals_the_batch_native_scan_bitwise():
  segmenter = segmenter_lib.Segmenter.from_config(_config())
  params = _random_params(segmenter)
  regions, mask = _border_regions((20, 22), 3), _random_mask((20, 22), 3, 0)
  vmapped = np.asarray(jax.jit(segmenter.apply)(params, regions, mask))
  np.testing.assert_array_equal(vmapped, jax.jit(segmenter.apply_batch)(params, regions, mask))
  one = jax.jit(segmenter.apply_region)(params, regions[1], mask[1])
  np.testing.assert_array_equal(np.asarray(one), vmapped[1])


def test_conv_vjp_setting():
  def conv_fn(setting):
    segmenter = segmenter_lib.Segmenter.from_config(_config(cpu_conv_vjp=setting))
    return segmenter.net.conv_general_dilated

  assert conv_fn("on") is conv.conv_general_dilated
  assert conv_fn("off") is None
  assert conv_fn("auto") is (conv.conv_general_dilated if jax.default_backend() == "cpu" else None)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  f32 = segmenter_lib.Segmenter.from_config(_config())
  bf16 = segmenter_lib.Segmenter.from_config(_config(dtype="bfloat16"))
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.key(0))))
  params = _random_params(bf16)
  regions = _border_regions((20, 22), 2)
  got = jax.jit(bf16.apply)(params, regions)
  assert got.dtype == jnp.float32
  assert float(jnp.abs(got - jax.jit(f32.apply)(params, regions)).max()) < 0.05


# --- losses ---------------------------------------------------------------------------------------
def test_final_loss_is_bce_of_final_mask_state():
  segmenter = segmenter_lib.Segmenter.from_config(_config(loss="final"))
  params = _random_params(segmenter)
  regions, labels = _border_regions((20, 22), 2), _labels((20, 22), 2)
  probs = jax.jit(segmenter.apply)(params, regions)
  bce = -(labels * jnp.log(probs) + (1 - labels) * jnp.log1p(-probs)).mean()
  np.testing.assert_allclose(jax.jit(segmenter.loss)(params, regions, labels), bce, rtol=1e-5)


def test_per_step_loss_and_grads_match_an_eager_loop_with_constant_feedback():
  """per_step = mean over steps of the in-region block BCE, the fed-back mask a constant."""
  segmenter = segmenter_lib.Segmenter.from_config(_config(loss="per_step"))
  params = _random_params(segmenter)
  regions, labels = _border_regions((20, 22), 2), _labels((20, 22), 2)
  image_canvas = segmenter.to_canvas(regions[..., None])
  mask_canvas = segmenter.to_canvas(jnp.zeros((2, 20, 22, 3)))
  n = segmenter.update_size
  # Labels padded by n, and a weight that is 1 exactly on the region, sliced per block.
  padded_labels = jnp.pad(labels, ((0, 0), (n, n), (n, n), (0, 0)))
  padded_weight = jnp.pad(jnp.ones((20, 22)), n)

  def step_loss(params, mask_canvas, offset):
    logits = segmenter.block_logits(params, image_canvas, mask_canvas, offset)
    target = lax.dynamic_slice(padded_labels, (0, offset[0] + n, offset[1] + n, 0), (2, n, n, 3))
    weight = lax.dynamic_slice(padded_weight, (offset[0] + n, offset[1] + n), (n, n))
    bce = -(target * jax.nn.log_sigmoid(logits) + (1 - target) * jax.nn.log_sigmoid(-logits))
    return (bce * weight[None, :, :, None]).sum() / (weight.sum() * 2 * 3)

  grad_fn = jax.jit(jax.value_and_grad(step_loss))
  step_fn = jax.jit(segmenter.step_fn)
  total, grads = 0.0, jax.tree.map(jnp.zeros_like, params)
  for offset in segmenter.offsets:
    offset = jnp.asarray(offset, jnp.int32)
    value, g = grad_fn(params, mask_canvas, offset)
    total, grads = total + value, jax.tree.map(jnp.add, grads, g)
    mask_canvas = step_fn(params, image_canvas, mask_canvas, offset)
  k = len(segmenter.offsets)
  value, got = jax.jit(jax.value_and_grad(segmenter.loss))(params, regions, labels)
  np.testing.assert_allclose(value, total / k, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b / k, rtol=1e-4, atol=1e-6)


def test_boundary_weights_mark_where_central_meets_other_by_hand():
  # One row layout, 5 rows high: central in columns 0-3, another nucleus in 4-7 (touching).
  classes = np.zeros((1, 5, 8), int)
  classes[..., 4:] = 1
  labels = jnp.asarray(np.eye(3, dtype=np.float32)[classes])
  got = np.asarray(regions_lib.boundary_weights(labels, 1, 4.0))[0, ..., 0]
  expected = np.ones((5, 8), np.float32)
  expected[:, 3:5] = 5.0  # Within 1 px of both: the two columns where they meet.
  np.testing.assert_array_equal(got, expected)
  # Apart by 3 background columns (central 0-1, other 5-7): no pixel is within 1 px of both;
  # within 2 px only the middle column of the gap is.
  classes[:] = 2
  classes[..., :2], classes[..., 5:] = 0, 1
  labels = jnp.asarray(np.eye(3, dtype=np.float32)[classes])
  np.testing.assert_array_equal(regions_lib.boundary_weights(labels, 1, 4.0), 1.0)
  wide = np.asarray(regions_lib.boundary_weights(labels, 2, 4.0))[0, ..., 0]
  np.testing.assert_array_equal(wide[:, 3], 5.0)
  assert (np.delete(wide, 3, axis=1) == 1.0).all()
  np.testing.assert_array_equal(regions_lib.boundary_weights(labels, 2, 0.0), 1.0)


@pytest.mark.parametrize("loss", ["final", "per_step"])
def test_boundary_weighted_loss_is_the_weighted_mean(loss):
  plain = segmenter_lib.Segmenter.from_config(_config(loss=loss))
  weighted = segmenter_lib.Segmenter.from_config(_config(loss=loss, boundary_weight=3.0,
                                                         boundary_radius=1))
  params = _random_params(plain)
  regions = _border_regions((20, 22), 2)
  # No other nucleus: every weight is 1, the weighted mean is the plain one.
  classes = np.full((2, 20, 22), 2)
  classes[:, 5:15, 5:15] = 0
  alone = jnp.asarray(np.eye(3, dtype=np.float32)[classes])
  np.testing.assert_allclose(jax.jit(weighted.loss)(params, regions, alone),
                             jax.jit(plain.loss)(params, regions, alone), rtol=1e-6)
  # Touching nuclei: the loss moves towards the (here different) BCE of the band pixels.
  classes[:, 5:15, 12:18] = 1
  touching = jnp.asarray(np.eye(3, dtype=np.float32)[classes])
  assert abs(float(jax.jit(weighted.loss)(params, regions, touching))
             - float(jax.jit(plain.loss)(params, regions, touching))) > 1e-4
  if loss == "final":  # By hand: the weighted mean of the final state's BCE.
    probs = jax.jit(plain.apply)(params, regions)
    bce = -(touching * jnp.log(probs) + (1 - touching) * jnp.log1p(-probs))
    w = regions_lib.boundary_weights(touching, 1, 3.0)
    np.testing.assert_allclose(jax.jit(weighted.loss)(params, regions, touching),
                               (bce * w).sum() / (w.sum() * 3), rtol=1e-5)


def _assert_same_loss_and_grads(got_segmenter, want_segmenter, params, regions, labels,
                                atol_scale):
  """Loss values equal to 1e-5 and finite gradients equal to 1e-4 (relative); returns got's."""
  want_value, want = jax.jit(jax.value_and_grad(want_segmenter.loss))(params, regions, labels)
  got_value, got = jax.jit(jax.value_and_grad(got_segmenter.loss))(params, regions, labels)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol_scale * float(jnp.abs(b).max()))
  return got


@pytest.mark.parametrize("loss", ["final", "per_step"])
@pytest.mark.parametrize("boundary_weight", [0.0, 3.0])
def test_vmapped_loss_equals_the_batch_native_loss(loss, boundary_weight):
  segmenter = segmenter_lib.Segmenter.from_config(
      _config(loss=loss, boundary_weight=boundary_weight, boundary_radius=2))
  params = _random_params(segmenter)
  # Regions with different label content, so per-region weight sums differ under weighting.
  regions, labels = _border_regions((20, 22), 3), _labels((20, 22), 3)
  labels = labels.at[2].set(jnp.zeros_like(labels[2]).at[..., 2].set(1.0))
  want_value, want = jax.jit(jax.value_and_grad(segmenter.loss))(params, regions, labels)
  got_value, got = jax.jit(jax.value_and_grad(segmenter.loss_vmapped))(params, regions, labels)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("loss", ["final", "per_step"])
def test_cropped_grads_equal_full_fov_grads(loss):
  full, cropped = _pair(dict(loss=loss))
  params = _random_params(full)
  regions, labels = _border_regions((20, 22), 2), _labels((20, 22), 2)
  got = _assert_same_loss_and_grads(cropped, full, params, regions, labels, atol_scale=1e-6)
  assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(got))


def test_final_loss_grads_same_with_and_without_remat_and_conv_vjp():
  config_kwargs = dict(loss="final")
  base = segmenter_lib.Segmenter.from_config(_config(remat=True, cpu_conv_vjp="on",
                                                     **config_kwargs))
  other = segmenter_lib.Segmenter.from_config(_config(remat=False, cpu_conv_vjp="off",
                                                      **config_kwargs))
  params = _random_params(base)
  regions, labels = _border_regions((20, 22), 2), _labels((20, 22), 2)
  got = jax.jit(jax.grad(base.loss))(params, regions, labels)
  want = jax.jit(jax.grad(other.loss))(params, regions, labels)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()))


# --- exact reformulations: hoisted image branch, grouped independent steps ------------------------
# 16 x 26, n = 4, K = 1 (r = 4): the schedule has 18 levels for 28 steps, one of width 3.
_GROUPED = dict(shape=(16, 26), n=4, k=1)


def test_grouped_schedule_segments_cover_every_step_once_in_schedule_order():
  segmenter = segmenter_lib.Segmenter.from_config(_config(group_steps=True, **_GROUPED))
  assert segmenter.group_steps and len(segmenter.schedule) == 18
  assert [s.shape[1] for s in segmenter.schedule_segments] == [1, 2, 3, 2, 1]
  flat = np.concatenate([s.reshape(-1, 2) for s in segmenter.schedule_segments])
  order = [k for level in segmenter.schedule for k in level]
  np.testing.assert_array_equal(flat, np.asarray(segmenter.offsets)[order])
  plain = segmenter_lib.Segmenter.from_config(_config(**_GROUPED))
  assert not plain.group_steps and [s.shape for s in plain.schedule_segments] == [(28, 1, 2)]


def _plain_and(step, **fields):
  base = segmenter_lib.Segmenter.from_config(_config(step=step, **_GROUPED))
  return (dataclasses.replace(base, hoist_image=False, group_steps=False),
          dataclasses.replace(base, **fields))


@pytest.mark.parametrize("step,fields", [
    ("cropped", dict(hoist_image=True, group_steps=False)),
    ("cropped", dict(hoist_image=False, group_steps=True)),
    ("cropped", dict(hoist_image=True, group_steps=True)),
    ("full_fov", dict(group_steps=True)),
])
def test_reformulations_equal_the_plain_step_by_step_scan(step, fields):
  plain, other = _plain_and(step, **fields)
  assert other.hoisted == (step == "cropped" and fields.get("hoist_image", False))
  params = _random_params(plain)
  regions, init_mask = _border_regions((16, 26), 3), _random_mask((16, 26), 3)
  diff = jnp.abs(jax.jit(other.apply)(params, regions, init_mask)
                 - jax.jit(plain.apply)(params, regions, init_mask))
  assert float(diff.max()) < 1e-5


@pytest.mark.parametrize("loss", ["final", "per_step"])
def test_grouped_loss_and_grads_equal_the_plain_scan(loss):
  plain, other = _plain_and("cropped", group_steps=True, loss_type=loss)
  plain = dataclasses.replace(plain, loss_type=loss)
  params = _random_params(plain)
  regions, labels = _border_regions((16, 26), 2), _labels((16, 26), 2)
  _assert_same_loss_and_grads(other, plain, params, regions, labels, atol_scale=1e-5)


def test_hoisted_image_part_is_the_window_of_the_canvas_part():
  # The image half of the merge conv over the canvas, sliced at a step's window, equals the
  # same half computed on the window alone (VALID convs commute with cropping).
  segmenter = segmenter_lib.Segmenter.from_config(_config(**_GROUPED))
  params = _random_params(segmenter)
  canvas = segmenter.to_canvas(_border_regions((16, 26), 2)[..., None])
  part = segmenter.image_source(params, canvas, True)
  side = segmenter.window_shape[0]
  assert part.shape == canvas.shape[:1] + (canvas.shape[1] - 4, canvas.shape[2] - 4, 8)
  for y, x in [(0, 0), (3, 5), (canvas.shape[1] - side, canvas.shape[2] - side)]:
    window = canvas[:, y:y + side, x:x + side]
    want = segmenter.net.apply(params, window, None, "VALID", image_part_only=True)
    np.testing.assert_allclose(part[:, y:y + side - 4, x:x + side - 4], want, atol=1e-6)


def test_image_part_needs_valid_padding():
  segmenter = segmenter_lib.Segmenter.from_config(_config(**_GROUPED))
  params = _random_params(segmenter)
  mask = jnp.zeros((1, 12, 12, 3))
  with pytest.raises(ValueError, match="VALID"):
    segmenter.net.apply(params, None, mask, "SAME", image_part=jnp.zeros((1, 12, 12, 8)))


# --- the seeded initial mask ---------------------------------------------------------------------

def test_seed_mask_is_a_disk_in_the_central_channel_at_the_centre_pixel():
  segmenter = segmenter_lib.Segmenter.from_config(_config(shape=(20, 22), seed_radius=2))
  mask = segmenter.seed_mask
  assert mask.shape == (20, 22, 3) and mask.dtype == np.float32
  # Radius 2 around (10, 11): 13 pixels (5 + 3 + 3 + 1 + 1), all in channel 0.
  assert mask[..., 0].sum() == 13 and not mask[..., 1:].any()
  assert mask[10, 11, 0] == 1 and mask[8, 11, 0] == 1 and mask[9, 13, 0] == 0
  np.testing.assert_array_equal(segmenter.initial_mask(3), np.broadcast_to(mask, (3, 20, 22, 3)))
  unseeded = segmenter_lib.Segmenter.from_config(_config(shape=(20, 22)))
  assert not unseeded.seed_mask.any()


def test_seeded_apply_and_loss_start_from_the_seed_mask():
  config = _config(shape=(20, 22), seed_radius=2)
  segmenter = segmenter_lib.Segmenter.from_config(config)
  params = segmenter.init(jax.random.key(0))
  regions = np.random.default_rng(0).random((2, 20, 22)).astype(np.float32)
  seeded = segmenter.apply(params, regions)
  np.testing.assert_array_equal(seeded, segmenter.apply(params, regions,
                                                        segmenter.initial_mask(2)))
  zeros = segmenter.apply(params, regions, np.zeros((2, 20, 22, 3), np.float32))
  assert np.abs(np.asarray(seeded) - np.asarray(zeros)).max() > 1e-4  # The seed is seen.
  labels = np.zeros((2, 20, 22, 3), np.float32)
  labels[..., 2] = 1
  unseeded = dataclasses.replace(segmenter, seed_radius=0)
  assert float(segmenter.loss(params, regions, labels)) != float(
      unseeded.loss(params, regions, labels))


def test_negative_seed_radius_is_refused():
  with pytest.raises(ValueError, match="seed_radius"):
    segmenter_lib.Segmenter.from_config(_config(seed_radius=-1))
