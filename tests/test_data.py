"""BBBC039 reading, the bundled sample, load_examples and the download helper."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import skimage.measure

from spiralnet_jax import data
from spiralnet_jax.data import download as dl

_REPO = pathlib.Path(__file__).resolve().parents[1]
NUCLEI_PER_SPLIT = {"training": 12001, "validation": 5896, "test": 5720}
SPLIT_SIZES = {"training": 100, "validation": 50, "test": 50}
SAMPLE_SIZES = {"training": 4, "validation": 2, "test": 2}


def _default_data_config():
  spec = importlib.util.spec_from_file_location("default_config", _REPO / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().data


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
  """True iff two label images split the same foreground into the same pieces."""
  if not np.array_equal(a == 0, b == 0):
    return False
  fg = a != 0
  pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1).shape[1]
  return pairs == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def _red(data_dir: pathlib.Path, name: str) -> np.ndarray:
  with PIL.Image.open(data_dir / "masks" / f"{name}.png") as png:
    return np.asarray(png)[..., 0]


# --- decode_mask -------------------------------------------------------------------------------

RED = np.array([[1, 1, 2, 0],
                [0, 1, 2, 0],
                [1, 0, 0, 3],
                [1, 1, 0, 3]], np.uint8)
# 4-connected components per red value, numbered in raster order. (1, 1) and (2, 0) share the
# value 1 but touch only diagonally: two nuclei.
EXPECTED = np.array([[1, 1, 2, 0],
                     [0, 1, 2, 0],
                     [3, 0, 0, 4],
                     [3, 3, 0, 4]], np.int32)


def test_decode_mask_hand_computed():
  rgba = np.zeros(RED.shape + (4,), np.uint8)
  rgba[..., 0], rgba[..., 3] = RED, 255
  labels = data.decode_mask(rgba)
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, EXPECTED)


def test_decode_mask_reads_only_red():
  rgba = np.random.default_rng(0).integers(0, 256, RED.shape + (4,)).astype(np.uint8)
  rgba[..., 0] = RED
  np.testing.assert_array_equal(data.decode_mask(rgba), EXPECTED)
  np.testing.assert_array_equal(data.decode_mask(rgba[..., :3]), EXPECTED)
  np.testing.assert_array_equal(data.decode_mask(RED), EXPECTED)


def test_decode_mask_empty_and_bad_shape():
  np.testing.assert_array_equal(data.decode_mask(np.zeros((3, 5, 4), np.uint8)),
                                np.zeros((3, 5), np.int32))
  with pytest.raises(ValueError, match="shape"):
    data.decode_mask(np.zeros((2, 3, 4, 1), np.uint8))


# --- normalize ---------------------------------------------------------------------------------

def test_normalize_hand_computed():
  out = data.normalize(np.array([[10, 20], [30, 10]], np.uint16))
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, np.array([[0.0, 0.5], [1.0, 0.0]], np.float32))
  # Wide integers are not rounded before dividing: 2**24 + 1 is not a float32.
  wide = data.normalize(np.array([0, 1, 2 ** 24 + 1], np.uint32))
  expected = np.float32(1 / (2 ** 24 + 1))
  assert expected != np.float32(2.0 ** -24)
  np.testing.assert_array_equal(wide, np.array([0.0, expected, 1.0], np.float32))


def test_normalize_constant_image_is_zeros():
  for value in (0, 7, 4095):
    out = data.normalize(np.full((3, 4), value, np.uint16))
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_array_equal(out, np.zeros((3, 4), np.float32))


def test_normalize_real_image_spans_unit_interval():
  image = data.load_split("training", data.sample_dir(), max_images=1)[0].image
  out = data.normalize(image)
  assert out.dtype == np.float32 and out.shape == image.shape
  assert out.min() == 0.0 and out.max() == 1.0
  # Order-preserving: the brightest raw pixel is the brightest normalised one.
  assert np.unravel_index(out.argmax(), out.shape) == np.unravel_index(image.argmax(), out.shape)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("percentiles", [(1.0, 99.8), (0.5, 99.0), (0.0, 50.0), (3.3, 100.0)])
def test_intensity_range_equals_numpy_percentile(dtype, percentiles):
  # Integer images take a histogram path; it must give np.percentile's "linear" values exactly.
  image = np.random.default_rng(0).integers(0, 250, (37, 51)).astype(dtype)
  np.testing.assert_array_equal(data.intensity_range(image, percentiles),
                                np.percentile(image, percentiles))


def test_percentile_normalize_hand_computed_and_clipped():
  # 0..100: the 10th and 90th percentiles are 10 and 90; outside them the values clip.
  image = np.arange(101, dtype=np.uint16).reshape(1, 101)
  out = data.normalize(image, (10.0, 90.0))
  np.testing.assert_array_equal(out[0, :11], np.zeros(11, np.float32))
  np.testing.assert_array_equal(out[0, 90:], np.ones(11, np.float32))
  np.testing.assert_allclose(out[0, 50], 0.5, rtol=0, atol=1e-7)
  assert data.normalize(image, (0.0, 100.0))[0, 50] == np.float32(0.5)


def test_percentile_normalize_ignores_hot_pixels():
  image = data.load_split("training", data.sample_dir(), max_images=1)[0].image
  hot = image.copy()
  where = np.random.default_rng(1).choice(hot.size, 5, replace=False)
  hot.flat[where] = 65535
  robust = data.normalize(image, (1.0, 99.8)), data.normalize(hot, (1.0, 99.8))
  # Five of 362k pixels move the 99.8th percentile a little: every other pixel stays within
  # 0.2% of the intensity range, and the hot pixels clip to 1.
  others = np.ones(hot.size, bool)
  others[where] = False
  assert np.abs(robust[0] - robust[1]).ravel()[others].max() < 2e-3
  np.testing.assert_array_equal(robust[1].ravel()[where], np.ones(5, np.float32))
  # Min-max, by contrast, squashes the whole field: its brightest real pixel falls below 0.07.
  assert data.normalize(hot)[image == image.max()].max() < 0.07


@pytest.mark.parametrize("percentiles", [(5.0, 5.0), (-1.0, 50.0), (10.0, 101.0)])
def test_bad_percentiles_are_refused(percentiles):
  with pytest.raises(ValueError, match="percentiles"):
    data.normalize(np.arange(4).reshape(2, 2), percentiles)


# --- the full data set -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def split_counts(bbbc039_dir):
  """Per split: nuclei from decode_mask, from red-as-ids, and from labelling red > 0."""
  counts = {}
  for split in data.SPLITS:
    decoded = red_as_ids = binary = 0
    for name in data.read_split_names(bbbc039_dir, split):
      with PIL.Image.open(bbbc039_dir / "masks" / f"{name}.png") as png:
        rgba = np.asarray(png)
      red = rgba[..., 0]
      decoded += int(data.decode_mask(rgba).max())
      red_as_ids += len(np.unique(red[red > 0]))
      binary += int(skimage.measure.label(red > 0, connectivity=1).max())
    counts[split] = (decoded, red_as_ids, binary)
  return counts


def test_nuclei_per_split(split_counts):
  assert {s: c[0] for s, c in split_counts.items()} == NUCLEI_PER_SPLIT
  assert sum(c[0] for c in split_counts.values()) == 23617


def test_naive_decodings_merge_nuclei(split_counts):
  for split, (decoded, red_as_ids, binary) in split_counts.items():
    assert red_as_ids < decoded, split
    assert binary < decoded, split


def test_touching_nuclei_of_different_red_are_two_instances(bbbc039_dir):
  name = data.read_split_names(bbbc039_dir, "training")[0]
  red = _red(bbbc039_dir, name).astype(np.int32)
  labels = data.read_mask(bbbc039_dir, name)
  # Horizontally adjacent pixels, both foreground, with different red values.
  ys, xs = np.nonzero((red[:, :-1] > 0) & (red[:, 1:] > 0) & (red[:, :-1] != red[:, 1:]))
  assert len(ys) > 0, "expected touching nuclei in the first training mask"
  y, x = ys[0], xs[0]
  a, b = labels[y, x], labels[y, x + 1]
  assert a > 0 and b > 0 and a != b
  # Labelling the binary mask puts both pixels into one object.
  binary = skimage.measure.label(red > 0, connectivity=1)
  assert binary[y, x] == binary[y, x + 1]
  # Reading red as ids lumps the nucleus with every other nucleus of the same colour.
  assert np.sum(red == red[y, x]) > np.sum(labels == a)


def test_decode_equals_labelling_each_red_value(bbbc039_dir):
  name = data.read_split_names(bbbc039_dir, "validation")[0]
  red = _red(bbbc039_dir, name)
  per_value = np.zeros(red.shape, np.int64)
  offset = 0
  for v in np.unique(red[red > 0]):
    lab = skimage.measure.label(red == v, connectivity=1)
    per_value[lab > 0] = lab[lab > 0] + offset
    offset += lab.max()
  labels = data.read_mask(bbbc039_dir, name)
  assert _same_partition(labels, per_value)
  np.testing.assert_array_equal(np.unique(labels), np.arange(offset + 1))


def test_split_files_are_disjoint_and_cover_all_fields(bbbc039_dir):
  names = {s: data.read_split_names(bbbc039_dir, s) for s in data.SPLITS}
  assert {s: len(n) for s, n in names.items()} == SPLIT_SIZES
  sets = {s: set(n) for s, n in names.items()}
  assert not sets["training"] & sets["validation"]
  assert not sets["training"] & sets["test"]
  assert not sets["validation"] & sets["test"]
  union = sets["training"] | sets["validation"] | sets["test"]
  assert union == {p.stem for p in (bbbc039_dir / "masks").glob("*.png")}
  assert union == {p.stem for p in (bbbc039_dir / "images").glob("*.tif")}
  assert len(union) == 200


def test_load_split_full(bbbc039_dir):
  examples = data.load_split("test", bbbc039_dir, max_images=2)
  assert [e.name for e in examples] == data.read_split_names(bbbc039_dir, "test")[:2]
  for e in examples:
    assert isinstance(e, data.Example)
    assert e.image.dtype == np.uint16 and e.image.shape == (520, 696)
    assert e.labels.dtype == np.int32 and e.labels.shape == (520, 696)
    assert 110 <= e.image.min() and e.image.max() <= 4095
    np.testing.assert_array_equal(np.unique(e.labels), np.arange(e.labels.max() + 1))


# --- errors ------------------------------------------------------------------------------------

def test_wrong_split_name():
  with pytest.raises(ValueError, match="'train'.*training"):
    data.read_split_names(data.sample_dir(), "train")
  with pytest.raises(ValueError, match="unknown BBBC039 split"):
    data.load_split("eval", data.sample_dir())


def test_missing_files(tmp_path):
  (tmp_path / "metadata").mkdir()
  with pytest.raises(FileNotFoundError, match="training.txt"):
    data.read_split_names(tmp_path, "training")
  (tmp_path / "metadata" / "training.txt").write_text("nucleus_a.png\n")
  with pytest.raises(FileNotFoundError, match=r"images/nucleus_a\.tif"):
    data.load_split("training", tmp_path)
  (tmp_path / "images").mkdir()
  shutil.copyfile(next((data.sample_dir() / "images").glob("*.tif")),
                  tmp_path / "images" / "nucleus_a.tif")
  with pytest.raises(FileNotFoundError, match=r"masks/nucleus_a\.png"):
    data.load_split("training", tmp_path)


def test_resolve_data_dir_error_names_the_source(monkeypatch):
  monkeypatch.delenv(data.ENV_VAR, raising=False)
  with pytest.raises(FileNotFoundError) as info:
    data.resolve_data_dir("")
  message = str(info.value)
  for part in ("https://bbbc.broadinstitute.org/BBBC039", "images.zip", "masks.zip",
               "metadata.zip", "spiralnet_jax.data.download", data.ENV_VAR):
    assert part in message


def test_resolve_data_dir_order(monkeypatch, tmp_path):
  monkeypatch.setenv(data.ENV_VAR, str(data.sample_dir()))
  assert data.resolve_data_dir("") == data.sample_dir()
  assert data.resolve_data_dir(None) == data.sample_dir()
  (tmp_path / "metadata").mkdir()
  assert data.resolve_data_dir(str(tmp_path)) == tmp_path  # An explicit path wins.
  monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="nowhere.*no metadata"):
    data.resolve_data_dir("")


# --- the bundled sample ------------------------------------------------------------------------

def test_sample_layout_and_size():
  root = data.sample_dir()
  names = {s: data.read_split_names(root, s) for s in data.SPLITS}
  assert {s: len(n) for s, n in names.items()} == SAMPLE_SIZES
  all_names = [n for ns in names.values() for n in ns]
  assert len(set(all_names)) == len(all_names) == 8
  assert {p.stem for p in (root / "images").glob("*.tif")} == set(all_names)
  assert {p.stem for p in (root / "masks").glob("*.png")} == set(all_names)
  size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
  assert size < 6 * 2 ** 20
  attribution = (root / "ATTRIBUTION.md").read_text()
  for part in ("Ljosa", "Nature Methods", "CC0", "https://bbbc.broadinstitute.org/BBBC039"):
    assert part in attribution


def test_sample_equals_full_data_set(bbbc039_dir):
  for split in data.SPLITS:
    official = data.read_split_names(bbbc039_dir, split)
    sample = data.load_split(split, data.sample_dir())
    names = [e.name for e in sample]
    assert set(names) <= set(official)
    assert names == [n for n in official if n in names]  # Official order kept.
    for e in sample:
      full = data.load_example(bbbc039_dir, e.name)
      assert e.image.dtype == full.image.dtype == np.uint16
      np.testing.assert_array_equal(e.image, full.image)  # Lossless re-encoding.
      np.testing.assert_array_equal(e.labels, full.labels)
      assert e.labels.max() > 100  # Typical fields, not the empty ones.


# --- load_examples -----------------------------------------------------------------------------

def test_load_examples_sample_and_bbbc039(bbbc039_dir):
  config = _default_data_config()
  config.source = "sample"
  sample = data.load_examples(config, "validation")
  assert [e.name for e in sample] == data.read_split_names(data.sample_dir(), "validation")
  config.max_images = 1
  assert [e.name for e in data.load_examples(config, "training")] == [
      data.read_split_names(data.sample_dir(), "training")[0]]
  config.source, config.data_dir = "bbbc039", str(bbbc039_dir)
  full = data.load_examples(config, "test")
  assert [e.name for e in full] == data.read_split_names(bbbc039_dir, "test")[:1]


def test_load_examples_synthetic():
  config = _default_data_config()
  config.source = "synthetic"
  config.synthetic_num_train, config.synthetic_num_eval = 3, 2
  config.synthetic_shape = (40, 56)
  train = data.load_examples(config, "training")
  val = data.load_examples(config, "validation")
  assert [e.name for e in train] == [f"synthetic_training_{i:03d}" for i in range(3)]
  assert len(val) == 2
  for e in train + val:
    assert e.image.shape == e.labels.shape == (40, 56)
    assert e.image.dtype == np.uint16 and e.labels.dtype == np.int32
  # Deterministic, independent of config.seed, different per split.
  config.seed = 123
  again = data.load_examples(config, "training")
  for a, b in zip(train, again):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(train[0].image, val[0].image)
  config.max_images = 1
  assert len(data.load_examples(config, "training")) == 1
  with pytest.raises(ValueError, match="unknown split"):
    data.load_examples(config, "train")


def test_load_examples_unknown_source():
  config = _default_data_config()
  config.source = "kaggle"
  with pytest.raises(ValueError, match="unknown data source 'kaggle'"):
    data.load_examples(config, "training")


# --- download ----------------------------------------------------------------------------------

def test_bundled_checksums_match_the_data_set(bbbc039_dir):
  sums = dl.read_checksums()
  assert len(sums) == 405
  parts = sorted(name.split("/")[0] for name in sums)
  assert parts.count("images") == 200 and parts.count("masks") == 200
  assert parts.count("metadata") == 5
  assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in sums.values())
  assert dl.verify(bbbc039_dir, sums) == []


def _serve(tmp_path: pathlib.Path, full: pathlib.Path, stems, corrupt: str = "") -> tuple[str, dict]:
  """Writes images/masks/metadata zips of a few real files; returns (base URL, their sums)."""
  server = tmp_path / "server"
  server.mkdir()
  files = {}
  for stem in stems:
    files[f"images/{stem}.tif"] = (full / "images" / f"{stem}.tif").read_bytes()
    files[f"masks/{stem}.png"] = (full / "masks" / f"{stem}.png").read_bytes()
  files["metadata/training.txt"] = (full / "metadata" / "training.txt").read_bytes()
  if corrupt:
    files[corrupt] = files[corrupt][:-1] + bytes([files[corrupt][-1] ^ 1])
  with zipfile.ZipFile(server / "images.zip", "w") as z:  # Files inside an images/ folder.
    z.writestr("images/", b"")
    for name, content in files.items():
      if name.startswith("images/"):
        z.writestr(name, content)
  with zipfile.ZipFile(server / "masks.zip", "w") as z:  # Flat, with macOS debris.
    for name, content in files.items():
      if name.startswith("masks/"):
        z.writestr(name.split("/")[1], content)
        z.writestr(f"__MACOSX/._{name.split('/')[1]}", b"junk")
  with zipfile.ZipFile(server / "metadata.zip", "w") as z:  # Plus a file not in the list.
    z.writestr("metadata/training.txt", files["metadata/training.txt"])
    z.writestr("metadata/segmentation_cp3.cppipe", b"pipeline")
  bundled = dl.read_checksums()
  sums = {name: bundled[name] for name in files}
  return server.as_uri() + "/", sums


def test_download_offline(tmp_path, bbbc039_dir):
  stems = data.read_split_names(bbbc039_dir, "training")[:2]
  url, sums = _serve(tmp_path, bbbc039_dir, stems)
  dest = dl.download(tmp_path / "dest", base_url=url, checksums=sums)
  assert dest == tmp_path / "dest"
  assert sorted(p.name for p in dest.iterdir()) == ["images", "masks", "metadata"]
  for name in sums:
    assert (dest / name).read_bytes() == (bbbc039_dir / name).read_bytes()
  assert sorted(p.name for p in (dest / "masks").iterdir()) == [f"{s}.png" for s in stems]
  assert (dest / "metadata" / "segmentation_cp3.cppipe").read_bytes() == b"pipeline"
  example = data.load_example(dest, stems[0])
  np.testing.assert_array_equal(example.labels, data.read_mask(bbbc039_dir, stems[0]))


def test_download_reports_mismatch_and_missing(tmp_path, bbbc039_dir):
  stems = data.read_split_names(bbbc039_dir, "training")[:2]
  bad = f"masks/{stems[1]}.png"
  url, sums = _serve(tmp_path, bbbc039_dir, stems, corrupt=bad)
  sums["images/not_there.tif"] = "0" * 64
  with pytest.raises(dl.ChecksumError) as info:
    dl.download(tmp_path / "dest", base_url=url, checksums=sums)
  assert info.value.problems == [
      "missing   images/not_there.tif",
      f"mismatch  {bad}: expected sha256 {sums[bad]}, got {dl.sha256(tmp_path / 'dest' / bad)}"]
  assert bad in str(info.value) and "failed verification (2 of the listed files)" in str(
      info.value)


def test_download_unreachable_url(tmp_path):
  url = (tmp_path / "empty").as_uri() + "/"
  with pytest.raises(RuntimeError, match="could not download .*images.zip"):
    dl.download(tmp_path / "dest", base_url=url)


def test_download_cli(tmp_path, bbbc039_dir, capsys):
  stems = data.read_split_names(bbbc039_dir, "validation")[:1]
  url, sums = _serve(tmp_path, bbbc039_dir, stems)
  sums_file = tmp_path / "SUMS"
  sums_file.write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
  dest = tmp_path / "dest"
  proc = subprocess.run(
      [sys.executable, "-m", "spiralnet_jax.data.download", str(dest), "--base-url", url,
       "--sums", str(sums_file)], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  assert f"BBBC039 ready in {dest}" in proc.stdout
  assert dl.verify(dest, sums) == []
  # Verifying the partial copy against the full list fails and says what is missing.
  assert dl.main([str(dest), "--verify-only"]) == 1
  err = capsys.readouterr().err
  assert "failed verification (402 of the listed files)" in err and "missing   images/" in err
