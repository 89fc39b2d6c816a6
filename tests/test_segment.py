"""Tests for the spiralnet-segment command: outputs, and one test per kind of bad input.

Every run is in-process (`segment.main(argv) -> exit status`) on a workdir of tiny random models
(the orbax layout train.py writes) whose scorer passes every region, so images of 40×48 pixels
run in well under a second once compiled.
"""

import csv
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import skimage.io
import tifffile

from configs import default
from spiralnet_jax import checkpoints
from spiralnet_jax import predict
from spiralnet_jax import segment
from spiralnet_jax import segment_io
from spiralnet_jax import stages
from spiralnet_jax import train_state
from spiralnet_jax import unet_predict
from spiralnet_jax.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (40, 48)
ERROR = "spiralnet-segment: error: "


def _config(features=4):
  config = default.get_config()
  config.scorer.hidden = 4
  config.scorer.threshold = -1e9  # Every region passes: random weights still give objects.
  config.segmenter.branch_features = features
  config.segmenter.features = features
  config.segmenter.skip_features = features
  config.segmenter.num_skip_modules = 1
  config.predict.region_batch_size = 4
  config.unet.base_features = 2
  config.unet.depth = 2
  return config


def _save_stage(workdir, stage, config, seed, step=1):
  """A checkpoint of fresh `stage` params, in the layout `checkpoints` restores."""
  abstract = train_state.abstract_state(stage, config)
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
  # One jitted init (not op by op) with "rbg" keys: both much faster to compile on XLA:CPU.
  init = jax.jit(lambda key: stages.get(stage).init_params(config, key))
  state = state.replace(params=init(jax.random.key(seed, impl="rbg")))
  with ocp.CheckpointManager(checkpoints.checkpoint_dir(workdir, stage),
                             options=ocp.CheckpointManagerOptions(create=True)) as mngr:
    checkpoints.save(mngr, step, state)
    mngr.wait_until_finished()


def _write_workdir(path, config, stages=("scorer", "segmenter", "unet")):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(config.to_json_best_effort())
  for seed, stage in enumerate(stages):
    _save_stage(path, stage, config, seed)
  return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return _write_workdir(tmp_path_factory.mktemp("workdir"), _config())


def _image(seed=0, shape=SHAPE):
  return synthetic.generate(seed, shape=shape)[0]  # uint16.


def _run(capsys, *args):
  """(exit status, stderr lines) of one in-process run."""
  code = segment.main([str(a) for a in args] + ["--quiet"])
  return code, capsys.readouterr().err.splitlines()


def _errors(lines):
  return [line for line in lines if line.startswith(ERROR)]


def _assert_one_error(lines, path, reason):
  """Exactly one error line, naming `path` and containing `reason`."""
  errors = _errors(lines)
  assert len(errors) == 1, lines
  assert errors[0].startswith(f"{ERROR}{path}: "), errors[0]
  assert reason in errors[0], errors[0]


def _outputs(path, *kinds):
  path = pathlib.Path(path)
  return [path.parent / f"{path.stem}{segment_io.OUTPUT_SUFFIXES[k]}" for k in kinds]


# --- good input ----------------------------------------------------------------------------


def test_good_files_get_labels_csv_semantic_and_overlay(workdir, tmp_path, capsys):
  tif, png, jpg = tmp_path / "a.tif", tmp_path / "b.PNG", tmp_path / "c.jpeg"
  tifffile.imwrite(tif, _image(0))
  skimage.io.imsave(png, _image(1), check_contrast=False)  # 16-bit PNG.
  skimage.io.imsave(jpg, (_image(2) >> 4).astype(np.uint8), check_contrast=False)
  out = tmp_path / "out"
  code, lines = _run(capsys, tif, png, jpg, "--weights", workdir, "--output-dir", out,
                     "--save-semantic", "--save-overlay")
  assert code == 0 and not _errors(lines)

  predictor = predict.Predictor.from_workdir(workdir)
  for path in (tif, png, jpg):
    labels_path, csv_path, semantic_path, overlay_path = _outputs(
        out / path.name, "labels", "csv", "semantic", "overlay")
    labels = tifffile.imread(labels_path)
    assert labels.dtype == np.uint16 and labels.shape == SHAPE
    raw = tifffile.imread(path) if path.suffix == ".tif" else skimage.io.imread(path)
    semantic, instances = predict.predict(predictor, raw)
    np.testing.assert_array_equal(labels, instances)
    assert skimage.io.imread(labels_path).dtype == np.uint16  # scikit-image reads it too.
    mask = tifffile.imread(semantic_path)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, semantic)
    overlay = skimage.io.imread(overlay_path)
    assert overlay.dtype == np.uint8 and overlay.shape == SHAPE + (3,)
    with open(csv_path, newline="") as f:
      reader = csv.DictReader(f)
      rows = list(reader)
    assert tuple(reader.fieldnames) == segment_io.CSV_FIELDS
    assert [int(r["label"]) for r in rows] == list(range(1, labels.max() + 1))
    assert [int(r["area"]) for r in rows] == [int((labels == i).sum()) for i in
                                              range(1, labels.max() + 1)]
  assert tifffile.imread(_outputs(out / "a.tif", "labels")[0]).max() > 0
  # Nothing but the outputs (no temporary files left behind).
  assert len(list(out.iterdir())) == 12


