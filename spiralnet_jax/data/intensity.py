"""Per-image intensity normalisation: a percentile range stretched to [0, 1], clipped outside.

`percentiles = (0, 100)` is the thesis' min–max. Inner percentiles, e.g. (1, 99.8) as StarDist
and CSBDeep normalise, make the result robust to a few hot or saturated pixels: under min–max a
single 65535 pixel in a 12-bit field squashes every real intensity below 0.07.
"""

from typing import Any

import numpy as np

MIN_MAX = (0.0, 100.0)


def _check_percentiles(percentiles) -> tuple[float, float]:
  low, high = (float(p) for p in percentiles)
  if not 0.0 <= low < high <= 100.0:
    raise ValueError(f"normalisation percentiles must satisfy 0 <= low < high <= 100, got "
                     f"{tuple(percentiles)}")
  return low, high


def _integer_percentiles(image: np.ndarray, qs: tuple[float, float]) -> np.ndarray:
  """np.percentile's "linear" values of a small-range integer image, from its histogram."""
  lo = int(image.min())
  counts = np.bincount((image.ravel() - lo).astype(np.intp))
  cum = np.cumsum(counts)
  n = cum[-1]
  out = []
  for q in qs:
    pos = q / 100.0 * (n - 1)
    below = int(np.floor(pos))
    above = min(below + 1, n - 1)
    # The k-th smallest value (0-based) is the first histogram bin whose cumulative count > k.
    v_below, v_above = (float(np.searchsorted(cum, k, side="right")) + lo for k in (below, above))
    out.append(v_below + (pos - below) * (v_above - v_below))
  return np.asarray(out)


def intensity_range(image: np.ndarray, percentiles=MIN_MAX) -> tuple[float, float]:
  """(low, high) intensities of `image` at the given percentiles (np.percentile, "linear")."""
  low_q, high_q = _check_percentiles(percentiles)
  image = np.asarray(image)
  if image.size == 0:
    return 0.0, 0.0
  if (low_q, high_q) == MIN_MAX:
    return float(image.min()), float(image.max())
  if image.dtype.kind in "bu" or (image.dtype.kind == "i" and image.dtype.itemsize <= 2):
    # Exact and O(N): a histogram instead of the partition sort over a float64 copy.
    if image.dtype.kind == "b" or int(image.max()) - int(image.min()) < (1 << 20):
      lo, hi = _integer_percentiles(image, (low_q, high_q))
      return float(lo), float(hi)
  lo, hi = np.percentile(image, (low_q, high_q))
  return float(lo), float(hi)


def stretch(image: np.ndarray, low: float, high: float) -> np.ndarray:
  """Maps `low` -> 0 and `high` -> 1 (float32), clipping outside; zeros if high <= low."""
  # float64 keeps wide integer types exact; the result is rounded to float32 once. Halving
  # first keeps `high - low` finite for any finite floats, and is exact (the ratio is unchanged).
  image = np.asarray(image, dtype=np.float64) * 0.5
  low, high = low * 0.5, high * 0.5
  if not high > low:  # Constant image: no contrast to stretch; avoid 0/0 = NaN.
    return np.zeros(image.shape, np.float32)
  return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def normalize(image: np.ndarray, percentiles=MIN_MAX) -> np.ndarray:
  """Per-image normalisation to float32 [0, 1]: the `percentiles` range stretched, clipped."""
  return stretch(image, *intensity_range(image, percentiles))


# Pixels of a big image normalised at once (bounds `stretch`'s float64 temporaries).
BLOCK_PIXELS = 1 << 22


def prepare_image(image: Any, percentile_range: tuple[float, float] = MIN_MAX) -> np.ndarray:
  """Validates a 2-D numeric image and normalises it to float32 [0, 1] (`data.normalize`).

  A big image is stretched in blocks of rows by the whole image's range (bit-identical to
  normalising it whole) so that the float64 temporaries stay the size of a block.
  """
  image = np.asarray(image)
  if image.ndim != 2:
    raise ValueError(f"expected a 2-D (H, W) image, got shape {image.shape}")
  if image.size == 0:
    raise ValueError(f"expected an image of at least 1×1, got shape {image.shape}")
  if image.dtype.kind not in "biuf":
    raise ValueError(f"expected a boolean or real numeric image, got dtype {image.dtype}")
  rows = max(1, BLOCK_PIXELS // image.shape[1])
  if image.dtype.kind == "f" and not all(np.isfinite(image[r:r + rows]).all()
                                         for r in range(0, image.shape[0], rows)):
    raise ValueError("image contains NaN or infinite values")
  low, high = intensity_range(image, percentile_range)
  out = np.empty(image.shape, np.float32)
  for r in range(0, image.shape[0], rows):
    out[r:r + rows] = stretch(image[r:r + rows], low, high)
  return out
