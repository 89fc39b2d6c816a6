"""Bad input as a new user gives it: never a silent wrong answer, never a traceback.

Each test is one class of defect (docs/bad_input.md lists what the user gets for each); runs
are in-process on test_segment's workdir of tiny random models.
"""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
import tifffile

from spiralnet_jax import checkpoints
from spiralnet_jax import errors
from spiralnet_jax import predict
from spiralnet_jax import segment_io
from spiralnet_jax import train_state
from test_segment import ERROR, SHAPE, _assert_one_error, _config, _errors, _image, _run
from test_segment import _save_stage, _write_workdir, workdir  # pylint: disable=unused-import

WARNING = "spiralnet-segment: warning: "


def _labels_of(workdir_path, image):
  return predict.predict(predict.Predictor.from_workdir(workdir_path), image)[1]


# --- axes are read from the file, never guessed ------------------------------------------


def test_a_stack_longer_than_its_planes_are_wide_gives_the_plane_asked_for(workdir, tmp_path,
                                                                            capsys):
  # 50 planes of 40×48: the shorter-axis rule took column 1 of every plane, (50, 40) labels.
  planes = np.stack([_image(i % 3) for i in range(50)])
  tifffile.imwrite(tmp_path / "stack.tif", planes, photometric="minisblack")
  assert segment_io.read_image(tmp_path / "stack.tif").axes == "QYX"
  code, lines = _run(capsys, tmp_path / "stack.tif", "--weights", workdir, "--channel", "1")
  assert code == 0 and not _errors(lines), lines
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "stack_labels.tif"),
                                _labels_of(workdir, planes[1]))


def test_channel_axis_of_an_array_without_metadata_is_asked_for_unless_it_is_plain():
  with pytest.raises(segment_io.InputError, match="cannot tell which axis of shape "
                     r"\(50, 40, 48\) holds the channels; pass --channel-axis"):
    segment_io.select_channel(np.zeros((50, 40, 48)), 1)
  with pytest.raises(segment_io.InputError, match="cannot tell"):
    segment_io.select_channel(np.zeros((3, 40, 4)), 1)  # Both ends could be colours.
  rgb = np.arange(40 * 48 * 3).reshape(40, 48, 3)
  np.testing.assert_array_equal(segment_io.select_channel(rgb, 2), rgb[..., 2])
  np.testing.assert_array_equal(segment_io.select_channel(np.moveaxis(rgb, -1, 0), 2),
                                rgb[..., 2])
  # The file's axes decide over sizes; the flag decides over the file.
  stack = np.arange(50 * 40 * 3).reshape(50, 40, 3)
  np.testing.assert_array_equal(segment_io.select_channel(stack, 1, axes="ZYX"), stack[1])
  np.testing.assert_array_equal(segment_io.select_channel(stack, 1, "last", "ZYX"),
                                stack[..., 1])
  # Size-1 axes drop with their letters: a 1-plane stack of RGB planes is (Y, X, S).
  np.testing.assert_array_equal(
      segment_io.select_channel(stack[None, :3, :40], 1, axes="QYXS"), stack[:3, :40][..., 1])


def test_png_colours_are_always_the_last_axis(tmp_path):
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  rgb = np.zeros((3, 40, 3), np.uint8)  # 3 rows: by sizes alone this would be ambiguous.
  rgb[..., 1] = 200
  iio.imwrite(tmp_path / "thin.png", rgb)
  read = segment_io.read_image(tmp_path / "thin.png")
  assert read.axes == "YXS"
  np.testing.assert_array_equal(segment_io.select_channel(read.array, 1, axes=read.axes),
                                rgb[..., 1])


def test_a_tiff_with_several_series_says_which_it_read_and_takes_series(workdir, tmp_path,
                                                                         capsys):
  path = tmp_path / "two.tif"
  tifffile.imwrite(path, _image(0))
  tifffile.imwrite(path, _image(1, shape=(32, 40)), append=True)
  code, lines = _run(capsys, path, "--weights", workdir)
  assert code == 0 and not _errors(lines)
  assert lines == [f"spiralnet-segment: note: {path}: the file holds 2 series ((40, 48), "
                   "(32, 40)); segmented series 0 (pass --series N for another)"]
  code, lines = _run(capsys, path, "--weights", workdir, "--series", "1", "--overwrite")
  assert code == 0 and lines == []
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "two_labels.tif"),
                                _labels_of(workdir, _image(1, shape=(32, 40))))
  code, lines = _run(capsys, path, "--weights", workdir, "--series", "2", "--overwrite")
  assert code == 1
  _assert_one_error(lines, path, "--series 2 is out of range: the file holds 2 series")


