"""Synthetic fluorescence nuclei: seeded images with exact instance labels (tests, tiny configs).

The picture imitates a BBBC039 field: elliptical nuclei 12-30 px across with varied brightness,
lying apart as cells do (a centre whose ellipse could reach a neighbour's is redrawn), except a
chosen fraction placed against an earlier nucleus, touching or overlapping it (a later nucleus is
drawn on top, so the labels stay a partition); a smooth uneven background, optical blur, Poisson
shot noise plus Gaussian read noise, and values in the 12-bit range (0..4095) stored as uint16.
"""

import math
from typing import Optional

import numpy as np
import scipy.ndimage
import skimage.measure

DEFAULT_SHAPE = (128, 160)
# Calibrated to BBBC039's crowding: at 0.2 the true foreground's 4-connected components score
# instance F1@0.5 0.89 on the 24 synthetic training fields; on BBBC039 validation and test, 0.883.
DEFAULT_TOUCH_PROBABILITY = 0.2
# Free space kept between nuclei that are not placed touching: two blurred edges (sigma 1.2)
# this far apart still show a background dip between them.
DEFAULT_MIN_GAP = 3.0
MAX_PLACEMENT_TRIES = 100
MAX_VALUE = 4095  # 12-bit camera range, as in BBBC039.


def _smooth_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
  """A smooth, uneven background: a level, a tilt and one broad bump (uneven illumination)."""
  h, w = shape
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
  gy, gx = rng.uniform(-0.3, 0.3, size=2)
  cy, cx = rng.uniform(-0.5, 0.5, size=2)
  bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.35 ** 2))
  shape_field = 1.0 + gy * yy + gx * xx + rng.uniform(0.1, 0.3) * bump
  return rng.uniform(140.0, 240.0) * shape_field


def _render(labels: np.ndarray, brightness: np.ndarray, rng: np.random.Generator,
            blur_sigma: float) -> np.ndarray:
  """Paints nuclei of the given brightness over a background, blurs, adds noise -> uint16."""
  background = _smooth_background(rng, labels.shape)
  # Chromatin texture: smooth multiplicative variation inside nuclei.
  texture = scipy.ndimage.gaussian_filter(rng.standard_normal(labels.shape), 2.0)
  texture /= max(np.abs(texture).max(), 1e-12)
  amplitude = rng.uniform(1200.0, 2400.0)
  signal = amplitude * brightness[labels] * (1.0 + 0.15 * texture)
  clean = scipy.ndimage.gaussian_filter(background + signal, blur_sigma)
  gain = 2.0  # Grey levels per photon: shot noise grows with the square root of the signal.
  noisy = rng.poisson(clean / gain) * gain + rng.normal(0.0, 4.0, size=labels.shape)
  return np.clip(np.rint(noisy), 0, MAX_VALUE).astype(np.uint16)


def _ellipse_mask(shape: tuple[int, int], centre: np.ndarray, semi_axes: tuple[float, float],
                  theta: float) -> np.ndarray:
  h, w = shape
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  dy, dx = yy - centre[0], xx - centre[1]
  u = dx * math.cos(theta) + dy * math.sin(theta)
  v = -dx * math.sin(theta) + dy * math.cos(theta)
  a, b = semi_axes
  return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _keep_largest_pieces(drawn: np.ndarray, min_area: int) -> np.ndarray:
  """Keeps each id's largest 4-connected piece (occlusion can cut one in two), renumbers 1..N."""
  pieces = skimage.measure.label(drawn, background=0, connectivity=1)
  num_pieces = int(pieces.max())
  sizes = np.bincount(pieces.ravel(), minlength=num_pieces + 1)
  piece_id = np.zeros(num_pieces + 1, np.int64)
  piece_id[pieces.ravel()] = drawn.ravel()
  best = {}
  for p in range(1, num_pieces + 1):
    i = piece_id[p]
    if sizes[p] >= min_area and (i not in best or sizes[p] > sizes[best[i]]):
      best[i] = p
  lut = np.zeros(num_pieces + 1, np.int32)
  for new_id, i in enumerate(sorted(best), start=1):  # Keep the drawing order.
    lut[best[i]] = new_id
  return lut[pieces]


def _free_centre(rng: np.random.Generator, shape: tuple[int, int], reach: float,
                 centres: list[np.ndarray], reaches: list[float],
                 min_gap: float) -> Optional[np.ndarray]:
  """A uniform random centre at least `reach + reach_j + min_gap` from every earlier centre.

  `reach` is a nucleus' semi-major axis, so two ellipses placed this way cannot touch. Returns
  None when MAX_PLACEMENT_TRIES draws all land too close (the field is full).
  """
  placed = np.asarray(centres, np.float64).reshape(-1, 2)
  needed = reach + np.asarray(reaches, np.float64) + min_gap
  for _ in range(MAX_PLACEMENT_TRIES):
    centre = rng.uniform((0.0, 0.0), shape)
    if np.all(np.hypot(*(placed - centre).T) >= needed):
      return centre
  return None


def generate(seed: int, shape: tuple[int, int] = DEFAULT_SHAPE,
             num_nuclei: Optional[int] = None,
             diameter_range: tuple[float, float] = (12.0, 30.0),
             touch_probability: float = DEFAULT_TOUCH_PROBABILITY, blur_sigma: float = 1.2,
             min_area: int = 30,
             min_gap: float = DEFAULT_MIN_GAP) -> tuple[np.ndarray, np.ndarray]:
  """A seeded fluorescence-like field: (image uint16 (H, W), labels int32 (H, W), ids 1..N).

  Each nucleus is, with `touch_probability`, placed against an earlier one (touching or
  overlapping it); otherwise at a random spot at least `min_gap` px clear of every earlier
  nucleus, and left out when the field has no such spot. So `num_nuclei` is an upper bound.
  """
  rng = np.random.default_rng(seed)
  shape = (int(shape[0]), int(shape[1]))
  if num_nuclei is None:
    # BBBC039 holds ~1 nucleus per 2,900 px; slightly denser so small fields still get several.
    num_nuclei = int(rng.poisson(shape[0] * shape[1] / 2000.0))
  drawn = np.zeros(shape, np.int32)
  centres, radii, reaches = [], [], []
  for k in range(1, num_nuclei + 1):
    a = rng.uniform(*diameter_range) / 2.0
    b = a * rng.uniform(0.65, 1.0)
    theta = rng.uniform(0.0, math.pi)
    if centres and rng.random() < touch_probability:
      # Next to an earlier nucleus, close enough to touch or overlap it.
      j = int(rng.integers(len(centres)))
      phi = rng.uniform(0.0, 2.0 * math.pi)
      dist = (radii[j] + (a + b) / 2.0) * rng.uniform(0.75, 1.0)
      centre = centres[j] + dist * np.array([math.sin(phi), math.cos(phi)])
    else:
      centre = _free_centre(rng, shape, a, centres, reaches, min_gap)
      if centre is None:
        continue
    drawn[_ellipse_mask(shape, centre, (a, b), theta)] = k  # Later nuclei lie on top.
    centres.append(centre)
    radii.append((a + b) / 2.0)
    reaches.append(a)
  labels = _keep_largest_pieces(drawn, min_area)
  brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, size=int(labels.max()))])
  return _render(labels, brightness, rng, blur_sigma), labels


