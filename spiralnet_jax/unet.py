"""The U-Net baseline (Ronneberger et al. 2015; thesis §4.4) and its instance post-processing.

Architecture: `depth` levels down and up with base·2^k features (64 … 1024 for base 64, depth
4), two 3×3 SAME convolutions + ReLU per level, 2×2 max-pool down, 2×2 stride-2 transposed
convolution up, skip connections by concatenation, and a final 1×1 convolution to logits.

Any input size works: the input is reflect-padded at the bottom and right up to a multiple of
2^depth (so every pooling halves exactly) and the logits are cropped back. Reflect (rather than
zero) padding continues the image texture, as Ronneberger's mirrored border extrapolation does,
so the padded strip does not look like a dark frame to the network.

Instances are the connected components of the thresholded mask (4-connectivity, the same rule
that defines BBBC039's ground-truth instances), so touching nuclei merge into one instance:
this is the baseline's known weakness the thesis compares against.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from skimage import measure


class UNet(nn.Module):
  """U-Net: images (B, H, W[, C]) -> logits (B, H, W, out_features)."""

  base_features: int = 64
  depth: int = 4
  out_features: int = 1
  dtype: Any = jnp.float32  # Computation dtype; parameters stay float32.

  def _double_conv(self, x: jax.Array, features: int, name: str) -> jax.Array:
    for i in range(2):
      x = nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype, name=f"{name}_conv{i}")(x)
      x = nn.relu(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    h, w = x.shape[1:3]
    multiple = 2 ** self.depth
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    x = x.astype(self.dtype)

    skips = []
    for level in range(self.depth):
      x = self._double_conv(x, self.base_features * 2 ** level, f"down{level}")
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = self._double_conv(x, self.base_features * 2 ** self.depth, "bottleneck")
    for level in reversed(range(self.depth)):
      features = self.base_features * 2 ** level
      x = nn.ConvTranspose(features, (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype,
                           name=f"up{level}_transpose")(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = self._double_conv(x, features, f"up{level}")
    x = nn.Conv(self.out_features, (1, 1), dtype=self.dtype, name="logits")(x)
    # Logits in float32 so the loss and thresholding do not depend on the compute dtype.
    return x[:, :h, :w, :].astype(jnp.float32)


def unet_predict_semantic(logits: jax.Array, threshold: float) -> jax.Array:
  """Foreground mask sigmoid(logits) > threshold; a trailing channel axis of size 1 is dropped."""
  if logits.shape[-1] == 1:
    logits = logits[..., 0]
  return jax.nn.sigmoid(logits) > threshold


def instances_from_semantic(mask: np.ndarray) -> np.ndarray:
  """Instance ids 1..N of the 4-connected components of a (H, W) mask; 0 = background."""
  return measure.label(np.asarray(mask, bool), connectivity=1, background=0).astype(np.int32)