def test_a_truncated_tiff_says_it_holds_no_pixel_data(bbbc039_dir, tmp_path):
  # BBBC039's TIFFs keep their directory after the pixels: cut in half, tifffile returns an
  # empty 1-D array, which was reported as "got shape (0,)".
  data = sorted((bbbc039_dir / "images").glob("*.tif"))[0].read_bytes()
  (tmp_path / "cut.tif").write_bytes(data[:len(data) // 2])
  with pytest.raises(segment_io.InputError,
                     match=r"^cannot read as TIFF: the file holds no pixel data \(truncated\?\)$"):
    segment_io.read_image(tmp_path / "cut.tif")


# --- paths ----------------------------------------------------------------------------------


def test_symlink_loops_are_one_line_each_and_the_rest_goes_on(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  os.symlink(tmp_path / "loop2.tif", tmp_path / "loop1.tif")
  os.symlink(tmp_path / "loop1.tif", tmp_path / "loop2.tif")
  code, lines = _run(capsys, tmp_path / "loop1.tif", tmp_path / "a.tif", "--weights", workdir)
  assert code == 1
  _assert_one_error(lines, tmp_path / "loop1.tif", "a symlink loop (it never reaches a file)")
  assert (tmp_path / "a_labels.tif").is_file()
  out = tmp_path / "out"
  out.mkdir()
  os.symlink(out / "a_labels.tif", out / "a_labels.tif")  # Points at itself.
  tifffile.imwrite(tmp_path / "b.tif", _image(1))
  code, lines = _run(capsys, tmp_path / "a.tif", tmp_path / "b.tif", "--weights", workdir,
                     "--output-dir", out, "--overwrite")
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif",
                    f"output {out / 'a_labels.tif'} is a symlink loop")
  assert (out / "b_labels.tif").is_file()


def test_weights_that_are_a_file_say_so(tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", tmp_path / "a.tif")
  assert code == 2
  assert lines == [f"{ERROR}--weights {tmp_path / 'a.tif'} is a file; pass the folder that "
                   "holds config.json (a train.py workdir or exported weights)"]


# --- outputs are replaced all together or not at all -----------------------------------------


def test_a_failed_rename_puts_every_old_output_back(workdir, tmp_path, capsys, monkeypatch):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  old = {"a_labels.tif": b"old labels", "a_nuclei.csv": b"old csv"}
  for name, content in old.items():
    (tmp_path / name).write_bytes(content)
  real_replace = os.replace

  def replace(source, target):
    if str(target).endswith("a_nuclei.csv") and not str(source).endswith(".old"):
      raise OSError(28, "No space left on device")  # The new CSV, after the new labels.
    real_replace(source, target)

  monkeypatch.setattr(segment_io.os, "replace", replace)
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--overwrite")
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif", "cannot write outputs")
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "a.tif"} == old
  monkeypatch.setattr(segment_io.os, "replace", real_replace)
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--overwrite")
  assert code == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "a_labels.tif", "a_nuclei.csv"]
  assert tifffile.imread(tmp_path / "a_labels.tif").shape == SHAPE


def test_an_output_path_that_is_a_folder_is_refused(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  (tmp_path / "a_nuclei.csv").mkdir()
  (tmp_path / "a_nuclei.csv" / "keep.txt").write_text("mine")
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--overwrite")
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif", "a_nuclei.csv is a directory")
  assert not (tmp_path / "a_labels.tif").exists()
  assert (tmp_path / "a_nuclei.csv" / "keep.txt").read_text() == "mine"


# --- damaged weights: said out loud -----------------------------------------------------------


def _two_step_workdir(path):
  """A workdir whose stages have checkpoints 1 and 2 (other weights)."""
  config = _config()
  _write_workdir(path, config, stages=("scorer", "segmenter"))
  for seed, stage in enumerate(("scorer", "segmenter")):
    _save_stage(path, stage, config, seed + 10, step=2)


def _without_step_2(path, new, stage_names):
  """A copy of workdir `path` at `new` with step 2 of `stage_names` removed."""
  shutil.copytree(path, new)
  for stage in stage_names:
    shutil.rmtree(checkpoints.checkpoint_dir(new, stage) / "2")
  return new


def test_a_damaged_newest_checkpoint_is_a_warning_naming_the_step_used(tmp_path, capsys):
  _two_step_workdir(tmp_path / "wd")
  # A flipped byte in every data file (OCDBT's `d/`) of the newest segmenter step.
  for chunk in (checkpoints.checkpoint_dir(tmp_path / "wd", "segmenter") / "2").rglob("d/*"):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", tmp_path / "wd")
  assert code == 0 and not _errors(lines), lines
  assert len(lines) == 1 and lines[0].startswith(
      f"{WARNING}{tmp_path / 'wd'}: segmenter: the newest checkpoint (step 2 under "), lines
  assert lines[0].endswith("); using the older step 1")  # Between: why step 2 is unusable.
  # What was used is what the warning says: step 2's scorer, step 1's segmenter.
  expected = _without_step_2(tmp_path / "wd", tmp_path / "expected", ["segmenter"])
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "a_labels.tif"),
                                _labels_of(expected, _image(0)))