def test_measurements_by_hand():
  labels = np.zeros((6, 8), np.int32)
  labels[1:3, 2:5] = 1  # 2 × 3 box.
  labels[4, 0] = 2
  raw = np.arange(48, dtype=np.uint16).reshape(6, 8)
  rows = segment_io.measurements(labels, raw)
  assert rows == [
      {"label": 1, "area": 6, "centroid_y": 1.5, "centroid_x": 3.0, "bbox_min_row": 1,
       "bbox_min_col": 2, "bbox_max_row": 3, "bbox_max_col": 5,
       "mean_intensity": (10 + 11 + 12 + 18 + 19 + 20) / 6},
      {"label": 2, "area": 1, "centroid_y": 4.0, "centroid_x": 0.0, "bbox_min_row": 4,
       "bbox_min_col": 0, "bbox_max_row": 5, "bbox_max_col": 1, "mean_intensity": 32.0}]
  assert segment_io.measurements(np.zeros((3, 3), np.int32), raw[:3, :3]) == []


def test_labels_are_uint16_until_65535_then_uint32(tmp_path):
  assert segment_io.label_dtype(0) == np.uint16
  assert segment_io.label_dtype(65_535) == np.uint16
  assert segment_io.label_dtype(65_536) == np.uint32
  labels = np.array([[0, 70_000], [65_536, 1]], np.int32)
  segment_io.write_tiff(tmp_path / "l.tif", labels.astype(segment_io.label_dtype(labels.max())))
  back = tifffile.imread(tmp_path / "l.tif")
  assert back.dtype == np.uint32
  np.testing.assert_array_equal(back, labels)


def test_semantic_mode_writes_only_the_mask(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--mode", "semantic")
  assert code == 0 and not _errors(lines)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "a_semantic.tif"]
  semantic, _ = predict.predict(predict.Predictor.from_workdir(workdir), _image(0))
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "a_semantic.tif") == 255, semantic)


def test_unet_model(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--model", "unet")
  assert code == 0 and not _errors(lines)
  unet = unet_predict.UNetPredictor.from_workdir(workdir)
  _, instances = unet_predict.predict_unet(unet, _image(0))
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "a_labels.tif"), instances)


def test_channel_picks_one_plane_of_stacks_and_rgb(workdir, tmp_path, capsys):
  planes = np.stack([_image(3), _image(0), _image(4)])
  tifffile.imwrite(tmp_path / "stack.tif", planes, photometric="minisblack")  # (C, H, W).
  tifffile.imwrite(tmp_path / "plane.tif", planes[1])
  rgb = np.moveaxis(planes, 0, -1)  # (H, W, C).
  tifffile.imwrite(tmp_path / "hwc.tif", rgb)
  code, lines = _run(capsys, tmp_path, "--weights", workdir, "--channel", "1")
  assert code == 1  # plane.tif is 2-D: channel 1 does not exist.
  _assert_one_error(lines, tmp_path / "plane.tif", "no channel 1")
  # The plane alone, segmented with --channel 0 (a 2-D image has channel 0 only).
  code, _ = _run(capsys, tmp_path / "plane.tif", "--weights", workdir, "--channel", "0")
  assert code == 0
  want = tifffile.imread(tmp_path / "plane_labels.tif")
  for stem in ("stack", "hwc"):
    np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{stem}_labels.tif"), want)
  code, lines = _run(capsys, tmp_path / "stack.tif", "--weights", workdir, "--channel", "3",
                     "--overwrite")
  assert code == 1
  _assert_one_error(lines, tmp_path / "stack.tif", "out of range")
  # An explicit axis overrides the shorter-axis rule: (3, 40, 48) read as (H, W, C) has 48.
  assert segment_io.select_channel(planes, 47, "last").shape == (3, 40)


