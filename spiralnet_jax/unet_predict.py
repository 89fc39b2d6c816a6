"""The U-Net baseline's whole-image prediction: square tiles with context margins, then components.

The U-Net predicts in square tiles of `predict.unet_tile` pixels, each seen with a margin of
`unet_margin(depth)` ≥ its receptive-field radius, so tiles equal whole-image prediction (up to
float rounding) and memory is bounded by the tile. Instances are the connected components of
the mask (`unet.instances_from_semantic`). Images are prepared as for SpiralNet
(`predict.prepare_image`), and a constant image gives empty masks without running the network.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from spiralnet_jax import checkpoints
from spiralnet_jax import predict as predict_lib
from spiralnet_jax import stages
from spiralnet_jax import unet as unet_lib

PathLike = predict_lib.PathLike


@dataclasses.dataclass(frozen=True)
class UNetPredictor:
  """The U-Net baseline's parameters plus the config that built them (and the network)."""

  config: ml_collections.ConfigDict
  params: Any
  net: Optional[unet_lib.UNet] = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    if self.net is None:
      object.__setattr__(self, "net", stages.UNET.model(self.config))

  @classmethod
  def from_params(cls, config: ml_collections.ConfigDict, params: Any) -> "UNetPredictor":
    """A U-Net predictor from in-memory parameters."""
    return cls(config=config, params=params)

  @classmethod
  def from_workdir(cls, workdir: PathLike,
                   config: Optional[ml_collections.ConfigDict] = None) -> "UNetPredictor":
    """Restores the latest unet checkpoint in `workdir` (config defaults to its config.json)."""
    if config is None:
      config = checkpoints.load_config(workdir)
    return cls.from_params(config, checkpoints.load_params(workdir, "unet", config))


def unet_margin(depth: int) -> int:
  """Context (pixels, a multiple of 2^depth) a tile needs on each side: ≥ the receptive radius.

  Walking back from one output pixel, each 3×3 convolution at level l (scale 2^l) widens the
  dependence by 2^l per side: 2 per level down, 2 at the bottleneck (level depth), 2 per level
  up, 6·2^depth − 4 in all. Max-pooling and the stride-2 transposed convolution snap to their
  2^(l+1) grid, at most 2^(l+1) more per level on the way down and up: 4·(2^depth − 1). Hence
  radius ≤ 10·2^depth − 8; a multiple of 2^depth keeps tiles on the pooling grid.
  """
  return 10 * 2**depth


@functools.partial(jax.jit, static_argnums=0)
def _unet_semantic_tile(net: unet_lib.UNet, params: Any, tile: jax.Array,
                        threshold: float) -> jax.Array:
  """Foreground mask of one (h, w) tile (compiled once per network and tile shape)."""
  logits = net.apply({"params": params}, tile[None, :, :, None])
  return unet_lib.unet_predict_semantic(logits, threshold)[0]


def unet_tiles(image_shape: tuple[int, int], tile: int,
               margin: int) -> list[tuple[slice, slice, slice, slice]]:
  """(window rows, window cols, core rows, core cols) of each tile; core slices are local.

  Tile cores of tile×tile pixels cover the image; each window adds `margin` pixels of context
  on every side that is not an image edge. One window covering everything when it fits.
  """
  height, width = image_shape

  def spans(n):
    if n <= tile + 2 * margin:
      return [(0, n, 0, n)]
    out = []
    for start in range(0, n, tile):
      lo, hi = max(start - margin, 0), min(start + tile + margin, n)
      out.append((lo, hi, start - lo, min(start + tile, n) - lo))
    return out

  return [(slice(r0, r1), slice(c0, c1), slice(a0, a1), slice(b0, b1))
          for r0, r1, a0, a1 in spans(height) for c0, c1, b0, b1 in spans(width)]


def predict_unet(predictor: UNetPredictor, image: Any,
                 progress: Optional[predict_lib.Progress] = None) -> tuple[np.ndarray, np.ndarray]:
  """(semantic bool (H, W), instances int32 (H, W)): tiled U-Net, connected components.

  Tiles start on multiples of 2^depth, so pooling windows line up with the whole image's, and
  a tile at the bottom or right edge is padded by the network exactly as the whole image is.
  `progress(done, total)` follows the tiles.
  """
  return predict_unet_prepared(
      predictor, predict_lib.prepare_image(image, predict_lib.percentiles(predictor.config)),
      progress)


def predict_unet_prepared(predictor: UNetPredictor, image: np.ndarray,
                          progress: Optional[predict_lib.Progress] = None
                          ) -> tuple[np.ndarray, np.ndarray]:
  """`predict_unet` of an image that is already `predict.prepare_image`'s output."""
  if not image.any():
    return predict_lib.empty_masks(image.shape)
  depth = int(predictor.config.unet.depth)
  tile = int(predictor.config.predict.unet_tile)
  tile = max(2**depth, tile + (-tile % 2**depth))
  threshold = float(predictor.config.unet.threshold)
  semantic = np.zeros(image.shape, bool)
  tiles = unet_tiles(image.shape, tile, unet_margin(depth))
  for done, (rows, cols, core_rows, core_cols) in enumerate(tiles):
    mask = _unet_semantic_tile(predictor.net, predictor.params, image[rows, cols], threshold)
    semantic[rows, cols][core_rows, core_cols] = np.asarray(mask)[core_rows, core_cols]
    if progress is not None:
      progress(done + 1, len(tiles))
  return semantic, unet_lib.instances_from_semantic(semantic)
