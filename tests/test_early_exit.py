"""The exact early exit: which stages the spiral runs in, when an object is enclosed, and that
stopping enclosed regions changes no object and no instance."""

import dataclasses

import numpy as np
import pytest

from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import defaults
from spiralnet_jax import early_exit
from spiralnet_jax import predict
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import spiral
from spiralnet_jax import spiral_compile

_THRESHOLD = 0.5


@pytest.fixture(scope="module")
def thesis() -> segmenter_lib.Segmenter:
  return segmenter_lib.Segmenter.from_config(defaults.get_config())


def test_the_thesis_spiral_runs_in_stages_that_end_with_the_exit_rings(thesis):
  assert len(thesis.offsets) == 56
  assert early_exit.stages(thesis, (2, 3)) == ((0, 25, 2), (25, 49, 3), (49, 56, -1))
  assert early_exit.stages(thesis, (3,)) == ((0, 49, 3), (49, 56, -1))
  assert early_exit.stages(thesis, (1,)) == ((0, 9, 1), (9, 56, -1))
  assert early_exit.stages(thesis, ()) == ((0, 56, -1),)


@pytest.mark.parametrize("rings", [(0,), (4,), (2, 5)])
def test_the_first_and_the_last_ring_cannot_be_exit_rings(thesis, rings):
  with pytest.raises(ValueError, match="exit rings must lie in 1..3"):
    early_exit.stages(thesis, rings)


def _disk(radius: float, centre=(26, 29), shape=(52, 58)) -> np.ndarray:
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _enclosed(central: np.ndarray, ring: int, segmenter) -> bool:
  geom = regions_lib.RegionGeometry.from_config(defaults.get_config().regions)
  rings = spiral.pixel_rings(np.asarray(segmenter.offsets), segmenter.region_shape,
                             segmenter.update_size)
  return bool(early_exit.enclosed(central[None].astype(np.float32),
                                  continuation.centre_anchor(1, geom), rings, ring,
                                  _THRESHOLD)[0])


def test_an_object_is_enclosed_by_the_first_ring_it_does_not_reach(thesis):
  # Ring 0 is the block at rows 22..29, cols 29..36; ring 1 spans rows 14..37, cols 21..44.
  rings = spiral.pixel_rings(np.asarray(thesis.offsets), thesis.region_shape, 8)
  assert rings[22, 29] == rings[29, 36] == 0 and rings[21, 29] == rings[14, 21] == 1
  assert rings[13, 29] == 2 and rings[5, 29] == 3 and rings[26, 4] == 4
  disk = _disk(5)  # Rows 21..31: in rings 0 and 1.
  assert not _enclosed(disk, 1, thesis)
  assert _enclosed(disk, 2, thesis) and _enclosed(disk, 3, thesis)
  bar = disk.copy()
  bar[26:41, 29] = True  # Down to row 40, in ring 2 (rows 38..45).
  assert not _enclosed(bar, 2, thesis) and _enclosed(bar, 3, thesis)


def test_pixels_of_other_objects_and_unwritten_rings_do_not_count(thesis):
  central = _disk(5)
  central[40:44, 10:14] = True  # Another object, in ring 2 and 3, not connected to the anchor.
  assert _enclosed(central, 2, thesis)
  central[0:3, :] = True  # Ring 4 is not written at ring 3: neither counts.
  assert _enclosed(central, 3, thesis)


def test_an_object_on_the_region_edge_is_never_enclosed(thesis):
  central = _disk(5)
  central[:26, 29] = True  # Up to row 0: the top edge, in ring 3.
  assert not _enclosed(central, 3, thesis)
  small = dataclasses.replace(thesis, region_shape=(20, 20),
                              offsets=tuple(map(tuple, spiral.spiral_offsets((20, 20), 8))))
  geom_rings = spiral.pixel_rings(np.asarray(small.offsets), (20, 20), 8)
  assert geom_rings.max() == 1  # Ring 1 is the region's border: the object reaches the edge.
  edge = np.zeros((1, 20, 20), np.float32)
  edge[0, 8:12, 0:12] = 1
  anchor = np.zeros((1, 20, 20), bool)
  anchor[0, 9:11, 9:11] = True
  assert not early_exit.enclosed(edge, anchor, geom_rings, 0, _THRESHOLD)[0]


@pytest.fixture(scope="module")
def shipped() -> predict.Predictor:
  return predict.Predictor.pretrained()


@pytest.fixture(scope="module")
def field_regions(shipped):
  image = predict.prepare_image(data_lib.load_split("test", data_lib.sample_dir())[0].image,
                                predict.percentiles(shipped.config))
  geom = predict._prediction_geom(shipped)  # pylint: disable=protected-access
  origins = predict.selected_origins(shipped, image)[:48]
  return continuation.crop_regions(regions_lib.reflect_pad(image, geom.pad), geom.pad, origins,
                                   geom)


def test_stopped_spirals_give_the_whole_spirals_objects(shipped, field_regions):
  geom = predict._prediction_geom(shipped)  # pylint: disable=protected-access
  anchor = continuation.centre_anchor(len(field_regions), geom)
  whole = continuation.keep_connected(predict.segment_regions(shipped, field_regions), anchor,
                                      _THRESHOLD)[..., 0]
  rings = spiral.pixel_rings(np.asarray(shipped.segmenter.offsets),
                             shipped.segmenter.region_shape, 8)
  stops = early_exit.enclosed(whole, anchor, rings, 3, _THRESHOLD)
  assert 0 < stops.sum() < len(stops)  # Some regions stop early, some run to the end.
  fns = spiral_compile.exit_fns(shipped.segmenter, shipped.segmenter_params, "auto", 8, 2)
  stopped = early_exit.run(fns, shipped.segmenter, field_regions, geom, (2, 3), _THRESHOLD, 8,
                           threads=2)
  kept = continuation.keep_connected(stopped, anchor, _THRESHOLD)[..., 0]
  # Same objects; their probabilities up to the last ulp of a convolution's summation order.
  np.testing.assert_array_equal(kept > _THRESHOLD, whole > _THRESHOLD)
  np.testing.assert_allclose(kept, whole, rtol=0, atol=1e-6)
  # A stopped region's channel 0 is zero where its spiral did not write.
  assert not np.any(stopped[stops][..., 0] * (rings == 4))


def test_predictions_with_and_without_the_exit_are_the_same_instances(shipped):
  assert tuple(shipped.config.predict.exit_rings) == ()  # The default: every spiral to its end.
  config = shipped.config.copy_and_resolve_references()
  config.predict.exit_rings = (2, 3)
  stopping = dataclasses.replace(shipped, config=config)
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image[:256, :320]
  instances = predict.predict_instances(shipped, image)
  assert instances.max() > 10
  np.testing.assert_array_equal(predict.predict_instances(stopping, image), instances)
