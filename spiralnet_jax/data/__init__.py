"""The data layer: BBBC039 fields (full, bundled sample or TFDS) or synthetic nuclei, as Examples.

`load_examples(config.data, split)` is the one entry point the rest of the package uses; it
picks the source named by `config.data.source`. The download helper lives in
`spiralnet_jax.data.download` and the TFDS builder in `spiralnet_jax.data.tfds_bbbc039`; both
are imported lazily (the latter pulls in tensorflow_datasets).
"""

import zlib

import ml_collections

from spiralnet_jax.data import intensity
from spiralnet_jax.data import synthetic
from spiralnet_jax.data.intensity import intensity_range, normalize, stretch
from spiralnet_jax.data.bbbc039 import (ENV_VAR, HOMEPAGE, SPLITS, Example, decode_mask,
                                        load_example, load_split, read_image,
                                        read_mask, read_split_names, resolve_data_dir,
                                        sample_dir)

SOURCES = ("bbbc039", "sample", "tfds", "synthetic")

__all__ = [
    "ENV_VAR", "HOMEPAGE", "SOURCES", "SPLITS", "Example", "decode_mask", "intensity_range",
    "load_example",
    "load_examples", "load_split", "normalize", "read_image", "read_mask", "read_split_names",
    "resolve_data_dir", "sample_dir", "stretch", "synthetic_seed", "synthetic_split",
]


def synthetic_seed(split: str, index: int) -> int:
  """The seed of synthetic image `index` of `split`: fixed by the split name, not config.seed."""
  # crc32 is stable across processes and Python versions (unlike hash()).
  return zlib.crc32(f"synthetic/{split}/{index}".encode())


def synthetic_split(split: str, num_images: int,
                    shape: tuple[int, int] = synthetic.DEFAULT_SHAPE,
                    touch_probability: float = synthetic.DEFAULT_TOUCH_PROBABILITY
                    ) -> list[Example]:
  """`num_images` synthetic fields for a split, named `synthetic_<split>_<index>`."""
  examples = []
  for i in range(num_images):
    image, labels = synthetic.generate(synthetic_seed(split, i), shape=tuple(shape),
                                       touch_probability=touch_probability)
    examples.append(Example(name=f"synthetic_{split}_{i:03d}", image=image, labels=labels))
  return examples


def load_examples(data_config: ml_collections.ConfigDict, split: str) -> list[Example]:
  """The examples of `split` from the source `data_config.source`, at most `max_images`."""
  source = data_config.source
  max_images = int(data_config.max_images)
  if source == "bbbc039":
    return load_split(split, resolve_data_dir(data_config.data_dir), max_images)
  if source == "sample":
    return load_split(split, sample_dir(), max_images)
  if source == "tfds":
    from spiralnet_jax.data import tfds_bbbc039  # pylint: disable=g-import-not-at-top
    return tfds_bbbc039.load_split(
        split, manual_dir=resolve_data_dir(data_config.data_dir),
        data_dir=data_config.tfds_data_dir or None, max_images=max_images)
  if source == "synthetic":
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    is_train = split == data_config.train_split
    num = data_config.synthetic_num_train if is_train else data_config.synthetic_num_eval
    if max_images > 0:
      num = min(num, max_images)
    return synthetic_split(split, num, tuple(data_config.synthetic_shape),
                           data_config.synthetic_touch_probability)
  raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")
