"""The classical baseline: Otsu threshold + distance-transform watershed (scikit-image).

The pipeline image analysts write in twenty lines: Gaussian smoothing (σ 1), Otsu's threshold,
holes filled, peaks of the Euclidean distance transform at least 7 px apart as markers, a
watershed of the negated distance inside the mask. No training; the numbers are fixed by
`config.classical`.
"""

import numpy as np
import scipy.ndimage as ndi
import skimage.feature
import skimage.filters
import skimage.segmentation


def otsu_watershed(image: np.ndarray, sigma: float = 1.0, min_distance: int = 7,
                   min_size: int = 15) -> tuple[np.ndarray, np.ndarray]:
  """(semantic bool (H, W), instances int32 (H, W)) of a normalised (H, W) image."""
  image = np.asarray(image, np.float32)
  smooth = skimage.filters.gaussian(image, sigma=sigma, preserve_range=True)
  if not np.ptp(smooth) > 0:  # Constant image: no threshold separates anything.
    return np.zeros(image.shape, bool), np.zeros(image.shape, np.int32)
  mask = ndi.binary_fill_holes(smooth > skimage.filters.threshold_otsu(smooth))
  distance = ndi.distance_transform_edt(mask)
  components, _ = ndi.label(mask)
  peaks = skimage.feature.peak_local_max(distance, min_distance=min_distance, labels=components,
                                         exclude_border=False)
  markers = np.zeros(image.shape, np.int32)
  markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
  instances = skimage.segmentation.watershed(-distance, markers, mask=mask).astype(np.int32)
  if min_size > 0:
    sizes = np.bincount(instances.ravel())
    small = sizes < min_size
    small[0] = False
    instances[small[instances]] = 0
  instances, _, _ = skimage.segmentation.relabel_sequential(instances)
  return instances > 0, instances.astype(np.int32)
