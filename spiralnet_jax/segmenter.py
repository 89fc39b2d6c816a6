"""Stage 2: the recursive segmenting network, one `lax.scan` over the spiral per batch of regions.

A step reads a window of the image and of the current mask state, predicts 3-channel logits,
and writes the sigmoid of the n x n block at the spiral position into the mask state (only the
block pixels inside the region). Two step implementations with the same parameters and the
same outputs:
  * "full_fov": the thesis literally: the whole H x W field of view, SAME convolutions, keep the
    block that sits where the centre block sits in the region;
  * "cropped": only the (n + 2r) x (n + 2r) window the block depends on (r = receptive radius),
    VALID convolutions. Exact as long as the centre block lies >= r pixels inside the FOV, so
    that the FOV's own zero padding never reaches the block (checked in `from_config`).
Regions are batched natively (convolutions take the batch), since all regions of a batch share
the static spiral offsets.
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from spiralnet_jax import conv
from spiralnet_jax import spiral

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class SkipModule(nn.Module):
  """conv -> ReLU -> conv, add the input, ReLU (input cropped to match under VALID padding)."""
  skip_features: int
  features: int
  kernel_sizes: tuple[int, int]
  padding: str
  dtype: Any = jnp.float32
  conv_general_dilated: Callable[..., jax.Array] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv_layer = functools.partial(nn.Conv, padding=self.padding, dtype=self.dtype,
                                   conv_general_dilated=self.conv_general_dilated)
    k1, k2 = self.kernel_sizes
    y = nn.relu(conv_layer(self.skip_features, (k1, k1))(x))
    y = conv_layer(self.features, (k2, k2))(y)
    if self.padding == "VALID":
      c = (k1 - 1) // 2 + (k2 - 1) // 2
      x = x[:, c:x.shape[1] - c, c:x.shape[2] - c]
    return nn.relu(x + y)


class StepNet(nn.Module):
  """One recursion step: (image (B,h,w,1), mask (B,h,w,3), padding) -> logits (B,h',w',3)."""
  branch_features: int = 32
  features: int = 64
  skip_features: int = 32
  num_skip_modules: int = 2
  dtype: Any = jnp.float32
  conv_general_dilated: Callable[..., jax.Array] | None = None

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, padding: str = "SAME") -> jax.Array:
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    kernels = spiral.step_kernel_sizes(self.num_skip_modules)
    conv_layer = functools.partial(nn.Conv, padding=padding, dtype=self.dtype,
                                   conv_general_dilated=self.conv_general_dilated)
    k = kernels[0]
    image_features = nn.relu(conv_layer(self.branch_features, (k, k), name="image_conv")(image))
    mask_features = nn.relu(conv_layer(self.branch_features, (k, k), name="mask_conv")(mask))
    x = jnp.concatenate([image_features, mask_features], axis=-1)
    k = kernels[1]
    x = nn.relu(conv_layer(self.features, (k, k), name="merge_conv")(x))
    for i in range(self.num_skip_modules):
      x = SkipModule(self.skip_features, self.features, kernels[2 + 2 * i:4 + 2 * i], padding,
                     self.dtype, self.conv_general_dilated, name=f"skip_{i}")(x)
    k = kernels[-1]
    # Deliberate deviation from the thesis: no ReLU before the sigmoid (see SPEC.md).
    logits = conv_layer(3, (k, k), name="head")(x)
    return logits.astype(jnp.float32)


def _use_conv_vjp(setting: str) -> bool:
  """Resolves `segmenter.cpu_conv_vjp` ("auto": only on the CPU backend)."""
  if setting == "auto":
    return jax.default_backend() == "cpu"
  if setting in ("on", "off"):
    return setting == "on"
  raise ValueError(f"segmenter.cpu_conv_vjp must be 'auto', 'on' or 'off', got {setting!r}")


@dataclasses.dataclass(frozen=True)
class Segmenter:
  """The step network plus the static spiral geometry; pure `init`/`apply`/`loss` functions."""
  net: StepNet
  region_shape: tuple[int, int]
  update_size: int
  offsets: tuple[tuple[int, int], ...]  # Block top-lefts in region coordinates, spiral order.
  radius: int
  step: str = "cropped"
  loss_type: str = "final"
  remat: bool = True

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Segmenter":
    """Builds the segmenter from `config.regions` and `config.segmenter`."""
    seg = config.segmenter
    if seg.step not in ("cropped", "full_fov"):
      raise ValueError(f"segmenter.step must be 'cropped' or 'full_fov', got {seg.step!r}")
    if seg.loss not in ("final", "per_step"):
      raise ValueError(f"segmenter.loss must be 'final' or 'per_step', got {seg.loss!r}")
    if seg.dtype not in _DTYPES:
      raise ValueError(f"segmenter.dtype must be one of {sorted(_DTYPES)}, got {seg.dtype!r}")
    region_shape = (int(config.regions.height), int(config.regions.width))
    n = int(seg.update_size)
    offsets = spiral.spiral_offsets(region_shape, n)
    net = StepNet(
        branch_features=seg.branch_features, features=seg.features,
        skip_features=seg.skip_features, num_skip_modules=seg.num_skip_modules,
        dtype=_DTYPES[seg.dtype],
        conv_general_dilated=(conv.conv_general_dilated if _use_conv_vjp(seg.cpu_conv_vjp)
                              else None))
    segmenter = cls(net=net, region_shape=region_shape, update_size=n,
                    offsets=tuple((int(y), int(x)) for y, x in offsets),
                    radius=spiral.receptive_radius(seg.num_skip_modules), step=seg.step,
                    loss_type=seg.loss, remat=bool(seg.remat))
    if seg.step == "cropped" and segmenter.fov_margin < segmenter.radius:
      raise ValueError(
          f"step='cropped' is exact only if the centre block lies >= r = {segmenter.radius} px "
          f"inside the {region_shape} field of view; it lies {segmenter.fov_margin} px inside. "
          "Use step='full_fov', fewer skip modules or a larger region.")
    return segmenter

  # --- geometry -------------------------------------------------------------------------------
  @property
  def centre_block(self) -> tuple[int, int]:
    """Top-left of the first (centre) block: where every step's block sits in its FOV."""
    return self.offsets[0]

  @property
  def fov_margin(self) -> int:
    """Distance from the centre block to the nearest FOV edge."""
    (height, width), (y, x), n = self.region_shape, self.centre_block, self.update_size
    return min(y, x, height - y - n, width - x - n)

  @property
  def window_shape(self) -> tuple[int, int]:
    """The input window of one step: the whole FOV, or the block plus r on every side."""
    if self.step == "full_fov":
      return self.region_shape
    side = self.update_size + 2 * self.radius
    return (side, side)

  @property
  def block_in_window(self) -> tuple[int, int]:
    """Where the block's top-left sits inside a step's input window."""
    return self.centre_block if self.step == "full_fov" else (self.radius, self.radius)

  @property
  def canvas_pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero padding (before, after) per spatial axis so that every step's window fits."""
    starts = np.asarray(self.offsets) - np.asarray(self.block_in_window)
    ends = starts + np.asarray(self.window_shape)
    before = np.maximum(0, -starts.min(axis=0))
    after = np.maximum(0, ends.max(axis=0) - np.asarray(self.region_shape))
    return tuple((int(b), int(a)) for b, a in zip(before, after))

  def to_canvas(self, x: jax.Array) -> jax.Array:
    """Places (B, H, W, C) region arrays into the zero canvas."""
    return jnp.pad(x, ((0, 0),) + self.canvas_pads + ((0, 0),))

  def from_canvas(self, canvas: jax.Array) -> jax.Array:
    """Crops the region (B, H, W, C) back out of a canvas."""
    (top, _), (left, _) = self.canvas_pads
    height, width = self.region_shape
    return canvas[:, top:top + height, left:left + width]

  # --- one step -------------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> Any:
    """Initialises the step network's parameters (float32, whatever the compute dtype)."""
    return self._jit_init(rng)

  @functools.cached_property
  def _jit_init(self) -> Callable[[jax.Array], Any]:
    height, width = self.window_shape
    image = jnp.zeros((1, height, width, 1), jnp.float32)
    mask = jnp.zeros((1, height, width, 3), jnp.float32)
    padding = "SAME" if self.step == "full_fov" else "VALID"
    # One jitted function per segmenter: unjitted init runs op by op, and a fresh jit per call
    # would recompile jax.random for every parameter shape each time.
    return jax.jit(lambda rng: self.net.init(rng, image, mask, padding))

  def _canvas_start(self, offset: jax.Array) -> jax.Array:
    (top, _), (left, _) = self.canvas_pads
    return offset + jnp.asarray([top, left], jnp.int32)

  def block_logits(self, params: Any, image_canvas: jax.Array, mask_canvas: jax.Array,
                   offset: jax.Array) -> jax.Array:
    """Logits (B, n, n, 3) of the block at `offset` (region coordinates) from the canvases."""
    batch = image_canvas.shape[0]
    start = self._canvas_start(offset) - jnp.asarray(self.block_in_window, jnp.int32)
    height, width = self.window_shape
    image = lax.dynamic_slice(image_canvas, (0, start[0], start[1], 0), (batch, height, width, 1))
    mask = lax.dynamic_slice(mask_canvas, (0, start[0], start[1], 0), (batch, height, width, 3))
    if self.step == "cropped":
      return self.net.apply(params, image, mask, "VALID")
    logits = self.net.apply(params, image, mask, "SAME")
    (y, x), n = self.block_in_window, self.update_size
    return logits[:, y:y + n, x:x + n]

  def inside_region(self, offset: jax.Array) -> jax.Array:
    """(n, n) bool: which pixels of the block at `offset` lie inside the region."""
    n = self.update_size
    rows = offset[0] + jnp.arange(n)
    cols = offset[1] + jnp.arange(n)
    height, width = self.region_shape
    return (((rows >= 0) & (rows < height))[:, None]) & (((cols >= 0) & (cols < width))[None, :])

  def write_block(self, canvas: jax.Array, block: jax.Array, offset: jax.Array) -> jax.Array:
    """Writes the in-region pixels of `block` (B, n, n, C) into `canvas` at `offset`."""
    start = self._canvas_start(offset)
    index = (0, start[0], start[1], 0)
    old = lax.dynamic_slice(canvas, index, block.shape)
    new = jnp.where(self.inside_region(offset)[None, :, :, None], block.astype(canvas.dtype), old)
    return lax.dynamic_update_slice(canvas, new, index)

  def step_fn(self, params: Any, image_canvas: jax.Array, mask_canvas: jax.Array,
              offset: jax.Array) -> jax.Array:
    """One spiral step: the mask canvas with the block at `offset` replaced by its prediction."""
    logits = self.block_logits(params, image_canvas, mask_canvas, offset)
    return self.write_block(mask_canvas, jax.nn.sigmoid(logits), offset)

  # --- whole spiral ---------------------------------------------------------------------------
  def _canvases(self, regions: jax.Array, init_mask: jax.Array | None):
    regions = jnp.asarray(regions, jnp.float32)
    if regions.shape[1:] != self.region_shape:
      raise ValueError(f"regions must be (B, {self.region_shape}), got {regions.shape}")
    if init_mask is None:
      init_mask = jnp.zeros(regions.shape + (3,), jnp.float32)
    if init_mask.shape != regions.shape + (3,):
      raise ValueError(f"init_mask must be {regions.shape + (3,)}, got {init_mask.shape}")
    return self.to_canvas(regions[..., None]), self.to_canvas(jnp.asarray(init_mask, jnp.float32))

  def _scan(self, body, init):
    """Scans `body(carry, offset)` over the spiral, rematerialising each step if `remat`."""
    if self.remat:
      # prevent_cse=False is safe (and faster) inside scan: the loop already blocks CSE.
      body = jax.checkpoint(body, prevent_cse=False)
    return lax.scan(body, init, jnp.asarray(self.offsets, jnp.int32))

  def apply(self, params: Any, regions: jax.Array,
            init_mask: jax.Array | None = None) -> jax.Array:
    """Segments (B, H, W) regions: probabilities (B, H, W, 3) after the whole spiral."""
    image_canvas, mask_canvas = self._canvases(regions, init_mask)

    def body(mask_canvas, offset):
      return self.step_fn(params, image_canvas, mask_canvas, offset), None

    mask_canvas, _ = lax.scan(body, mask_canvas, jnp.asarray(self.offsets, jnp.int32))
    return self.from_canvas(mask_canvas)

  @functools.cached_property
  def jit_apply(self) -> Callable[..., jax.Array]:
    """`apply` under `jax.jit` (compiled once per input shape)."""
    return jax.jit(self.apply)

  def loss(self, params: Any, regions: jax.Array, labels: jax.Array) -> jax.Array:
    """Scalar BCE training loss against (B, H, W, 3) one-hot labels, per `loss_type`.

    "final": BCE of the final mask state, gradients through the whole recursion. Every region
    pixel is written exactly once, so the final state's logits are collected in a second canvas
    and the BCE is taken on logits (numerically stable).
    "per_step": FFN-style; the fed-back mask is under stop_gradient and each step's loss is the
    BCE of its block's in-region pixels; the loss is the mean over steps.
    """
    image_canvas, mask_canvas = self._canvases(regions, None)
    labels = jnp.asarray(labels, jnp.float32)
    if self.loss_type == "final":
      def body(carry, offset):
        mask_canvas, logit_canvas = carry
        logits = self.block_logits(params, image_canvas, mask_canvas, offset)
        return (self.write_block(mask_canvas, jax.nn.sigmoid(logits), offset),
                self.write_block(logit_canvas, logits, offset)), None

      (_, logit_canvas), _ = self._scan(body, (mask_canvas, jnp.zeros_like(mask_canvas)))
      return optax.sigmoid_binary_cross_entropy(self.from_canvas(logit_canvas), labels).mean()

    label_canvas = self.to_canvas(labels)

    def per_step_body(mask_canvas, offset):
      logits = self.block_logits(params, image_canvas, lax.stop_gradient(mask_canvas), offset)
      start = self._canvas_start(offset)
      target = lax.dynamic_slice(label_canvas, (0, start[0], start[1], 0), logits.shape)
      weight = self.inside_region(offset)[None, :, :, None].astype(jnp.float32)
      bce = optax.sigmoid_binary_cross_entropy(logits, target) * weight
      step_loss = bce.sum() / (weight.sum() * logits.shape[0] * logits.shape[-1])
      return self.write_block(mask_canvas, jax.nn.sigmoid(logits), offset), step_loss

    _, step_losses = self._scan(per_step_body, mask_canvas)
    return step_losses.mean()
