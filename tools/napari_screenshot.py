"""The README's napari screenshot: a real napari window with the plugin run on a bundled field.

    Xvfb :99 -screen 0 1400x900x24 &   # a virtual display (apt install xvfb) on a headless box
    DISPLAY=:99 python tools/napari_screenshot.py docs/images/napari_plugin.png

Opens the BBBC039 sample data through the plugin, docks the "Segment nuclei" widget, runs it on
the first field (as its button does) and saves a screenshot of the whole window.
"""

import sys

import imageio.v3 as iio
import napari

from spiralnet_jax import napari_plugin


def main(out: str) -> None:
  viewer = napari.Viewer(title="napari + SpiralNet")
  viewer.window.resize(1400, 860)
  viewer.open_sample("spiralnet_jax", "bbbc039")
  image = viewer.layers[0]
  for layer in list(viewer.layers)[1:]:
    viewer.layers.remove(layer)
  widget = napari_plugin.segment_widget()
  viewer.window.add_dock_widget(widget, name="Segment nuclei (SpiralNet)", area="right")
  widget.image.value = image
  widget()  # The "Segment nuclei" button: adds "<field> nuclei" as a Labels layer.
  viewer.layers[-1].opacity = 0.45
  viewer.reset_view()
  napari.qt.get_qapp().processEvents()  # Let the dock widget lay itself out before the shot.
  iio.imwrite(out, viewer.screenshot(canvas_only=False, flash=False))
  viewer.close()
  print(f"wrote {out}")


if __name__ == "__main__":
  main(sys.argv[1])
