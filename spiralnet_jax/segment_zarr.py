"""spiralnet-segment on Zarr and OME-Zarr images: block by block into `<stem>_labels.zarr`.

    spiralnet-segment slide.zarr --output-dir out/             # blocks in this process
    spiralnet-segment slide.ome.zarr --channel 0 --dask        # blocks on a LocalCluster

An input folder that is a Zarr store (a `zarr.json`, `.zarray` or `.zgroup` in it) is one image.
A plain Zarr array is (H, W), or has one channel axis of at most 4 beside two longer ones (as a
NumPy file); an OME-Zarr image (NGFF `multiscales` metadata) is read at its full resolution,
axes named by its metadata: `c` is chosen by `--channel`, `t` and `z` must have one plane. The
image is never read whole: `blocks.segment_blocks_into` cuts it into cores of `--block` px with
`--margin` px of context and paints each block's instances into a uint32 Zarr array with chunks
of `CHUNK` px, written under a hidden temporary name and renamed onto `<stem>_labels.zarr` (an
OME-Zarr `<stem>.ome.zarr` gives `<stem>_labels.zarr` too) only when every block is done, so a
failure leaves no half-written labels. Its attributes record the source, the plane read, the
nucleus count and the blocking. The per-nucleus CSV, overlays and ROIs are not written for Zarr
inputs (they would need the whole label image in memory); `--diameter` is not supported there.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets
import shutil
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from spiralnet_jax import segment_io
from spiralnet_jax.segment_io import InputError

if TYPE_CHECKING:
  from spiralnet_jax import blocks
  from spiralnet_jax.models import Model
  from spiralnet_jax.segment import Reading

CHUNK = 1024  # Output chunk side (px): 4 MiB of uint32 per chunk.


def output_path(path: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
  """`<folder>/<stem>_labels.zarr` of an input store (`.ome` dropped from an OME-Zarr stem)."""
  stem = path.stem.removesuffix(".ome")
  return folder / f"{stem}{segment_io.OUTPUT_SUFFIXES['zarr']}"


@dataclasses.dataclass(frozen=True)
class Plane:
  """A 2-D view of an N-D (Zarr) array, read lazily: `index` fixes every axis but two."""

  array: Any
  index: tuple  # Per axis an int (fixed) or slice(None) (a plane axis: rows, then columns).

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(n for n, i in zip(self.array.shape, self.index) if isinstance(i, slice))

  def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
    spans = iter(key)
    return np.asarray(self.array[tuple(next(spans) if isinstance(i, slice) else i
                                       for i in self.index)])


def _ome_image(group: Any) -> tuple[Any, str]:
  """(full-resolution array, its axis names) of an OME-Zarr image group; InputError if none."""
  attrs = dict(group.attrs)
  multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
  if not multiscales:
    raise InputError("a Zarr group without OME-Zarr multiscales metadata (pass the array "
                     "itself, e.g. slide.zarr/0)")
  image = multiscales[0]
  try:
    array = group[image["datasets"][0]["path"]]
  except KeyError as e:
    raise InputError(f"OME-Zarr metadata names a missing dataset {e}") from e
  if not hasattr(array, "dtype"):
    raise InputError(f"OME-Zarr dataset {image['datasets'][0]['path']!r} is a group, not an array")
  axes = image.get("axes") or ["t", "c", "z", "y", "x"][-array.ndim:]  # NGFF 0.1-0.3: tczyx.
  names = "".join((a["name"] if isinstance(a, dict) else a)[0].lower() for a in axes)
  if len(names) != array.ndim:
    raise InputError(f"OME-Zarr axes {names!r} do not match the array's {array.ndim} axes")
  return array, names


def _ome_plane_index(shape: tuple[int, ...], names: str, channel: Optional[int]) -> tuple:
  """The `Plane.index` of the image to segment, by the OME-Zarr axis names; InputError if the
  channel is not clear or another axis has several planes."""
  index = []
  for size, name in zip(shape, names):
    if name in "yx":
      index.append(slice(None))
    elif name == "c":
      if channel is None and size > 1:
        raise InputError(f"has {size} channels: pass --channel C to pick the one to segment")
      if channel is not None and not 0 <= channel < size:
        raise InputError(f"--channel {channel} is out of range: the image has {size} channels")
      index.append(channel or 0)
    elif size > 1:
      raise InputError(f"has {size} planes along its {name!r} axis; only 2-D images (one plane "
                       "on every axis but y, x and c) are segmented")
    else:
      index.append(0)
  if names.count("y") != 1 or names.count("x") != 1:
    raise InputError(f"OME-Zarr axes {names!r} do not name one y and one x axis")
  if "c" not in names and channel not in (None, 0):
    raise InputError(f"the image (axes {names!r}) has no channel {channel}")
  return tuple(index)


def open_plane(path: pathlib.Path, channel: Optional[int], channel_axis: str) -> Plane:
  """The 2-D plane of a Zarr store to segment, read lazily; InputError if it cannot be."""
  try:
    import zarr  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise InputError("Zarr input needs zarr: pip install -e \".[dask]\"") from e
  try:
    node = zarr.open(str(path), mode="r")
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f"cannot open the Zarr store: {segment_io.one_line(e)}") from e
  array, names = _ome_image(node) if isinstance(node, zarr.Group) else (node, "")
  if array.ndim < 2:
    raise InputError(f"a {array.ndim}-D array, not an image")
  if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise InputError(f"pixels of type {array.dtype} are not numbers")
  shape = tuple(array.shape)
  plane = Plane(array, _ome_plane_index(shape, names, channel) if names
                else segment_io.plane_index(shape, channel, channel_axis))
  if min(plane.shape) < 1:
    raise InputError(f"an empty image of shape {plane.shape}")
  return plane


def segment_store(path: pathlib.Path, model: Model, out: pathlib.Path, reading: Reading,
                  progress: Optional[Callable[[int, int], None]] = None,
                  note: Callable[[str], None] = lambda line: None,
                  map_fn: Optional[blocks.MapFn] = None) -> int:
  """Segments the Zarr image at `path` into the labels store `out` (blocks through `map_fn`,
  default in this process); returns its nucleus count; InputError if it cannot."""
  if reading.diameter is not None:
    raise InputError("--diameter is not supported for Zarr input (rescale the image first)")
  if reading.series is not None:
    note("--series applies to TIFF files; a Zarr store is read at its full resolution")
  from spiralnet_jax import blocks as blocks_lib  # pylint: disable=g-import-not-at-top
  import zarr  # pylint: disable=g-import-not-at-top
  plane = open_plane(path, reading.channel, reading.channel_axis)
  temp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.zarr")
  try:
    labels = zarr.open_array(str(temp), mode="w", shape=plane.shape, dtype=np.uint32,
                             chunks=tuple(min(CHUNK, n) for n in plane.shape), fill_value=0)
    try:
      count = blocks_lib.segment_blocks_into(model, plane, labels, reading.block,
                                             reading.margin, map_fn or blocks_lib.local_map,
                                             progress)
    except ValueError as e:
      raise InputError(segment_io.one_line(e)) from e
    labels.attrs["spiralnet_jax"] = {
        "source": str(path),
        "plane_index": [i if isinstance(i, int) else None for i in plane.index],
        "num_nuclei": count, "block": reading.block, "margin": reading.margin,
        "model": model.name}
    segment_io.replace_all([(out, temp)])
  except OSError as e:  # Reading a chunk of the image or writing one of the labels.
    raise InputError(f"I/O error: {segment_io.one_line(e)}") from e
  finally:
    if temp.exists():
      shutil.rmtree(temp, ignore_errors=True)
  return count
