"""spiralnet-segment on Zarr and OME-Zarr stores: block-wise labels into <stem>_labels.zarr.

The stores hold synthetic nuclei; the model is test_segment's workdir of tiny random models
(every region passes its scorer), so that a 120×150 image in blocks of 64 px runs in seconds.
The labels must be exactly what `blocks.segment_blocks` gives for the same plane in process.
"""

from conftest import optional_module
import numpy as np
import pytest

from spiralnet_jax import blocks
from spiralnet_jax import segment_io
from spiralnet_jax import segment_model
from spiralnet_jax import segment_zarr
from test_segment import (ERROR, _assert_one_error, _errors, _image, _run,  # pylint: disable=unused-import
                          workdir)

SHAPE = (120, 150)
BLOCKING = ("--block", "64", "--margin", "32")


def _zarr():
  return optional_module("zarr", "dask")


def _array(path, data, chunks=(50, 50), zarr_format=3):
  zarr = _zarr()
  array = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype,
                          zarr_format=zarr_format,
                          chunks=chunks[-data.ndim:] if data.ndim <= len(chunks)
                          else (1,) * (data.ndim - 2) + chunks)
  array[:] = data
  return array


def _ome(path, data, axes):
  """An OME-Zarr (NGFF 0.4) image group: `data` as its one resolution level "0"."""
  zarr = _zarr()
  group = zarr.open_group(str(path), mode="w", zarr_format=2)
  group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}],
                                 "axes": [{"name": a} for a in axes]}]
  _array(path / "0", data, zarr_format=2)
  return path


def _want(workdir, plane):
  """In-process block-wise labels of a 2-D array with the same model and blocking."""
  model = segment_model.load_model(str(workdir), "spiralnet")
  return blocks.segment_blocks(model, plane, block=64, margin=32)


def _labels(path):
  return _zarr().open_array(str(path), mode="r")


def test_a_zarr_array_gives_the_in_process_block_labels(workdir, tmp_path, capsys):
  image = _image(3, SHAPE)
  _array(tmp_path / "slide.zarr", image)
  code, lines = _run(capsys, tmp_path / "slide.zarr", "--weights", workdir, *BLOCKING)
  assert code == 0 and not _errors(lines), lines
  got = _labels(tmp_path / "slide_labels.zarr")
  want = _want(workdir, image)
  assert got.dtype == np.uint32 and want.max() > 3
  np.testing.assert_array_equal(got[:], want)
  assert got.attrs["spiralnet_jax"]["num_nuclei"] == int(want.max())
  assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.zarr", "slide_labels.zarr"]
  # An existing output is kept unless --overwrite; then replaced whole, nothing left behind.
  code, lines = _run(capsys, tmp_path / "slide.zarr", "--weights", workdir, *BLOCKING)
  _assert_one_error(lines, tmp_path / "slide.zarr", "exists (pass --overwrite")
  _array(tmp_path / "slide.zarr", _image(4, SHAPE))
  code, lines = _run(capsys, tmp_path / "slide.zarr", "--weights", workdir, *BLOCKING,
                     "--overwrite")
  assert code == 0, lines
  np.testing.assert_array_equal(_labels(tmp_path / "slide_labels.zarr")[:],
                                _want(workdir, _image(4, SHAPE)))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.zarr", "slide_labels.zarr"]


def test_an_ome_zarr_channel_is_read_by_its_axis_names(workdir, tmp_path, capsys):
  image = _image(5, SHAPE)
  noise = np.random.default_rng(0).integers(0, 4000, SHAPE).astype(np.uint16)
  store = _ome(tmp_path / "cells.ome.zarr", np.stack([noise, image])[None, :, None],
               "tczyx")
  code, lines = _run(capsys, store, "--weights", workdir, *BLOCKING)
  _assert_one_error(lines, store, "has 2 channels: pass --channel C")
  assert code == 1
  code, lines = _run(capsys, store, "--weights", workdir, *BLOCKING, "--channel", "1")
  assert code == 0, lines
  np.testing.assert_array_equal(_labels(tmp_path / "cells_labels.zarr")[:],
                                _want(workdir, image))
  planes = _ome(tmp_path / "stack.ome.zarr", np.stack([image, image]), "zyx")
  code, lines = _run(capsys, planes, "--weights", workdir, *BLOCKING)
  _assert_one_error(lines, planes, "has 2 planes along its 'z' axis")


