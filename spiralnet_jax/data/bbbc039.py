"""BBBC039 on disk: 16-bit TIFF images, colour-coded PNG masks, the official split files.

Layout of a BBBC039 directory (the three official zips unpacked side by side):

    images/<stem>.tif     uint16, one page, 520 x 696
    masks/<stem>.png      RGBA; red = a graph colouring (0..3) of the nuclei, G/B/A unused
    metadata/{training,validation,test}.txt   one mask name `<stem>.png` per line

The red channel is *not* an instance id: touching nuclei get different values and each value is
reused for many nuclei. Instances are the 4-connected components inside each red value.
"""

import os
import pathlib
from typing import NamedTuple, Optional, Union

import numpy as np
import PIL.Image
import skimage.measure
import tifffile

SPLITS = ("training", "validation", "test")
ENV_VAR = "SPIRALNET_BBBC039_DIR"
HOMEPAGE = "https://bbbc.broadinstitute.org/BBBC039"
ARCHIVES = ("images.zip", "masks.zip", "metadata.zip")

PathLike = Union[str, os.PathLike]


class Example(NamedTuple):
  """One field: its stem name, the raw uint16 image and int32 instance labels (0 = background)."""
  name: str
  image: np.ndarray  # uint16 (H, W)
  labels: np.ndarray  # int32 (H, W), ids 1..N consecutive


def decode_mask(rgba: np.ndarray) -> np.ndarray:
  """Decodes a BBBC039 mask (RGBA, RGB or red only) into int32 instance labels 1..N."""
  rgba = np.asarray(rgba)
  if rgba.ndim == 3:
    red = rgba[..., 0]
  elif rgba.ndim == 2:
    red = rgba
  else:
    raise ValueError(f"expected a (H, W) or (H, W, C) mask, got shape {rgba.shape}")
  # `label` joins neighbours only when their values are equal, so one call yields exactly the
  # 4-connected components within each red value (the same partition as labelling `red == v`
  # for every v), numbered 1..N consecutively in raster order of their first pixel.
  labels = skimage.measure.label(red, background=0, connectivity=1)
  return labels.astype(np.int32)


def sample_dir() -> pathlib.Path:
  """The BBBC039 fields bundled with the package (same layout as the full data set)."""
  return pathlib.Path(__file__).resolve().parent / "sample"


def _missing_data_message(reason: str) -> str:
  archives = ", ".join(ARCHIVES)
  return (f"{reason}. BBBC039 is needed: download {archives} from {HOMEPAGE} and unpack them "
          "into one directory (giving images/, masks/ and metadata/), or run "
          "`python -m spiralnet_jax.data.download DEST` (the `download` helper in "
          "spiralnet_jax.data.download); then set config.data.data_dir or the environment "
          f"variable {ENV_VAR} to that directory.")


def resolve_data_dir(path_or_empty: Optional[PathLike] = "") -> pathlib.Path:
  """The BBBC039 directory: the given path, else $SPIRALNET_BBBC039_DIR, else a clear error."""
  if path_or_empty:
    path, origin = pathlib.Path(path_or_empty), "data_dir"
  elif os.environ.get(ENV_VAR):
    path, origin = pathlib.Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
  else:
    raise FileNotFoundError(_missing_data_message(
        f"No BBBC039 directory given (config.data.data_dir is empty and {ENV_VAR} is not set)"))
  path = path.expanduser()
  if not (path / "metadata").is_dir():
    raise FileNotFoundError(_missing_data_message(
        f"{origin} = {str(path)!r} is not a BBBC039 directory (no metadata/ folder)"))
  return path


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown BBBC039 split {split!r}; expected one of {SPLITS}")


def read_split_names(data_dir: PathLike, split: str) -> list[str]:
  """Stems of the fields in an official split, in file order (`<stem>.png` entries)."""
  _check_split(split)
  path = pathlib.Path(data_dir) / "metadata" / f"{split}.txt"
  if not path.is_file():
    raise FileNotFoundError(_missing_data_message(f"split file {str(path)!r} not found"))
  names = []
  for line in path.read_text().splitlines():
    line = line.strip()
    if line:
      names.append(line[:-len(".png")] if line.endswith(".png") else line)
  return names


def read_image(data_dir: PathLike, name: str) -> np.ndarray:
  """The raw uint16 (H, W) image `images/<name>.tif`."""
  path = pathlib.Path(data_dir) / "images" / f"{name}.tif"
  if not path.is_file():
    raise FileNotFoundError(f"BBBC039 image {str(path)!r} not found (listed in the split files)")
  image = tifffile.imread(path)
  if image.ndim != 2:
    raise ValueError(f"{path}: expected a single-channel 2-D image, got shape {image.shape}")
  return image.astype(np.uint16, copy=False)


def read_mask(data_dir: PathLike, name: str) -> np.ndarray:
  """The int32 (H, W) instance labels decoded from `masks/<name>.png`."""
  path = pathlib.Path(data_dir) / "masks" / f"{name}.png"
  if not path.is_file():
    raise FileNotFoundError(f"BBBC039 mask {str(path)!r} not found (listed in the split files)")
  with PIL.Image.open(path) as png:
    # Palette or greyscale PNGs are expanded so that channel 0 is always the red value.
    rgba = np.asarray(png if png.mode == "RGBA" else png.convert("RGBA"))
  return decode_mask(rgba)


def load_example(data_dir: PathLike, name: str) -> Example:
  """Reads one field (image and decoded labels) by stem."""
  image, labels = read_image(data_dir, name), read_mask(data_dir, name)
  if image.shape != labels.shape:
    raise ValueError(f"{name}: image shape {image.shape} != mask shape {labels.shape}")
  return Example(name=name, image=image, labels=labels)


def load_split(split: str, data_dir: Optional[PathLike] = None,
               max_images: int = 0) -> list[Example]:
  """All fields of an official split in file order (the first `max_images` if > 0)."""
  data_dir = resolve_data_dir(data_dir)
  names = read_split_names(data_dir, split)
  if max_images > 0:
    names = names[:max_images]
  return [load_example(data_dir, name) for name in names]
