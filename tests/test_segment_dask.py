"""spiralnet-segment on Dask: a LocalCluster of 2 worker processes gives the one-process outputs.

Dask's distributed scheduler is an optional extra (`pip install -e ".[dask]"`, which the
README's first command installs); under CI its absence is a failure, elsewhere a skip.
"""

from conftest import optional_module
import numpy as np
import pytest
import tifffile

from test_segment import ERROR, _errors, _image, _run, workdir  # pylint: disable=unused-import


def _distributed():
  return optional_module("distributed", "dask")


@pytest.fixture(scope="module")
def scheduler():
  _distributed()
  from spiralnet_jax import segment_dask  # pylint: disable=g-import-not-at-top
  with segment_dask.local_cluster(2) as cluster:  # What --dask starts.
    yield cluster.scheduler_address


def _folder(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  for i in range(4):
    tifffile.imwrite(folder / f"field{i}.tif", _image(i))
  (folder / "broken.tif").write_text("not a TIFF")
  two = tifffile.imread(folder / "field0.tif")
  tifffile.imwrite(folder / "planes.tif", np.stack([two, two]), photometric="minisblack")
  return folder


def test_many_files_on_two_workers_equal_the_one_process_run(workdir, scheduler, tmp_path,
                                                            capsys):
  folder = _folder(tmp_path)
  flags = ["--weights", workdir, "--save-rois"]
  code_one, lines_one = _run(capsys, folder, *flags, "--output-dir", tmp_path / "one")
  code_dask, lines_dask = _run(capsys, folder, *flags, "--output-dir", tmp_path / "dask",
                               "--scheduler", scheduler)
  assert code_one == code_dask == 1  # broken.tif and planes.tif (a stack without --channel).
  strip = lambda lines, out: sorted(l.replace(str(tmp_path / out), "OUT") for l in _errors(lines))
  assert strip(lines_one, "one") == strip(lines_dask, "dask") and len(_errors(lines_one)) == 2
  one = sorted(p.name for p in (tmp_path / "one").iterdir())
  assert one == sorted(p.name for p in (tmp_path / "dask").iterdir())
  assert len(one) == 4 * 3  # Labels, CSV and ROIs of each good field.
  for name in one:
    assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name


def test_dask_starts_its_own_local_cluster(workdir, tmp_path, capsys):
  _distributed()
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--dask", "--workers", "1")
  assert code == 0 and not _errors(lines), lines
  assert tifffile.imread(tmp_path / "a_labels.tif").shape == _image(0).shape


def test_an_unreachable_scheduler_is_one_line_and_exit_2(workdir, tmp_path, capsys):
  _distributed()
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--scheduler",
                     "tcp://127.0.0.1:9")
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"{ERROR}--scheduler tcp://127.0.0.1:9: cannot reach a Dask")
  assert not (tmp_path / "a_labels.tif").exists()


def test_a_zarr_store_in_blocks_on_two_workers_equals_the_one_process_run(workdir, scheduler,
                                                                          tmp_path, capsys):
  zarr = optional_module("zarr", "dask")
  image = _image(3, (120, 150))
  store = zarr.open_array(str(tmp_path / "slide.zarr"), mode="w", shape=image.shape,
                          dtype=image.dtype, chunks=(50, 50))
  store[:] = image
  blocking = ["--weights", workdir, "--block", "64", "--margin", "32"]
  code_one, lines_one = _run(capsys, tmp_path / "slide.zarr", *blocking, "--output-dir",
                             tmp_path / "one")
  code_dask, lines_dask = _run(capsys, tmp_path / "slide.zarr", *blocking, "--output-dir",
                               tmp_path / "dask", "--scheduler", scheduler)
  assert code_one == code_dask == 0 and not _errors(lines_one + lines_dask)
  one = zarr.open_array(str(tmp_path / "one" / "slide_labels.zarr"), mode="r")
  dask = zarr.open_array(str(tmp_path / "dask" / "slide_labels.zarr"), mode="r")
  assert one[:].max() > 3 and dict(one.attrs) == dict(dask.attrs)
  np.testing.assert_array_equal(dask[:], one[:])
