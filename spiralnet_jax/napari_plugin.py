"""The napari plugin: a widget that segments an Image layer into a Labels layer, and sample data.

    pip install -e ".[napari]"   # then: napari  → Plugins → SpiralNet: Segment nuclei

The manifest is `spiralnet_jax/napari.yaml` (npe2), registered by the `napari.manifest` entry
point. The widget runs the shipped model (`Predictor.pretrained()`, loaded once) on the chosen
2-D Image layer, with the nuclei's diameter (0: the image is taken as is; else it is rescaled
to the training data's 28.25 px, `spiralnet_jax.scale`) and the object score threshold (the
scorer's: lower finds more, fainter nuclei), and adds `<image> nuclei` as a Labels layer.
Sample data: the BBBC039 fields bundled with the package, each with its true labels.
Only napari imports this module (napari and magicgui are optional dependencies).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from magicgui import magic_factory

from spiralnet_jax import predict


@functools.lru_cache(maxsize=1)
def _shipped() -> predict.Predictor:
  return predict.Predictor.pretrained()


def segment_layer_data(image: np.ndarray, diameter: float = 0.0,
                       threshold: float | None = None) -> np.ndarray:
  """int32 labels of a 2-D image with the shipped model (diameter 0: no rescaling)."""
  image = np.asarray(image)
  if image.ndim != 2:
    raise ValueError(f"SpiralNet segments a 2-D (H, W) image layer; this one has shape "
                     f"{image.shape} (split its channels or pick one plane first)")
  predictor = _shipped()
  if threshold is not None and threshold != predictor.config.scorer.threshold:
    config = predictor.config.copy_and_resolve_references()
    config.scorer.threshold = float(threshold)
    predictor = predict.Predictor.from_params(config, predictor.scorer_params,
                                              predictor.segmenter_params)
  return predict.predict_instances(predictor, image, diameter=diameter or None)


def _model_defaults(widget: Any) -> None:
  """The threshold field starts at the shipped model's own (config.scorer.threshold)."""
  widget.threshold.value = float(_shipped().config.scorer.threshold)


@magic_factory(
    widget_init=_model_defaults,
    call_button="Segment nuclei",
    diameter={"label": "nucleus diameter (px)", "min": 0.0, "max": 1000.0, "step": 1.0,
              "tooltip": "0: as is; else rescaled to the model's 28.25 px"},
    threshold={"label": "object score threshold", "min": -5.0, "max": 5.0, "step": 0.05,
               "tooltip": "the scorer's threshold: lower finds more, fainter nuclei"})
def segment_widget(image: "napari.layers.Image", diameter: float = 0.0,
                   threshold: float = 0.0) -> "napari.types.LayerDataTuple":
  """Segments `image` with the shipped SpiralNet; adds `<image> nuclei` as a Labels layer."""
  labels = segment_layer_data(image.data, diameter, threshold)
  return labels, {"name": f"{image.name} nuclei"}, "labels"


def sample_fields() -> list[tuple[Any, dict, str]]:
  """The bundled BBBC039 test fields (images) and their true labels, as napari layer data."""
  from spiralnet_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  layers = []
  for example in data_lib.load_split("test", data_lib.sample_dir()):
    name = example.name.split("_w1")[0]
    layers.append((example.image, {"name": name}, "image"))
    layers.append((example.labels, {"name": f"{name} truth", "visible": False}, "labels"))
  return layers
