"""The files spiralnet-segment reads and writes: finding and reading inputs, writing outputs.

Inputs are TIFF (tifffile) or PNG / JPEG (Pillow) files, folders of them and glob patterns;
a 3-D array gives one channel (`select_channel`). Outputs are a uint16 / uint32 label TIFF, a
per-nucleus CSV (scikit-image measurements), a uint8 semantic TIFF and an overlay PNG, all
written through `atomic_outputs` so that a failed file leaves nothing half-written. Problems
with one file are `InputError`s with a one-line reason.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import os
import pathlib
import secrets
import shutil
from typing import Any, Optional, Sequence

import numpy as np

from spiralnet_jax.errors import one_line

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
# What this program writes, by output kind; a folder or glob never picks these up as inputs.
OUTPUT_SUFFIXES = {"labels": "_labels.tif", "semantic": "_semantic.tif",
                   "overlay": "_overlay.png", "csv": "_nuclei.csv", "rois": "_rois.zip",
                   "zarr": "_labels.zarr"}
ZARR_STORE_FILES = ("zarr.json", ".zarray", ".zgroup")  # One of them marks a Zarr store.
CSV_FIELDS = ("label", "area", "centroid_y", "centroid_x", "bbox_min_row", "bbox_min_col",
              "bbox_max_row", "bbox_max_col", "mean_intensity")


class InputError(Exception):
  """A problem with one input file (reported, the run goes on, exit status 1)."""


# --- inputs ----------------------------------------------------------------------------------


def resolve(path: pathlib.Path) -> pathlib.Path:
  """`path.resolve()`; InputError if it is a symlink loop."""
  try:
    return path.resolve()
  except (RuntimeError, OSError) as e:  # RuntimeError before Python 3.13, OSError (ELOOP) after.
    raise InputError("a symlink loop (it never reaches a file)") from e


def _is_image_name(path: pathlib.Path) -> bool:
  return path.suffix.lower() in IMAGE_SUFFIXES


def _is_output_name(path: pathlib.Path) -> bool:
  return any(path.name.endswith(suffix) for suffix in OUTPUT_SUFFIXES.values())


def is_zarr_store(path: pathlib.Path) -> bool:
  """Whether `path` is a Zarr store (array or group, format 2 or 3): one image, not a folder."""
  return path.is_dir() and any((path / name).is_file() for name in ZARR_STORE_FILES)


def _candidates(paths: Sequence[pathlib.Path]) -> list[pathlib.Path]:
  """Image files (by extension, any case) and Zarr stores among `paths`, minus this program's
  own outputs and anything inside a Zarr store."""
  # A hidden store is a temporary one of this program's (or a killed run's leftover).
  stores = {p for p in paths if is_zarr_store(p) and not p.name.startswith(".")}
  return sorted(p for p in paths
                if (p in stores or p.is_file() and _is_image_name(p)) and not _is_output_name(p)
                and not any(parent in stores for parent in p.parents))


def find_inputs(specs: Sequence[str],
                recursive: bool = False) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
  """(input files, [(spec, reason)] failures) from files, folders and glob patterns.

  A named file or Zarr store is taken as is (a wrong one fails later, when read); a folder
  gives its image files and Zarr stores (sorted; with `recursive`, its subfolders' too); a
  pattern (*, ?, [) is expanded here as well, for shells that do not. Folders and patterns skip
  `*_labels.tif` and the other outputs of this program. Duplicates (same resolved path) are
  dropped.
  """
  files, failures, seen = [], [], set()
  for spec in specs:
    path = pathlib.Path(spec)
    if path.is_dir() and not is_zarr_store(path):
      found = _candidates(list(path.rglob("*") if recursive else path.iterdir()))
      if not found:
        failures.append((spec, "folder holds no .tif/.tiff/.png/.jpg/.jpeg images or Zarr "
                         "stores"))
    elif path.exists() or path.is_symlink():
      found = [path]
    elif glob.has_magic(spec):
      found = _candidates([pathlib.Path(p) for p in glob.glob(spec, recursive=recursive)])
      if not found:
        failures.append((spec, "no image files match this pattern"))
    else:
      failures.append((spec, "no such file or directory"))
      found = []
    for p in found:
      try:
        key = resolve(p)
      except InputError as e:
        failures.append((str(p), str(e)))
        continue
      if key not in seen:
        seen.add(key)
        files.append(p)
  return files, failures


@dataclasses.dataclass(frozen=True)
class ImageFile:
  """The pixels of one input file and what the file says about their axes."""

  array: np.ndarray
  # tifffile's axis letters, one per array axis: Y rows, X columns, S colour samples, C
  # channels, Z / T / I planes, Q a TIFF axis the file does not name; "" when a file says none.
  axes: str
  note: Optional[str] = None  # Something the user should hear (e.g. which TIFF series was read).


def read_image(path: pathlib.Path, series: Optional[int] = None) -> ImageFile:
  """The pixels of a TIFF (tifffile; series `series`, default 0) or PNG / JPEG (Pillow) file."""
  suffix = path.suffix.lower()
  if suffix not in IMAGE_SUFFIXES:
    raise InputError(f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
  kind = "TIFF" if suffix in TIFF_SUFFIXES else suffix[1:].upper()
  if series is not None and kind != "TIFF":
    raise InputError(f"--series applies to TIFF files only; this is a {kind} file")
  try:
    image = _read_tiff(path, series) if kind == "TIFF" else _read_pillow(path)
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # tifffile / zlib / Pillow raise their own types (TiffFileError, zlib.error, ...).
    raise InputError(f"cannot read as {kind} (unreadable, truncated or not an image): "
                     f"{one_line(e)}") from e
  return image


def _read_tiff(path: pathlib.Path, series: Optional[int]) -> ImageFile:
  """One series of a TIFF, with tifffile's names for its axes."""
  import tifffile  # pylint: disable=g-import-not-at-top
  with tifffile.TiffFile(path) as tif:
    count = len(tif.series)
    if not count:  # E.g. cut off before its first image directory (tifffile.imread gives (0,)).
      raise InputError("cannot read as TIFF: the file holds no pixel data (truncated?)")
    if series is not None and not 0 <= series < count:
      raise InputError(f"--series {series} is out of range: the file holds {count} series")
    chosen = tif.series[series or 0]
    array = np.asarray(chosen.asarray())
    note = None
    if count > 1 and series is None:
      shapes = ", ".join(str(tuple(s.shape)) for s in tif.series[:4])
      note = (f"the file holds {count} series ({shapes}{', ...' if count > 4 else ''}); "
              "segmented series 0 (pass --series N for another)")
    return ImageFile(array, chosen.axes if len(chosen.axes) == array.ndim else "", note)


def _png_header(path: pathlib.Path) -> tuple[int, int]:
  """(bit depth, colour type) from a PNG's IHDR chunk; (0, -1) if the file is not a PNG."""
  with open(path, "rb") as f:
    head = f.read(26)
  if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
    return 0, -1
  return head[24], head[25]


def _read_pillow(path: pathlib.Path) -> ImageFile:
  """A PNG / JPEG: always (H, W) or (H, W, C), so its channel axis is never guessed.

  16-bit colour PNGs are decoded by imagecodecs: Pillow would reduce them to 8 bits (and the
  CSV's intensities would be in other units than the file's).
  """
  depth, colour = _png_header(path) if path.suffix.lower() == ".png" else (0, -1)
  if depth == 16 and colour in (2, 4, 6):  # RGB, grey + alpha, RGBA.
    import imagecodecs  # pylint: disable=g-import-not-at-top
    array = np.asarray(imagecodecs.png_decode(path.read_bytes()))
  else:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
    array = np.asarray(iio.imread(path, plugin="pillow"))
  return ImageFile(array, "YXS"[:array.ndim])


def _channel_axis(shape: tuple[int, ...], axes: str, channel_axis: str) -> int:
  """0 or -1: where the channels of a 3-D array are, from the flag, the file, or the sizes."""
  if channel_axis != "auto":
    return 0 if channel_axis == "first" else -1
  if axes[1:] == "YX":  # The file's own 2-D planes are (Y, X): the other axis is the channel.
    return 0
  if axes[:2] == "YX":
    return -1
  # No file metadata (e.g. a NumPy array): an axis of at most 4 (grey, RGB, RGBA) beside two
  # longer ones is the channel axis; anything else would be a guess, so ask.
  small = [axis for axis in (0, -1) if shape[axis] <= 4 < min(np.delete(shape, axis))]
  if len(small) == 1:
    return small[0]
  raise InputError(f"cannot tell which axis of shape {shape} holds the channels; pass "
                   "--channel-axis first (C, H, W) or last (H, W, C)")


def select_channel(array: np.ndarray, channel: Optional[int], channel_axis: str = "auto",
                   axes: str = "") -> np.ndarray:
  """The 2-D image to segment: the array itself, or channel `channel` of a 3-D array
  (`array[plane_index(...)]`)."""
  return array[plane_index(array.shape, channel, channel_axis, axes)]


def plane_index(shape: tuple[int, ...], channel: Optional[int], channel_axis: str = "auto",
                axes: str = "") -> tuple:
  """The index (ints and two `slice(None)`) of the 2-D image to segment in an array of `shape`.

  Size-1 leading or trailing axes (e.g. a 1-plane TIFF stack) are dropped first. A 3-D array
  needs `channel`; its channel axis is `channel_axis` ("first" (C, H, W), "last" (H, W, C)) or,
  with "auto", the one the file's `axes` place beside Y and X, else the only axis of at most 4
  elements; when none of these decides, InputError (never a guess).
  """
  shape = tuple(shape)
  axes = axes if len(axes) == len(shape) else ""
  index = [slice(None)] * len(shape)
  lo, hi = 0, len(shape)  # The axes left once size-1 ones are dropped.
  while hi - lo > 2 and shape[lo] == 1:
    index[lo], lo = 0, lo + 1
  while hi - lo > 2 and shape[hi - 1] == 1:
    index[hi - 1], hi = 0, hi - 1
  if hi - lo == 2:
    if channel not in (None, 0):
      raise InputError(f"image is 2-D {shape}; it has no channel {channel}")
    return tuple(index)
  if hi - lo != 3:
    raise InputError(f"expected a 2-D image or a 3-D multi-channel array, got shape {shape}")
  if channel is None:
    raise InputError(f"array of shape {shape} is a 3-D stack or multi-channel (e.g. RGB) "
                     "image; pass --channel C to pick the channel to segment")
  first = _channel_axis(shape[lo:hi], axes[lo:hi], channel_axis) == 0
  axis = lo if first else hi - 1
  if not 0 <= channel < shape[axis]:
    raise InputError(f"--channel {channel} is out of range: shape {shape} has "
                     f"{shape[axis]} channels on its {'first' if first else 'last'} axis")
  index[axis] = channel
  return tuple(index)


# --- outputs ---------------------------------------------------------------------------------


def label_dtype(max_label: int) -> np.dtype:
  """uint16 while every id fits, else uint32."""
  return np.dtype(np.uint16 if max_label < 2**16 else np.uint32)


def measurements(labels: np.ndarray, intensity: np.ndarray) -> list[dict[str, Any]]:
  """One row per nucleus (CSV_FIELDS) via skimage.measure.regionprops_table.

  Centroids are (row, column) pixel coordinates; bounding boxes are [min, max) (max exclusive,
  scikit-image's convention); mean intensity is over the raw input pixels.
  """
  from skimage import measure  # pylint: disable=g-import-not-at-top
  intensity = np.asarray(intensity)
  if intensity.dtype == bool:
    intensity = intensity.astype(np.uint8)
  table = measure.regionprops_table(
      np.asarray(labels), intensity_image=intensity,
      properties=("label", "area", "centroid", "bbox", "intensity_mean"))
  columns = [table["label"], table["area"], table["centroid-0"], table["centroid-1"],
             table["bbox-0"], table["bbox-1"], table["bbox-2"], table["bbox-3"],
             table["intensity_mean"]]
  kinds = (int, int, float, float, int, int, int, int, float)
  return [{name: kind(value) for name, kind, value in zip(CSV_FIELDS, kinds, row)}
          for row in zip(*columns)]


def write_tiff(path: pathlib.Path, array: np.ndarray) -> None:
  """Writes `array` as a Deflate-compressed TIFF."""
  import tifffile  # pylint: disable=g-import-not-at-top
  # Deflate: label images compress ~50×; every TIFF reader (Fiji, scikit-image) handles it.
  tifffile.imwrite(path, array, compression="zlib")


def write_png(path: pathlib.Path, rgb: np.ndarray) -> None:
  """Writes a uint8 (H, W, 3) image as a PNG."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  iio.imwrite(path, rgb, plugin="pillow", extension=".png")


def write_csv(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> None:
  """Writes per-nucleus rows (`measurements`) with a CSV_FIELDS header."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)


def instance_polygons(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
  """(label id, (N, 2) float (x, y) outline) per instance, in ImageJ's pixel coordinates.

  The outline is the 0.5 iso-line of the instance's mask (skimage.measure.find_contours, the
  longest one: the outer boundary), which passes between the centres of the pixels inside and
  outside, so filling the polygon gives back the mask (holes filled). ImageJ puts pixel (0, 0)'s
  corner at (0, 0) and its centre at (0.5, 0.5), scikit-image its centre at (0, 0): +0.5.
  """
  from skimage import measure  # pylint: disable=g-import-not-at-top
  out = []
  for region in measure.regionprops(np.asarray(labels)):
    top, left = region.bbox[:2]
    mask = np.pad(region.image, 1)
    contours = measure.find_contours(mask.astype(np.float32), 0.5, fully_connected="high")
    outline = max(contours, key=len)
    out.append((int(region.label),
                np.stack([outline[:, 1] + left - 0.5, outline[:, 0] + top - 0.5], axis=1)))
  return out


def write_rois(path: pathlib.Path, labels: np.ndarray) -> None:
  """Writes one ImageJ / Fiji polygon ROI per instance (named by its label id) as a ROI zip."""
  import roifile  # pylint: disable=g-import-not-at-top
  rois = [roifile.ImagejRoi.frompoints(points, name=str(label))
          for label, points in instance_polygons(labels)]
  path.unlink(missing_ok=True)  # A zip is replaced, never appended to.
  if rois:
    roifile.roiwrite(path, rois, mode="w")
  else:
    import zipfile  # pylint: disable=g-import-not-at-top
    zipfile.ZipFile(path, "w").close()  # No nuclei: an empty ROI set, still a zip.


@contextlib.contextmanager
def atomic_outputs():
  """Collects (final path, temporary path) pairs; on success all replace their final paths
  together (or, if one rename fails, none does); the temporary files are removed either way."""
  pending: list[tuple[pathlib.Path, pathlib.Path]] = []

  def temp_for(final: pathlib.Path) -> pathlib.Path:
    # Created here (not by tempfile.mkstemp, whose files are private: 0600) so that the output
    # gets the usual permissions from the umask; the suffix tells writers the format.
    temp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{final.suffix}")
    temp.touch(exist_ok=False)
    pending.append((final, temp))
    return temp

  try:
    yield temp_for
    replace_all(pending)
  finally:
    for _, temp in pending:
      with contextlib.suppress(OSError):
        temp.unlink()


def replace_all(pending: Sequence[tuple[pathlib.Path, pathlib.Path]]) -> None:
  """Renames each temporary file (or folder) onto its final path; if one rename fails, restores
  every old one (kept aside under a hidden `.old` name until all renames are done)."""
  moved: list[tuple[pathlib.Path, Optional[pathlib.Path]]] = []
  try:
    for final, temp in pending:
      backup = None
      if os.path.lexists(final):
        backup = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
        os.replace(final, backup)
      moved.append((final, backup))
      os.replace(temp, final)
  except BaseException:
    for final, backup in reversed(moved):
      with contextlib.suppress(OSError):
        if backup is None:
          _remove(final)
        else:
          os.replace(backup, final)
    raise
  for _, backup in moved:
    if backup is not None:
      with contextlib.suppress(OSError):
        _remove(backup)


def _remove(path: pathlib.Path) -> None:
  """Removes a file, a link or a folder (a Zarr store) at `path`, if there is one."""
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  else:
    path.unlink(missing_ok=True)
