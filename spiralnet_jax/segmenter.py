"""Stage 2: the recursive segmenting network, one `lax.scan` over the spiral per region.

A step reads a window of the image and of the current mask state, predicts 3-channel logits,
and writes the sigmoid of the n x n block at the spiral position into the mask state (only the
block pixels inside the region). Two step implementations, same parameters, same outputs:
  * "full_fov": the thesis literally: the whole H x W field of view, SAME convolutions, keep the
    block that sits where the centre block sits in the region;
  * "cropped": only the (n + 2r) x (n + 2r) window the block depends on (r = receptive radius),
    VALID convolutions; exact while the centre block lies >= r px inside the FOV (checked).
One region's spiral is a `lax.scan` over the precomputed offsets (`apply_region`); `apply`
vmaps it across regions and XLA folds the vmapped axis into the convolutions' batch: bitwise
the batch-native scan (`apply_batch`, tested). The loss stays batch-native: vmapped
(`loss_vmapped`, equal up to rounding, tested) its backward pass is 1.24x slower on the CPU.

Two exact reformulations of the scan (same outputs up to float rounding, tested):
  * hoisting (`cropped` `apply`): the image branch and the image half of the merge convolution
    do not depend on the mask state, and a VALID convolution of a window is the window of the
    VALID convolution of the canvas, so both run once per region (17% fewer FLOPs, ~1.2x
    forward on the 2-core CPU). The loss does not hoist: each reverse scan iteration would add
    into the whole hoisted canvas's gradient (~13% slower training steps there).
  * grouping (`segmenter.group_steps`): steps that cannot read each other's blocks
    (`spiral.step_dependencies`) run together along the ASAP wavefronts of
    `spiral.wavefront_schedule`: 49 sequential iterations instead of 56. Same FLOPs: it helps
    only where a step is latency-bound (small batches on a GPU).
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from spiralnet_jax import conv
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import spiral
from spiralnet_jax.step_net import StepNet

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _use_conv_vjp(setting: str) -> bool:
  """Resolves `segmenter.cpu_conv_vjp` ("auto": only on the CPU backend)."""
  if setting not in ("auto", "on", "off"):
    raise ValueError(f"segmenter.cpu_conv_vjp must be 'auto', 'on' or 'off', got {setting!r}")
  return setting == "on" or (setting == "auto" and jax.default_backend() == "cpu")


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
  group_steps: bool = False  # Run independent steps together (exact; see module docstring).
  hoist_image: bool = True  # `cropped` `apply` only: image branch once per region (exact).
  # > 0: the initial mask state has a central-object disk (channel 0 = 1) of this radius at
  # the centre pixel, as FFN seeds its object mask (the thesis: zeros; see `seed_mask`).
  seed_radius: int = 0
  # Loss weight 1 + boundary_weight where touching nuclei meet (`boundary_weights`); 0: uniform.
  boundary_weight: float = 0.0
  boundary_radius: int = 3

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
                    loss_type=seg.loss, remat=bool(seg.remat),
                    group_steps=bool(seg.group_steps), seed_radius=int(seg.seed_radius),
                    boundary_weight=float(seg.boundary_weight),
                    boundary_radius=int(seg.boundary_radius))
    if segmenter.seed_radius < 0:
      raise ValueError(f"segmenter.seed_radius must be >= 0, got {seg.seed_radius}")
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

  @property
  def hoisted(self) -> bool:
    """Whether `apply`'s scan reads a precomputed image part rather than the image."""
    return self.hoist_image and self.step == "cropped"

  @functools.cached_property
  def schedule(self) -> tuple[tuple[int, ...], ...]:
    """Step indices per scan iteration: one each, or the ASAP wavefronts if `group_steps`."""
    if not self.group_steps:
      return tuple((k,) for k in range(len(self.offsets)))
    return spiral.wavefront_schedule(spiral.step_dependencies(
        np.asarray(self.offsets), self.region_shape, self.update_size, self.radius))

  @functools.cached_property
  def schedule_segments(self) -> tuple[np.ndarray, ...]:
    """(L, G, 2) int32 block offsets per scan: runs of consecutive levels of equal width G."""
    segments, run = [], []
    for level in self.schedule:
      if run and len(run[-1]) != len(level):
        segments.append(run)
        run = []
      run.append(level)
    segments.append(run)
    offsets = np.asarray(self.offsets, np.int32)
    return tuple(offsets[np.asarray(run)] for run in segments)

  def to_canvas(self, x: jax.Array) -> jax.Array:
    """Places (B, H, W, C) region arrays into the zero canvas."""
    return jnp.pad(x, ((0, 0),) + self.canvas_pads + ((0, 0),))

  def from_canvas(self, canvas: jax.Array) -> jax.Array:
    """Crops the region (B, H, W, C) back out of a canvas."""
    (top, _), (left, _) = self.canvas_pads
    return canvas[:, top:top + self.region_shape[0], left:left + self.region_shape[1]]

  # --- one step -------------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> Any:
    """Initialises the step network's parameters (float32, whatever the compute dtype)."""
    return self._jit_init(rng)

  @functools.cached_property
  def _jit_init(self) -> Callable[[jax.Array], Any]:
    height, width = self.window_shape
    image = np.zeros((1, height, width, 1), np.float32)  # NumPy: a cached trace-free constant.
    mask = np.zeros((1, height, width, 3), np.float32)
    padding = "SAME" if self.step == "full_fov" else "VALID"
    # One jitted function per segmenter: unjitted init runs op by op, and a fresh jit per call
    # would recompile jax.random for every parameter shape each time.
    return jax.jit(lambda rng: self.net.init(rng, image, mask, padding))

  def _canvas_start(self, offset: jax.Array) -> jax.Array:
    (top, _), (left, _) = self.canvas_pads
    return offset + jnp.asarray([top, left], jnp.int32)

  @property
  def _image_part_crop(self) -> int:
    """Pixels per side that the image conv and the merge conv take off a VALID window."""
    return sum((k - 1) // 2 for k in spiral.step_kernel_sizes(self.net.num_skip_modules)[:2])

  def image_source(self, params: Any, image_canvas: jax.Array, hoisted: bool) -> jax.Array:
    """What the scan's steps read of the image: the canvas, or (`hoisted`) the image half of
    the merge conv over the whole canvas, (B, Hc - 2c, Wc - 2c, features), c = 2."""
    if not hoisted:
      return image_canvas
    return self.net.apply(params, image_canvas, None, "VALID", image_part_only=True)

  def _windows(self, source: jax.Array, mask_canvas: jax.Array, offset: jax.Array,
               hoisted: bool) -> tuple[jax.Array, jax.Array]:
    """The step's input windows at `offset` of the image source and of the mask canvas."""
    batch = mask_canvas.shape[0]
    start = self._canvas_start(offset) - jnp.asarray(self.block_in_window, jnp.int32)
    height, width = self.window_shape
    mask = lax.dynamic_slice(mask_canvas, (0, start[0], start[1], 0), (batch, height, width, 3))
    # A VALID conv's output pixel (y, x) sees input pixels from (y, x) on: same start.
    crop = 2 * self._image_part_crop if hoisted else 0
    shape = (batch, height - crop, width - crop, source.shape[-1])
    return lax.dynamic_slice(source, (0, start[0], start[1], 0), shape), mask

  def _window_logits(self, params: Any, source: jax.Array, mask: jax.Array,
                     hoisted: bool) -> jax.Array:
    """Block logits (B, n, n, 3) from a step's input windows."""
    if self.step == "cropped":
      if hoisted:
        return self.net.apply(params, None, mask, "VALID", image_part=source)
      return self.net.apply(params, source, mask, "VALID")
    logits = self.net.apply(params, source, mask, "SAME")
    (y, x), n = self.block_in_window, self.update_size
    return logits[:, y:y + n, x:x + n]

  def block_logits(self, params: Any, image_canvas: jax.Array, mask_canvas: jax.Array,
                   offset: jax.Array) -> jax.Array:
    """Logits (B, n, n, 3) of the block at `offset` (region coordinates) from the canvases."""
    return self._window_logits(
        params, *self._windows(image_canvas, mask_canvas, offset, False), False)

  def _group_logits(self, params: Any, source: jax.Array, mask_canvas: jax.Array,
                    offsets: jax.Array, hoisted: bool) -> jax.Array:
    """(G, B, n, n, 3) logits of the G independent blocks at `offsets` (G, 2), one batch."""
    group, batch = offsets.shape[0], mask_canvas.shape[0]
    windows = [self._windows(source, mask_canvas, offsets[g], hoisted) for g in range(group)]
    if group == 1:
      return self._window_logits(params, *windows[0], hoisted)[None]
    logits = self._window_logits(params, jnp.concatenate([w[0] for w in windows]),
                                 jnp.concatenate([w[1] for w in windows]), hoisted)
    return logits.reshape((group, batch) + logits.shape[1:])

  def _write_group(self, canvas: jax.Array, blocks: jax.Array, offsets: jax.Array) -> jax.Array:
    """Writes (G, B, n, n, C) blocks; they are disjoint, so the order does not matter."""
    for g in range(offsets.shape[0]):
      canvas = self.write_block(canvas, blocks[g], offsets[g])
    return canvas

  def inside_region(self, offset: jax.Array) -> jax.Array:
    """(n, n) bool: which pixels of the block at `offset` lie inside the region."""
    rows, cols = offset[0] + jnp.arange(self.update_size), offset[1] + jnp.arange(self.update_size)
    height, width = self.region_shape
    return (((rows >= 0) & (rows < height))[:, None]) & (((cols >= 0) & (cols < width))[None, :])

  def write_block(self, canvas: jax.Array, block: jax.Array, offset: jax.Array) -> jax.Array:
    """Writes the in-region pixels of `block` (B, n, n, C) into `canvas` at `offset`."""
    start = self._canvas_start(offset)
    index = (0, start[0], start[1], 0)  # Canvas coordinates of the block.
    old = lax.dynamic_slice(canvas, index, block.shape)
    new = jnp.where(self.inside_region(offset)[None, :, :, None], block.astype(canvas.dtype), old)
    return lax.dynamic_update_slice(canvas, new, index)

  def step_fn(self, params: Any, image_canvas: jax.Array, mask_canvas: jax.Array,
              offset: jax.Array) -> jax.Array:
    """One spiral step: the mask canvas with the block at `offset` replaced by its prediction."""
    logits = self.block_logits(params, image_canvas, mask_canvas, offset)
    return self.write_block(mask_canvas, jax.nn.sigmoid(logits), offset)

  # --- whole spiral ---------------------------------------------------------------------------
  @functools.cached_property
  def seed_mask(self) -> np.ndarray:
    """(H, W, 3) float32 initial mask state of a fresh region: zeros, plus the seed disk."""
    height, width = self.region_shape
    mask = np.zeros((height, width, 3), np.float32)
    if self.seed_radius > 0:
      yy, xx = np.mgrid[:height, :width]
      cy, cx = height // 2, width // 2  # The centre pixel, as regions.RegionGeometry.centre.
      mask[..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 <= self.seed_radius ** 2
    return mask

  def initial_mask(self, batch: int) -> np.ndarray:
    """(batch, H, W, 3) initial mask states of fresh regions (`seed_mask` each)."""
    return np.broadcast_to(self.seed_mask, (batch,) + self.seed_mask.shape).copy()

  def _canvases(self, regions: jax.Array, init_mask: jax.Array | None):
    regions = jnp.asarray(regions, jnp.float32)
    if regions.shape[1:] != self.region_shape:
      raise ValueError(f"regions must be (B, {self.region_shape}), got {regions.shape}")
    if init_mask is None:
      init_mask = jnp.broadcast_to(jnp.asarray(self.seed_mask), regions.shape + (3,))
    if init_mask.shape != regions.shape + (3,):
      raise ValueError(f"init_mask must be {regions.shape + (3,)}, got {init_mask.shape}")
    return self.to_canvas(regions[..., None]), self.to_canvas(jnp.asarray(init_mask, jnp.float32))

  def _scan(self, body, init, remat: bool):
    """(carry, per-segment outputs) of `body(carry, offsets (G, 2))`, one scan per segment."""
    if remat:
      # prevent_cse=False is safe (and faster) inside scan: the loop already blocks CSE.
      body = jax.checkpoint(body, prevent_cse=False)
    outputs = []
    for segment in self.schedule_segments:
      init, output = lax.scan(body, init, jnp.asarray(segment))
      outputs.append(output)
    return init, outputs

  def apply(self, params: Any, regions: jax.Array,
            init_mask: jax.Array | None = None) -> jax.Array:
    """Segments (B, H, W) regions from `init_mask` (default `initial_mask`): probabilities
    (B, H, W, 3) after the whole spiral; `apply_region` vmapped over the regions."""
    regions = jnp.asarray(regions, jnp.float32)
    if init_mask is None:
      init_mask = jnp.broadcast_to(jnp.asarray(self.seed_mask), regions.shape + (3,))
    return jax.vmap(self.apply_region, in_axes=(None, 0, 0))(params, regions, init_mask)

  def apply_region(self, params: Any, region: jax.Array, init_mask: jax.Array) -> jax.Array:
    """One (H, W) region's spiral, a `lax.scan` over the block offsets: (H, W, 3)."""
    return self.apply_batch(params, region[None], init_mask[None])[0]

  def apply_batch(self, params: Any, regions: jax.Array,
                  init_mask: jax.Array | None = None) -> jax.Array:
    """`apply` with the regions batched inside the convolutions (what `apply_region` runs)."""
    image_canvas, mask_canvas = self._canvases(regions, init_mask)
    source = self.image_source(params, image_canvas, self.hoisted)
    body = lambda canvas, offsets: (self.predict_group(params, source, canvas, offsets), None)
    mask_canvas, _ = self._scan(body, mask_canvas, remat=False)
    return self.from_canvas(mask_canvas)

  def predict_group(self, params: Any, source: jax.Array, mask_canvas: jax.Array,
                    offsets: jax.Array) -> jax.Array:
    """The mask canvas with its G independent blocks at `offsets` (G, 2) predicted (`apply`)."""
    logits = self._group_logits(params, source, mask_canvas, offsets, self.hoisted)
    return self._write_group(mask_canvas, jax.nn.sigmoid(logits), offsets)

  def loss(self, params: Any, regions: jax.Array, labels: jax.Array) -> jax.Array:
    """Scalar BCE training loss against (B, H, W, 3) one-hot labels, per `loss_type`.

    "final": BCE of the final mask state (its logits, collected in a second canvas: every pixel
    is written once), gradients through the whole recursion. "per_step": FFN-style, the fed-back
    mask under stop_gradient, the mean over steps of each block's in-region BCE. Either is a
    weighted mean under `boundary_weights` when `boundary_weight` > 0.
    """
    nums, dens = self._loss_terms(params, regions, jnp.asarray(labels, jnp.float32))
    return (nums / dens).mean()

  def loss_vmapped(self, params: Any, regions: jax.Array, labels: jax.Array) -> jax.Array:
    """`loss` as one region's terms vmapped across regions (equal up to rounding; see above)."""
    nums, dens = jax.vmap(lambda r, y: self._loss_terms(params, r[None], y[None]))(
        jnp.asarray(regions, jnp.float32), jnp.asarray(labels, jnp.float32))
    return (nums.sum(0) / dens.sum(0)).mean()

  def _loss_terms(self, params: Any, regions: jax.Array,
                  labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(numerators, denominators) of the loss over the regions, one pair per averaged term:
    (1,) for "final", (steps,) for "per_step"; sums over regions add up to the batch's."""
    source, mask_canvas = self._canvases(regions, None)  # The image canvas: not hoisted.
    pixel_weight = (regions_lib.boundary_weights(labels, self.boundary_radius, self.boundary_weight)
                    if self.boundary_weight > 0 else None)  # None: uniform, no map to apply.
    channels = labels.shape[-1]
    if self.loss_type == "final":
      def body(carry, offsets):
        mask_canvas, logit_canvas = carry
        logits = self._group_logits(params, source, mask_canvas, offsets, False)
        return (self._write_group(mask_canvas, jax.nn.sigmoid(logits), offsets),
                self._write_group(logit_canvas, logits, offsets)), None

      (_, logit_canvas), _ = self._scan(body, (mask_canvas, jnp.zeros_like(mask_canvas)),
                                        self.remat)
      bce = optax.sigmoid_binary_cross_entropy(self.from_canvas(logit_canvas), labels)
      if pixel_weight is None:
        return bce.sum()[None], jnp.full((1,), bce.size, jnp.float32)
      return (bce * pixel_weight).sum()[None], (pixel_weight.sum() * channels)[None]

    label_canvas = self.to_canvas(labels)
    weight_canvas = None if pixel_weight is None else self.to_canvas(pixel_weight)

    def per_step_body(mask_canvas, offsets):
      group_logits = self._group_logits(params, source, lax.stop_gradient(mask_canvas), offsets,
                                        False)
      nums, dens = [], []
      for g in range(offsets.shape[0]):
        logits, start = group_logits[g], self._canvas_start(offsets[g])
        target = lax.dynamic_slice(label_canvas, (0, start[0], start[1], 0), logits.shape)
        weight = self.inside_region(offsets[g])[None, :, :, None].astype(jnp.float32)
        if weight_canvas is not None:  # (B, n, n, 1); uniform: (1, n, n, 1) for all B regions.
          weight = weight * lax.dynamic_slice(weight_canvas, (0, start[0], start[1], 0),
                                              logits.shape[:3] + (1,))
        nums.append((optax.sigmoid_binary_cross_entropy(logits, target) * weight).sum())
        dens.append(weight.sum() * channels * (1 if weight_canvas is not None else len(logits)))
      mask_canvas = self._write_group(mask_canvas, jax.nn.sigmoid(group_logits), offsets)
      return mask_canvas, (jnp.stack(nums), jnp.stack(dens))

    _, terms = self._scan(per_step_body, mask_canvas, self.remat)
    return (jnp.concatenate([n.reshape(-1) for n, _ in terms]),
            jnp.concatenate([d.reshape(-1) for _, d in terms]))
