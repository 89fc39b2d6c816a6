"""Nucleus size: images whose nuclei are another size than the training data's.

A model knows nuclei of the size it was trained on: `data.nucleus_diameter`, the median
equivalent diameter (the diameter of the disk of the same area) of the training labels' nuclei
(BBBC039's 100 training fields: 28.25 px). Given the diameter of an image's nuclei,
`at_diameter` rescales the image so that they match, predicts, and brings the masks back to the
input's shape by nearest neighbour, label ids kept (Cellpose's `diameter`, StarDist's `scale`).
Without a diameter nothing is rescaled.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

# Rescaling by more than this either way is refused: 8× a side is 64× the pixels (and the
# network's 52×58 regions would no longer hold a nucleus or would hold dozens).
MAX_FACTOR = 8.0

Masks = tuple[np.ndarray, np.ndarray]


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
  """sqrt(4·area/π) of every instance of a label image (ascending ids), in pixels."""
  _, areas = np.unique(labels[labels > 0], return_counts=True)
  return np.sqrt(4.0 * areas / np.pi)


def median_diameter(label_images: Iterable[np.ndarray]) -> float:
  """The median equivalent diameter over every instance of several label images."""
  diameters = np.concatenate([equivalent_diameters(np.asarray(x)) for x in label_images])
  if diameters.size == 0:
    raise ValueError("no labelled nuclei to measure")
  return float(np.median(diameters))


def scale_factor(diameter: float, reference: float) -> float:
  """How much to magnify an image whose nuclei measure `diameter` px so they measure `reference`."""
  if not reference > 0:
    raise ValueError("the model records no training nucleus diameter (data.nucleus_diameter "
                     "is 0), so --diameter cannot be used with it")
  if not (np.isfinite(diameter) and diameter > 0):
    raise ValueError(f"--diameter must be a positive number of pixels, got {diameter}")
  factor = reference / diameter
  if not 1 / MAX_FACTOR <= factor <= MAX_FACTOR:
    raise ValueError(f"--diameter {diameter:g} is too far from the model's {reference:g} px "
                     f"(accepted: {reference / MAX_FACTOR:g} to {reference * MAX_FACTOR:g} px)")
  return factor


def rescaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
  """(H, W) magnified by `factor`, rounded, at least 1×1."""
  return tuple(max(1, int(round(n * factor))) for n in shape)


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
  """A float32 image magnified by `factor`: bilinear, anti-aliased when shrinking."""
  from skimage import transform  # pylint: disable=g-import-not-at-top
  out = transform.resize(np.asarray(image, np.float32), rescaled_shape(image.shape, factor),
                         order=1, mode="reflect", anti_aliasing=factor < 1,
                         preserve_range=True)
  return out.astype(np.float32)


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """`mask` resized to `shape` by nearest neighbour (pixel centres); values and dtype kept."""
  rows = np.minimum(((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(np.int64),
                    mask.shape[0] - 1)
  cols = np.minimum(((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(np.int64),
                    mask.shape[1] - 1)
  return mask[rows[:, None], cols[None, :]]


def at_diameter(predict_fn: Callable[[np.ndarray], Masks], image: np.ndarray,
                diameter: float, reference: float) -> Masks:
  """`predict_fn` (normalised image -> (semantic, instances)) on `image` rescaled so that nuclei
  of `diameter` px measure `reference` px, its masks brought back to the image's shape."""
  factor = scale_factor(diameter, reference)
  if factor == 1.0:
    return predict_fn(image)
  semantic, instances = predict_fn(rescale(image, factor))
  return resize_nearest(semantic, image.shape), resize_nearest(instances, image.shape)
