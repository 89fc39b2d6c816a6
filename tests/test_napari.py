"""The napari plugin, headless (Qt offscreen): manifest, sample data, and the widget on a field.

A headless machine has no OpenGL, which napari's canvas needs, so the widget runs on a viewer
model (the layers as napari holds them); with a display (Xvfb) one test also draws a real
window. napari is an optional extra (`pip install -e ".[test,napari]"`, which the README's first
command installs); under CI its absence is a failure, elsewhere a skip.
"""

import os

from conftest import optional_module
import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
  os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Before Qt loads: no screen needed.


def _napari():
  return optional_module("napari", "napari")


@pytest.fixture
def viewer():
  """A napari viewer model: layers and sample data as napari holds them, without an OpenGL
  canvas (a headless machine has none; `test_in_a_real_window` uses one where it can)."""
  napari = _napari()
  from napari.plugins import _initialize_plugins  # pylint: disable=g-import-not-at-top
  _initialize_plugins()  # What napari.Viewer() does first: discover the npe2 manifests.
  return napari.components.ViewerModel()


def test_the_manifest_is_found_and_names_the_widget_and_the_sample_data():
  _napari()
  import npe2  # pylint: disable=g-import-not-at-top
  manifest = npe2.PluginManifest.from_distribution("spiralnet_jax")
  assert [w.display_name for w in manifest.contributions.widgets] == ["Segment nuclei"]
  assert [s.key for s in manifest.contributions.sample_data] == ["bbbc039"]
  for command in manifest.contributions.commands:
    module, name = command.python_name.split(":")
    assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_sample_data_are_the_bundled_test_fields_with_their_truth(viewer):
  viewer.open_sample("spiralnet_jax", "bbbc039")
  kinds = [(type(layer).__name__, layer.name) for layer in viewer.layers]
  assert [k for k, _ in kinds] == ["Image", "Labels", "Image", "Labels"]
  assert all(name.endswith(" truth") for k, name in kinds if k == "Labels")
  assert viewer.layers[0].data.shape == (520, 696)


def _field():
  from spiralnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.load_split("test", data_lib.sample_dir())[0].image


def _run_widget(viewer, layer):
  """The widget's button on `layer`; its LayerDataTuple added as napari adds it."""
  from spiralnet_jax import napari_plugin  # pylint: disable=g-import-not-at-top
  widget = napari_plugin.segment_widget()  # A real magicgui Qt widget (offscreen).
  shipped = napari_plugin._shipped()  # pylint: disable=protected-access
  assert widget.threshold.value == shipped.config.scorer.threshold  # The model's own default.
  data, meta, kind = widget(image=layer)
  assert kind == "labels"
  viewer._add_layer_from_data(data, meta, kind)  # pylint: disable=protected-access
  return viewer.layers[meta["name"]]


def test_the_widget_adds_the_shipped_models_labels_of_an_image_layer(viewer):
  from spiralnet_jax import napari_plugin  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  field = _field()
  labels = _run_widget(viewer, viewer.add_image(field, name="field"))
  assert type(labels).__name__ == "Labels" and labels.name == "field nuclei"
  np.testing.assert_array_equal(
      labels.data, predict.predict_instances(predict.Predictor.pretrained(), field))
  assert labels.data.max() >= 50  # A crowded field.
  with pytest.raises(ValueError, match="segments a 2-D"):
    napari_plugin.segment_layer_data(np.zeros((3, 20, 20)))


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="no display (e.g. Xvfb) for OpenGL")
def test_in_a_real_window():
  napari = _napari()
  window = napari.Viewer(show=False)
  try:
    labels = _run_widget(window, window.add_image(_field()[:200, :200], name="crop"))
    assert labels.data.shape == (200, 200) and labels.data.max() > 0
    assert window.screenshot(canvas_only=False).shape[-1] == 4  # The window was drawn.
  finally:
    window.close()