# --- bad input: one row each ---------------------------------------------------------------


def _folder_with_good_file(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  tifffile.imwrite(folder / "good.tif", _image(0))
  return folder


def _assert_good_file_done(folder):
  assert (folder / "good_labels.tif").is_file() and (folder / "good_nuclei.csv").is_file()


def _truncated(path, write):
  write(path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


BAD_FILES = {
    "truncated.tif": (lambda p: _truncated(p, lambda q: tifffile.imwrite(q, _image(5))),
                      "cannot read as TIFF"),
    "truncated.png": (lambda p: _truncated(p, lambda q: skimage.io.imsave(
        q, _image(5), check_contrast=False)), "cannot read as PNG"),
    "text.tif": (lambda p: p.write_text("not an image\n"), "not a TIFF file"),
    "text.png": (lambda p: p.write_text("not an image\n"), "cannot read as PNG"),
    "stack.tif": (lambda p: tifffile.imwrite(p, np.stack([_image(0)] * 3),
                                             photometric="minisblack"),
                  "shape (3, 40, 48) is a 3-D stack or multi-channel (e.g. RGB) image; pass "
                  "--channel C"),
    "rgb.png": (lambda p: skimage.io.imsave(p, np.zeros(SHAPE + (3,), np.uint8),
                                            check_contrast=False),
                "shape (40, 48, 3) is a 3-D stack"),
    "empty.tif": (lambda p: tifffile.imwrite(p, np.zeros((0, 48), np.uint16)),
                  "expected an image of at least 1×1, got shape (0, 48)"),
    "nan.tif": (lambda p: tifffile.imwrite(p, np.where(np.eye(40, 48) > 0, np.nan, 1.0)),
                "NaN or infinite"),
    "inf.tif": (lambda p: tifffile.imwrite(p, np.where(np.eye(40, 48) > 0, -np.inf, 1.0)),
                "NaN or infinite"),
    "4d.tif": (lambda p: tifffile.imwrite(p, np.zeros((2, 3, 40, 48), np.uint8),
                                          photometric="minisblack"),
               "expected a 2-D image or a 3-D multi-channel array"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # tifffile on writing a 0×N array.
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_one_error_line_and_the_rest_goes_on(name, workdir, tmp_path, capsys):
  folder = _folder_with_good_file(tmp_path)
  write, reason = BAD_FILES[name]
  write(folder / name)
  code, lines = _run(capsys, folder, "--weights", workdir)
  assert code == 1
  _assert_one_error(lines, folder / name, reason)
  _assert_good_file_done(folder)
  assert not list(folder.glob(f"{pathlib.Path(name).stem}_*"))  # No outputs for the bad one.


def test_missing_file_and_not_an_image(workdir, tmp_path, capsys):
  folder = _folder_with_good_file(tmp_path)
  (folder / "notes.txt").write_text("hello")
  for path, reason in ((folder / "missing.tif", "no such file or directory"),
                       (folder / "notes.txt", "not an image file"),
                       (folder / "nothing*.tif", "no image files match")):
    code, lines = _run(capsys, folder / "good.tif", path, "--weights", workdir, "--overwrite")
    assert code == 1
    _assert_one_error(lines, path, reason)
    _assert_good_file_done(folder)


@pytest.mark.parametrize("dtype", ["bool", "float32", "int32"])
def test_bool_float_and_int32_images_are_valid(dtype, workdir, tmp_path, capsys):
  image = _image(0).astype(np.float64)
  image = {"bool": image > image.mean(), "float32": (image / 4095 - 0.5).astype(np.float32),
           "int32": (image - 3000).astype(np.int32)}[dtype]
  tifffile.imwrite(tmp_path / "x.tif", image)
  assert tifffile.imread(tmp_path / "x.tif").dtype == image.dtype
  code, lines = _run(capsys, tmp_path / "x.tif", "--weights", workdir)
  assert code == 0 and not _errors(lines)
  _, want = predict.predict(predict.Predictor.from_workdir(workdir), image)
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "x_labels.tif"), want)


def test_constant_image_is_valid_with_no_nuclei(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "flat.tif", np.full(SHAPE, 700, np.uint16))
  code, lines = _run(capsys, tmp_path / "flat.tif", "--weights", workdir)
  assert code == 0 and not _errors(lines)
  labels = tifffile.imread(tmp_path / "flat_labels.tif")
  assert labels.shape == SHAPE and labels.dtype == np.uint16 and not labels.any()
  assert (tmp_path / "flat_nuclei.csv").read_text().splitlines() == [",".join(
      segment_io.CSV_FIELDS)]


def test_existing_output_is_refused_unless_overwrite(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  (tmp_path / "a_labels.tif").write_bytes(b"old")
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir)
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif", "a_labels.tif exists (pass --overwrite")
  assert (tmp_path / "a_labels.tif").read_bytes() == b"old"
  assert not (tmp_path / "a_nuclei.csv").exists()  # Refused before anything is written.
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--overwrite")
  assert code == 0 and not _errors(lines)
  assert tifffile.imread(tmp_path / "a_labels.tif").shape == SHAPE


def test_output_that_would_overwrite_an_input_is_always_refused(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  tifffile.imwrite(tmp_path / "a_labels.tif", _image(1))  # Also an input, named explicitly.
  before = (tmp_path / "a_labels.tif").read_bytes()
  code, lines = _run(capsys, tmp_path / "a.tif", tmp_path / "a_labels.tif", "--weights",
                     workdir, "--overwrite")
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif", "would overwrite an input file")
  assert (tmp_path / "a_labels.tif").read_bytes() == before
  assert (tmp_path / "a_labels_labels.tif").is_file()  # The other input still ran.
  # Folders never take this program's outputs as inputs.
  assert segment_io.find_inputs([str(tmp_path)]) == ([tmp_path / "a.tif"], [])


def test_two_inputs_with_one_output_name_are_refused(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  skimage.io.imsave(tmp_path / "a.png", _image(1), check_contrast=False)
  code, lines = _run(capsys, tmp_path, "--weights", workdir)
  assert code == 1
  _assert_one_error(lines, tmp_path / "a.tif", "is also the output of")
  assert tifffile.imread(tmp_path / "a_labels.tif").shape == SHAPE  # From a.png.


def test_unwritable_output_directory_is_an_error_per_file(workdir, tmp_path, capsys):
  folder = _folder_with_good_file(tmp_path)
  tifffile.imwrite(folder / "second.tif", _image(1))
  blocker = tmp_path / "file"
  blocker.write_text("a file, not a folder")
  code, lines = _run(capsys, folder, "--weights", workdir, "--output-dir", blocker / "out")
  assert code == 1
  errors = _errors(lines)
  assert [e.split(": ")[2] for e in errors] == [str(folder / "good.tif"),
                                                str(folder / "second.tif")]
  assert all("cannot create output directory" in e for e in errors)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_directory(workdir, tmp_path, capsys):
  folder = _folder_with_good_file(tmp_path)
  out = tmp_path / "ro"
  out.mkdir(mode=0o500)
  code, lines = _run(capsys, folder, "--weights", workdir, "--output-dir", out)
  assert code == 1
  _assert_one_error(lines, folder / "good.tif", "not writable")


def test_folder_with_one_bad_file_still_segments_the_good_ones(workdir, tmp_path, capsys):
  folder = _folder_with_good_file(tmp_path)
  skimage.io.imsave(folder / "second.png", _image(1), check_contrast=False)
  _truncated(folder / "bad.tif", lambda q: tifffile.imwrite(q, _image(2)))
  out = tmp_path / "out"
  code, lines = _run(capsys, str(folder / "*"), "--weights", workdir, "--output-dir", out)
  assert code == 1
  _assert_one_error(lines, folder / "bad.tif", "cannot read as TIFF")
  assert sorted(p.name for p in out.iterdir()) == [
      "good_labels.tif", "good_nuclei.csv", "second_labels.tif", "second_nuclei.csv"]


# --- weights -------------------------------------------------------------------------------


def test_weights_problems_are_one_line_and_exit_2(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  no_segmenter = _write_workdir(tmp_path / "scorer_only", _config(), stages=("scorer",))
  wrong_shape = _write_workdir(tmp_path / "wrong", _config(features=3),
                               stages=("scorer", "segmenter"))
  (wrong_shape / "config.json").write_text(_config(features=4).to_json_best_effort())
  no_config = tmp_path / "empty"
  no_config.mkdir()
  damaged = tmp_path / "damaged_export"
  damaged.mkdir()
  (damaged / "config.json").write_text(_config().to_json_best_effort())
  for stage in ("scorer", "segmenter"):
    (damaged / f"{stage}.npz").write_bytes(b"not a zip")
  cases = [
      (["--model", "unet"], "exported weights hold SpiralNet only"),
      (["--weights", damaged], "cannot load the exported weights"),
      (["--weights", tmp_path / "missing"], "does not exist"),
      (["--weights", no_config], "not a train.py workdir"),
      (["--weights", no_segmenter], "no segmenter checkpoint"),
      (["--weights", no_segmenter, "--model", "unet"], "no unet checkpoint"),
      (["--weights", wrong_shape], "segmenter weights do not fit its config.json"),
  ]
  for args, reason in cases:
    code, lines = _run(capsys, tmp_path / "a.tif", *args)
    assert code == 2, (args, lines)
    assert len(lines) == 1 and lines[0].startswith(ERROR) and reason in lines[0], lines
  assert not (tmp_path / "a_labels.tif").exists()


def test_usage_errors_exit_2(workdir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  code, lines = _run(capsys, empty, "--weights", workdir)
  assert code == 2
  assert lines == [f"{ERROR}{empty}: folder holds no .tif/.tiff/.png/.jpg/.jpeg images or "
                   "Zarr stores",
                   f"{ERROR}inputs: no input images found"]
  code, _ = _run(capsys, tmp_path, "--model", "cellpose")
  assert code == 2


def test_python_m_entry_point():
  result = subprocess.run([sys.executable, "-m", "spiralnet_jax.segment", "--help"], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0
  assert result.stdout.startswith("usage: spiralnet-segment")


def test_negative_batch_size_is_refused_with_the_range_that_is_accepted(tmp_path, capsys):
  code, lines = _run(capsys, tmp_path / "a.tif", "--batch-size", "-1")
  assert code == 2
  assert lines == ["spiralnet-segment: error: --batch-size: must be ≥ 1 (or 0, the default: the "
                   "model's own batch size)"]


def test_diameter_rescales_the_image_and_returns_labels_of_its_shape(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--diameter", "14.125")
  assert code == 0 and not _errors(lines)
  predictor = predict.Predictor.from_workdir(workdir)
  want = predict.predict_instances(predictor, _image(0), diameter=14.125)  # Magnified ×2.
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "a_labels.tif"), want)
  assert want.shape == SHAPE
  for value, reason in (("1", "--diameter 1 is too far from the model's 28.25 px (accepted: "
                               "3.53125 to 226 px)"),
                        ("-2", "--diameter must be a positive number of pixels, got -2.0")):
    code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--diameter", value,
                       "--overwrite")
    assert code == 2 and lines == [f"{ERROR}{reason}"], lines


def _filled_rois(path, shape):
  """{ROI name: filled mask} of a ROI zip read back with roifile (pixel centres at +0.5)."""
  import roifile  # pylint: disable=g-import-not-at-top
  from skimage import draw  # pylint: disable=g-import-not-at-top
  masks = {}
  for roi in roifile.roiread(path):
    points = roi.coordinates() - 0.5
    mask = np.zeros(shape, bool)
    mask[draw.polygon(points[:, 1], points[:, 0], shape)] = True
    masks[roi.name] = mask
  return masks


def test_rois_round_trip_to_the_labels_and_replace_an_old_zip(workdir, tmp_path, capsys):
  tifffile.imwrite(tmp_path / "a.tif", _image(0))
  (tmp_path / "a_rois.zip").write_bytes(b"an old zip, not ours")
  code, lines = _run(capsys, tmp_path / "a.tif", "--weights", workdir, "--save-rois",
                     "--overwrite")
  assert code == 0 and not _errors(lines)
  labels = tifffile.imread(tmp_path / "a_labels.tif")
  masks = _filled_rois(tmp_path / "a_rois.zip", labels.shape)
  ids = [i for i in np.unique(labels) if i]
  assert ids and sorted(masks) == sorted(str(i) for i in ids)  # Names are the label ids.
  for i in ids:
    truth, got = labels == i, masks[str(i)]
    assert (truth & got).sum() / (truth | got).sum() >= 0.95, i


def test_rois_of_hand_made_shapes_fill_back_exactly():
  labels = np.zeros((30, 40), np.int32)
  labels[2:9, 3:12] = 4  # A rectangle.
  yy, xx = np.mgrid[:30, :40]
  labels[(yy - 20) ** 2 + (xx - 25) ** 2 <= 36] = 9  # A disk of radius 6.
  labels[25, 2] = 2  # One pixel.
  polygons = dict(segment_io.instance_polygons(labels))
  assert sorted(polygons) == [2, 4, 9]
  from skimage import draw  # pylint: disable=g-import-not-at-top
  for label, points in polygons.items():
    filled = np.zeros(labels.shape, bool)
    filled[draw.polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, labels.shape)] = True
    np.testing.assert_array_equal(filled, labels == label)