def test_damaged_metadata_of_the_newest_step_falls_back_instead_of_refusing(tmp_path, capsys):
  _two_step_workdir(tmp_path / "wd")
  for stage in ("scorer", "segmenter"):
    (checkpoints.checkpoint_dir(tmp_path / "wd", stage) / "2" / "default" / "_METADATA"
     ).write_text("{")
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", tmp_path / "wd")
  assert code == 0 and not _errors(lines), lines
  assert [line.split(": the newest")[0] for line in lines] == [
      f"{WARNING}{tmp_path / 'wd'}: scorer", f"{WARNING}{tmp_path / 'wd'}: segmenter"]
  only_step1 = _without_step_2(tmp_path / "wd", tmp_path / "wd1", ["scorer", "segmenter"])
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "a_labels.tif"),
                                _labels_of(only_step1, _image(0)))


def test_a_checkpoint_without_checksums_is_damage(tmp_path):
  config = _config()
  state = train_state.abstract_state("scorer", config)
  state = __import__("jax").tree.map(lambda s: np.ones(s.shape, s.dtype), state)
  with ocp.CheckpointManager(checkpoints.checkpoint_dir(tmp_path, "scorer"),
                             options=ocp.CheckpointManagerOptions(create=True)) as mngr:
    mngr.save(1, args=ocp.args.StandardSave(state))  # Not `checkpoints.save`: no CRCs.
    mngr.wait_until_finished()
  with pytest.raises(errors.CheckpointError, match=r"unrestorable steps: 1"):
    checkpoints.load_params(tmp_path, "scorer", config)
  with checkpoints.checkpoint_manager(tmp_path, "scorer", config) as mngr:
    _, failed = checkpoints.restore_newest(mngr, state, "scorer")
  assert list(failed) == [1] and "no crc32 checksums in its metadata" in failed[1]


# --- config.json that train.py did not write ---------------------------------------------------


@pytest.mark.parametrize("text, reason", [
    ("{}", "config has no regions, scorer, segmenter section"),
    ("[1, 2]", "a config must be a JSON object, got list"),
    ("{", "Expecting property name"),
])
def test_a_config_json_train_py_did_not_write_is_one_line_everywhere(text, reason, workdir,
                                                                     tmp_path, capsys):
  bad = tmp_path / "wd"
  shutil.copytree(workdir, bad)
  (bad / "config.json").write_text(text)
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", bad)
  assert code == 2
  assert lines == [f"{ERROR}{bad / 'config.json'} is not a config train.py wrote: " +
                   lines[0].split("wrote: ", 1)[1]] and reason in lines[0]
  # eval.py and train.py report the same file through their one-line errors.
  with pytest.raises(errors.TrainingError, match="is not a config train.py wrote"):
    checkpoints.load_config(bad)
  from spiralnet_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.TrainingError, match=r"config.json is not a config train.py wrote"):
    workdir_lib.check_and_write_config(_config(), bad)
  assert (bad / "config.json").read_text() == text  # Refused, not overwritten.


def test_16_bit_colour_pngs_keep_their_16_bits(workdir, tmp_path, capsys):
  import imagecodecs  # pylint: disable=g-import-not-at-top
  rgb = np.stack([_image(0), _image(1), _image(2)], axis=-1).astype(np.uint16) * 16  # > 255.
  (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb))
  read = segment_io.read_image(tmp_path / "rgb16.png")
  assert read.array.dtype == np.uint16 and read.axes == "YXS"
  np.testing.assert_array_equal(read.array, rgb)  # Pillow gave uint8: the top 8 bits.
  code, lines = _run(capsys, tmp_path / "rgb16.png", "--weights", workdir, "--channel", "1")
  assert code == 0 and not _errors(lines)
  rows = (tmp_path / "rgb16_nuclei.csv").read_text().splitlines()[1:]
  labels = tifffile.imread(tmp_path / "rgb16_labels.tif")
  assert rows  # The CSV's intensities are in the file's own units:
  first = rows[0].split(",")
  assert float(first[-1]) == pytest.approx(rgb[..., 1][labels == int(first[0])].mean())
  np.testing.assert_array_equal(labels, _labels_of(workdir, rgb[..., 1]))