def test_zarr_input_errors_are_one_line_each(workdir, tmp_path, capsys):
  stack = _array(tmp_path / "stack.zarr", np.stack([_image(0, SHAPE)] * 2))
  del stack
  code, lines = _run(capsys, tmp_path / "stack.zarr", "--weights", workdir, *BLOCKING)
  _assert_one_error(lines, tmp_path / "stack.zarr", "pass --channel C")
  _zarr().open_group(str(tmp_path / "group.zarr"), mode="w")
  code, lines = _run(capsys, tmp_path / "group.zarr", "--weights", workdir, *BLOCKING)
  _assert_one_error(lines, tmp_path / "group.zarr", "without OME-Zarr multiscales metadata")
  _array(tmp_path / "flat.zarr", _image(0, SHAPE))
  code, lines = _run(capsys, tmp_path / "flat.zarr", "--weights", workdir, "--diameter", "20")
  _assert_one_error(lines, tmp_path / "flat.zarr", "--diameter is not supported")
  code, lines = _run(capsys, tmp_path / "flat.zarr", "--weights", workdir, "--mode", "semantic")
  _assert_one_error(lines, tmp_path / "flat.zarr", "--mode semantic is not supported")
  code, lines = _run(capsys, tmp_path / "flat.zarr", "--weights", workdir, "--block", "0")
  assert code == 2 and lines[0] == f"{ERROR}--block: must be ≥ 1", lines
  assert not list(tmp_path.glob("*_labels.zarr")) and not list(tmp_path.glob(".*"))


def test_folders_list_zarr_stores_as_images_but_never_their_insides(tmp_path):
  _zarr()
  _ome(tmp_path / "a.ome.zarr", _image(0, SHAPE), "yx")
  _array(tmp_path / "b.zarr", _image(1, SHAPE))
  _array(tmp_path / "b_labels.zarr", _image(1, SHAPE).astype(np.uint32))  # An output.
  _array(tmp_path / ".b_labels.zarr.123-ab.zarr", _image(1, SHAPE))  # A temporary one.
  (tmp_path / "sub").mkdir()
  _array(tmp_path / "sub" / "c.zarr", _image(2, SHAPE))
  found, failures = segment_io.find_inputs([str(tmp_path)], recursive=True)
  assert not failures
  assert found == [tmp_path / "a.ome.zarr", tmp_path / "b.zarr", tmp_path / "sub" / "c.zarr"]
  assert segment_io.find_inputs([str(tmp_path)])[0] == found[:2]
  assert segment_zarr.output_path(found[0], tmp_path) == tmp_path / "a_labels.zarr"


@pytest.mark.parametrize("shape,channel,axis,want", [
    ((5, 6), None, "auto", (slice(None), slice(None))),
    ((1, 5, 6, 1), None, "auto", (0, slice(None), slice(None), 0)),
    ((3, 5, 6), 2, "auto", (2, slice(None), slice(None))),
    ((5, 6, 3), 1, "auto", (slice(None), slice(None), 1)),
    ((1, 5, 6, 7), 4, "last", (0, slice(None), slice(None), 4)),
])
def test_plane_index_by_hand(shape, channel, axis, want):
  assert segment_io.plane_index(shape, channel, axis) == want
  array = np.arange(np.prod(shape)).reshape(shape)
  np.testing.assert_array_equal(segment_io.select_channel(array, channel, axis), array[want])


def test_a_plane_reads_only_the_window_asked_for():
  data = np.arange(2 * 7 * 9).reshape(2, 7, 9)
  plane = segment_zarr.Plane(data, (1, slice(None), slice(None)))
  assert plane.shape == (7, 9)
  np.testing.assert_array_equal(plane[2:5, 3:8], data[1, 2:5, 3:8])
