"""The TFDS builder builds and reads back the bundled sample bit-exactly, with TensorFlow unavailable."""

import pathlib
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent('''
    import importlib.util
    import pathlib
    import shutil
    import sys

    class HideTensorFlow:
      """Wraps a meta-path finder so that it never finds TensorFlow (as if not installed)."""

      def __init__(self, finder):
        self._finder = finder

      def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

      def invalidate_caches(self):
        if hasattr(self._finder, "invalidate_caches"):
          self._finder.invalidate_caches()

      def __getattr__(self, attr):  # find_distributions etc. for importlib.metadata.
        return getattr(self._finder, attr)

    sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
    try:
      import tensorflow  # noqa: F401
    except ImportError:
      pass
    else:
      raise AssertionError("the TensorFlow blocker does not work")
    assert importlib.util.find_spec("tensorflow") is None

    import ml_collections
    import numpy as np
    from spiralnet_jax import data
    from spiralnet_jax.data import tfds_bbbc039

    tmp = pathlib.Path(sys.argv[1])
    builder = tfds_bbbc039.prepare(data.sample_dir(), tmp / "tfds")
    assert builder.name == "bbbc039", builder.name
    files = sorted(p.name for p in (tmp / "tfds" / "bbbc039" / "1.0.0").iterdir())
    assert any(".array_record-" in f for f in files), files
    for split, tfds_split in tfds_bbbc039.TFDS_SPLITS.items():
      source = builder.as_data_source(split=tfds_split)
      expected = data.load_split(split, data.sample_dir())
      assert len(source) == len(expected), (split, len(source))
      for i, want in enumerate(expected):
        record = source[i]
        assert record["image"].dtype == np.uint16 and record["image"].shape == (520, 696, 1)
        got = tfds_bbbc039.to_example(record)
        assert got.name == want.name, (got.name, want.name)
        assert got.image.dtype == np.uint16 and got.labels.dtype == np.int32
        assert np.array_equal(got.image, want.image), want.name
        assert np.array_equal(got.labels, want.labels), want.name

    # load_examples(source="tfds") reuses the prepared dataset.
    config = ml_collections.ConfigDict(dict(
        source="tfds", data_dir=str(data.sample_dir()), tfds_data_dir=str(tmp / "tfds"),
        max_images=1))
    (first,) = data.load_examples(config, "validation")
    want = data.load_split("validation", data.sample_dir(), max_images=1)[0]
    assert first.name == want.name and np.array_equal(first.labels, want.labels)

    # A prepared dataset built from other files is refused, not silently returned.
    other = tmp / "other"
    shutil.copytree(data.sample_dir(), other)
    names = data.read_split_names(other, "training")
    (other / "metadata" / "training.txt").write_text("".join(n + ".png\\n" for n in names[:3]))
    try:
      tfds_bbbc039.load_split("training", other, tmp / "tfds")
    except ValueError as e:
      assert "built from other files" in str(e), e
    else:
      raise AssertionError("stale TFDS data was not detected")

    assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
    print("TFDS_ROUND_TRIP_OK")
''')


def test_tfds_round_trip_without_tensorflow(tmp_path: pathlib.Path):
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True,
                        text=True, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "TFDS_ROUND_TRIP_OK" in proc.stdout
