"""BBBC039 as a TensorFlow Datasets builder that builds and reads back without TensorFlow.

The data cannot be fetched by TFDS (manual download): `manual_dir` is a BBBC039 directory
(images/, masks/, metadata/; see `spiralnet_jax.data.download`). Examples are stored as
array_record with zlib-encoded uint16/int32 tensors and read with `as_data_source`; TFDS's
other paths (tfrecord, `Image` features, `as_dataset`) need TensorFlow.

    builder = Bbbc039(data_dir=...)
    builder.download_and_prepare(download_config=download_config(manual_dir))
    source = builder.as_data_source(split="train")  # source[i]: image, labels, file_name
"""

import os
import pathlib
from typing import Iterator, Optional, Union

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from spiralnet_jax.data import bbbc039

PathLike = Union[str, os.PathLike]

# Official split-file names -> TFDS split names.
TFDS_SPLITS = {"training": "train", "validation": "validation", "test": "test"}


class Bbbc039(tfds.core.GeneratorBasedBuilder):
  """BBBC039 v1: 200 fields of U2OS nuclei (Hoechst), uint16 images and instance labels."""

  name = "bbbc039"
  # TFDS 4.9.x derives this path through `importlib_resources`, which it does not install on
  # Python >= 3.9; the module file is what that lookup would return anyway.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Images, instance labels (4-connected components per red value)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {', '.join(bbbc039.ARCHIVES)} from {bbbc039.HOMEPAGE} and unpack them into "
      "the manual dir (giving images/, masks/ and metadata/), or run "
      "`python -m spiralnet_jax.data.download <manual_dir>`.")

  def __init__(self, **kwargs):
    # array_record is the only format TFDS writes without TensorFlow.
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("BBBC039 v1: 200 fluorescence fields (Hoechst) of U2OS nuclei, 520 x 696 "
                     "uint16, with instance labels (0 = background, 1..N) decoded from the "
                     "colour-coded masks; official training/validation/test split."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint16,
                                          encoding="zlib"),
            "labels": tfds.features.Tensor(shape=(None, None, 1), dtype=np.int32,
                                           encoding="zlib"),
            "file_name": tfds.features.Text(),
        }),
        homepage=bbbc039.HOMEPAGE,
        citation=("Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy "
                  "image sets for validation. Nature Methods 9(7):637 (2012)."),
        # Keep split-file order, so example i is the i-th name of the official list.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # manual_dir is an epath path; tifffile and PIL want a plain string path.
    data_dir = bbbc039.resolve_data_dir(str(dl_manager.manual_dir))
    return {tfds_split: self._generate_examples(data_dir, split)
            for split, tfds_split in TFDS_SPLITS.items()}

  def _generate_examples(self, data_dir: pathlib.Path, split: str) -> Iterator[tuple[str, dict]]:
    for name in bbbc039.read_split_names(data_dir, split):
      example = bbbc039.load_example(data_dir, name)
      yield name, {"image": example.image[..., None], "labels": example.labels[..., None],
                   "file_name": f"{name}.tif"}


def download_config(manual_dir: PathLike) -> tfds.download.DownloadConfig:
  """A DownloadConfig for an offline build from a local BBBC039 directory."""
  # try_download_gcs=False: never look for a prebuilt copy online (offline machines hang).
  return tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)


def prepare(manual_dir: PathLike, data_dir: Optional[PathLike] = None) -> Bbbc039:
  """Builds the dataset under `data_dir` (TFDS default if None) unless already built."""
  builder = Bbbc039(data_dir=None if data_dir is None else str(data_dir))
  builder.download_and_prepare(download_config=download_config(manual_dir))
  return builder


def to_example(record: dict) -> bbbc039.Example:
  """Converts one decoded TFDS record into an Example."""
  file_name = record["file_name"]
  if isinstance(file_name, bytes):
    file_name = file_name.decode("utf-8")
  name = file_name[:-len(".tif")] if file_name.endswith(".tif") else file_name
  return bbbc039.Example(name=name, image=np.asarray(record["image"])[..., 0],
                         labels=np.asarray(record["labels"])[..., 0].astype(np.int32))


def load_split(split: str, manual_dir: PathLike, data_dir: Optional[PathLike] = None,
               max_images: int = 0) -> list[bbbc039.Example]:
  """The examples of an official split (training/validation/test) read back through TFDS."""
  if split not in TFDS_SPLITS:
    raise ValueError(f"unknown BBBC039 split {split!r}; expected one of {tuple(TFDS_SPLITS)}")
  source = prepare(manual_dir, data_dir).as_data_source(split=TFDS_SPLITS[split])
  num = len(source) if max_images <= 0 else min(len(source), max_images)
  examples = [to_example(source[i]) for i in range(num)]
  # A prepared dataset is reused as is; make sure it was built from this manual_dir's split.
  expected = bbbc039.read_split_names(manual_dir, split)
  if len(source) != len(expected) or [e.name for e in examples] != expected[:num]:
    raise ValueError(
        f"the TFDS bbbc039 dataset under data_dir={data_dir!r} was built from other files than "
        f"{str(manual_dir)!r} (split {split!r} differs); use another tfds_data_dir or delete it")
  return examples
