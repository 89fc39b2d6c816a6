"""Property: whatever array a file holds, segmenting it gives labels or one clear error.

Hypothesis draws shapes (1-D to 4-D, 1 to 70 px a side), dtypes (bool to float64) and values
(random, constant, NaN, ±inf, saturated, tiny, huge) and the reading flags; each example is
written as a TIFF and run through `segment.segment_file` with test_segment's tiny model. The
file either yields a 2-D integer label image of the shape of the plane it segmented, or an
`InputError` of one line (what the command prints). Anything else is a bug.
"""

import pathlib
import tempfile

from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import tifffile

from spiralnet_jax import segment
from spiralnet_jax import segment_io
from test_segment import workdir  # pylint: disable=unused-import

DTYPES = ("bool", "uint8", "uint16", "int16", "int32", "uint32", "int64", "float16", "float32",
          "float64")
FILLS = ("random", "constant", "nan", "inf", "saturated", "tiny", "huge")


@pytest.fixture(scope="module")
def model(workdir):  # pylint: disable=redefined-outer-name
  return segment.load_model(str(workdir), "spiralnet")


@st.composite
def arrays(draw):
  """An (array, reading) pair: any shape, dtype and fill; any --channel / --channel-axis."""
  ndim = draw(st.sampled_from((1, 2, 2, 2, 3, 3, 4)))  # A TIFF cannot hold 0-D.
  side = st.integers(1, 70)
  shape = tuple(draw(st.one_of(side, st.integers(1, 4))) for _ in range(ndim))
  dtype = np.dtype(draw(st.sampled_from(DTYPES)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  array = _fill(rng, shape, dtype, draw(st.sampled_from(FILLS)))
  reading = segment.Reading(channel=draw(st.one_of(st.none(), st.integers(0, 4))),
                            channel_axis=draw(st.sampled_from(("auto", "first", "last"))))
  return array, reading


def _fill(rng, shape, dtype, fill):
  """An array of `shape` and `dtype` filled by kind."""
  if dtype == bool:
    return rng.random(shape) < (0.0 if fill == "constant" else 0.3)
  info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
  low, high = (0.0, 1.0) if dtype.kind == "f" else (max(info.min, -1000), min(info.max, 4095))
  array = rng.uniform(low, high, shape)
  if fill == "constant":
    array[...] = high
  elif fill == "saturated":
    array.reshape(-1)[::7] = info.max  # Hot pixels at the dtype's top.
  elif fill == "tiny" and dtype.kind == "f":
    array = array * float(info.tiny)  # Subnormal-range contrast.
  elif fill == "huge" and dtype.kind == "f":
    array = array * float(info.max) / 2
  elif fill in ("nan", "inf") and dtype.kind == "f" and array.size:
    array.reshape(-1)[0] = np.nan if fill == "nan" else -np.inf
  return array.astype(dtype)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(example=arrays())
def test_any_array_gives_labels_of_its_plane_or_one_clear_error(model, example):
  array, reading = example
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "x.tif"
    try:
      tifffile.imwrite(path, array)
    except Exception:  # pylint: disable=broad-except
      reject()  # No such file can exist (tifffile cannot write it): nothing to segment.
    outputs = segment.output_paths(path, None, "instance")
    try:
      segment.segment_file(path, model, outputs, reading)
    except segment_io.InputError as e:
      message = str(e)
      event(f"error: {message.split(':')[0][:40]}")  # --hypothesis-show-statistics lists them.
      assert message and "\n" not in message and len(message) < 400, message
      assert not any(p.exists() for p in outputs.values())  # Nothing half-written.
      return
    labels = tifffile.imread(outputs["labels"])
    read = segment_io.read_image(path)
    plane = segment_io.select_channel(read.array, reading.channel, reading.channel_axis,
                                      read.axes)
  event("labels")
  assert labels.ndim == 2 and labels.shape == plane.shape
  assert labels.dtype in (np.uint16, np.uint32)
  squeezed = tuple(n for n in array.shape if n != 1) or (1,)
  # The plane is the array itself or the array less one axis (its channel).
  assert plane.size in (array.size, *(array.size // n for n in squeezed))
