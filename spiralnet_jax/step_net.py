"""The segmenter's step network: image and mask branches, their merge, skip modules, 3-channel head.

One step of the spiral (`segmenter.Segmenter`) runs `StepNet` on a window of the image and of
the mask state. Under VALID padding the output shrinks by the receptive radius on every side
(`spiral.receptive_radius`); the merge convolution can be split into its image and mask halves,
which is what lets `Segmenter` hoist the image half out of the scan.
"""

from collections.abc import Callable
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from spiralnet_jax import spiral


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

  def _merge_part(self, features: jax.Array, channels: slice, padding: str) -> jax.Array:
    """The merge convolution restricted to input `channels` (no bias); it is linear in them."""
    if self.is_initializing():
      raise ValueError("initialise StepNet with the plain call (image and mask)")
    kernel = self.variables["params"]["merge_conv"]["kernel"][:, :, channels]
    features, kernel = nn.dtypes.promote_dtype(features, kernel, dtype=self.dtype)
    conv_fn = self.conv_general_dilated or lax.conv_general_dilated
    return conv_fn(features, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

  @nn.compact
  def __call__(self, image: jax.Array | None, mask: jax.Array | None, padding: str = "SAME",
               image_part: jax.Array | None = None, image_part_only: bool = False) -> jax.Array:
    """Logits; or, with `image_part_only`, the image half of the merge conv (pre-bias, mask
    unused), which a later call takes as `image_part` instead of the image (VALID only)."""
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    kernels = spiral.step_kernel_sizes(self.num_skip_modules)
    conv_layer = functools.partial(nn.Conv, padding=padding, dtype=self.dtype,
                                   conv_general_dilated=self.conv_general_dilated)
    k = kernels[0]
    image_branch = conv_layer(self.branch_features, (k, k), name="image_conv")
    mask_branch = conv_layer(self.branch_features, (k, k), name="mask_conv")
    image_channels = slice(0, self.branch_features)
    if image_part_only:
      return self._merge_part(nn.relu(image_branch(image)), image_channels, padding)
    mask_features = nn.relu(mask_branch(mask))
    k = kernels[1]
    if image_part is None:
      image_features = nn.relu(image_branch(image))
      x = jnp.concatenate([image_features, mask_features], axis=-1)
      x = nn.relu(conv_layer(self.features, (k, k), name="merge_conv")(x))
    else:
      # Split only under VALID: a SAME window's zero border is not the canvas' content.
      if padding != "VALID":
        raise ValueError("image_part needs VALID padding")
      mask_part = self._merge_part(mask_features, slice(self.branch_features, None), padding)
      bias = self.variables["params"]["merge_conv"]["bias"]
      x = nn.relu(image_part + mask_part + bias.astype(mask_part.dtype))
    for i in range(self.num_skip_modules):
      x = SkipModule(self.skip_features, self.features, kernels[2 + 2 * i:4 + 2 * i], padding,
                     self.dtype, self.conv_general_dilated, name=f"skip_{i}")(x)
    k = kernels[-1]
    # Deliberate deviation from the thesis: no ReLU before the sigmoid (docs/design.md).
    logits = conv_layer(3, (k, k), name="head")(x)
    return logits.astype(jnp.float32)
