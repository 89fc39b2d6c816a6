"""Tests for spiralnet_jax.predict: input handling, fixed-size batching, bounded compilations."""

import collections
import dataclasses
import functools
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from spiralnet_jax import assembly
from spiralnet_jax import checkpoints
from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import stages
from spiralnet_jax import train_state
from spiralnet_jax import unet_predict
from spiralnet_jax import valleys


def _config(features=4, batch=4):
  """Tiny models, the pinned geometry; `features` makes a segmenter unique to a test."""
  config = default.get_config()
  config.scorer.hidden = 4
  config.segmenter.branch_features = features
  config.segmenter.features = features
  config.segmenter.skip_features = features
  config.segmenter.num_skip_modules = 1
  config.predict.region_batch_size = batch
  return config


@functools.lru_cache(maxsize=None)
def _params(features):
  """Random (scorer, segmenter) params of `_config(features)`; cached: init is slow on CPU."""
  config = _config(features)
  return (stages.get("scorer").init_params(config, jax.random.key(0)),
          stages.get("segmenter").init_params(config, jax.random.key(1)))


def _predictor(config):
  return predict.Predictor.from_params(config, *_params(config.segmenter.features))


def _with_threshold(predictor, image, num_regions):
  """The predictor with a scorer threshold that lets exactly `num_regions` regions pass."""
  scores = np.sort(predict.score_image(predictor, image).ravel())
  config = predictor.config.copy_and_resolve_references()
  config.scorer.threshold = float(scores[-num_regions - 1]) if scores.size > num_regions else -1e9
  return dataclasses.replace(predictor, config=config)


# --- input handling ------------------------------------------------------------------------


@pytest.mark.parametrize("image, expected", [
    (np.array([[False, True]]), [[0.0, 1.0]]),
    (np.array([[10, 20, 30]], np.uint8), [[0.0, 0.5, 1.0]]),
    (np.array([[-(2**40), 0, 2**40]], np.int64), [[0.0, 0.5, 1.0]]),
    (np.array([[-1e308, 1e308]]), [[0.0, 1.0]]),  # hi - lo would overflow in float64.
    (np.array([[7.0]]), [[0.0]]),
    (np.full((3, 4), 4095, np.uint16), np.zeros((3, 4))),  # Constant -> zeros, not NaN.
])
def test_prepare_image_min_max_normalises(image, expected):
  out = predict.prepare_image(image)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, np.asarray(expected, np.float32))


@pytest.mark.parametrize("image, message", [
    (np.zeros((2, 3, 1)), "2-D"),
    (np.zeros((4,)), "2-D"),
    (np.zeros((0, 3)), "at least 1×1"),
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.array([[1.0, np.inf]]), "NaN or infinite"),
    (np.array([[1 + 2j]]), "dtype"),
    (np.array([["a"]]), "dtype"),
])
def test_prepare_image_rejects_bad_input(image, message):
  with pytest.raises(ValueError, match=message):
    predict.prepare_image(image)


# --- the two stages --------------------------------------------------------------------------


def test_segment_regions_matches_one_big_batch():
  predictor = _predictor(_config(batch=4))
  rng = np.random.default_rng(0)
  regions = rng.random((6, 52, 58), np.float32)  # 4 + 2 (padded to 4).
  init = rng.random((6, 52, 58, 3), np.float32)
  expected = predictor.segmenter.apply(predictor.segmenter_params, regions, init)
  np.testing.assert_allclose(predict.segment_regions(predictor, regions, init), expected,
                             rtol=1e-5, atol=1e-6)
  zeros_init = predictor.segmenter.apply(predictor.segmenter_params, regions, None)
  np.testing.assert_allclose(predict.segment_regions(predictor, regions), zeros_init,
                             rtol=1e-5, atol=1e-6)
  assert predict.segment_regions(predictor, regions[:0]).shape == (0, 52, 58, 3)


def test_bucketed_scores_equal_unbucketed():
  predictor = _predictor(_config())
  image = np.random.default_rng(1).integers(0, 4096, (70, 90)).astype(np.uint16)
  scores = predict.score_image(predictor, image)
  assert scores.shape == (5, 6)  # ((70 + 56 - 52) // 16 + 1, (90 + 56 - 58) // 16 + 1).
  expected = scorer_lib.score_image(predictor.scorer_params, predict.prepare_image(image),
                                    predictor.geom)
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


# --- whole images ----------------------------------------------------------------------------


def test_pieces_without_continuation_are_the_selected_regions():
  config = _config()
  config.continuation.enabled = False
  image = np.random.default_rng(2).random((64, 80))
  predictor = _with_threshold(_predictor(config), image, 5)
  pieces = predict.predict_pieces(predictor, image)
  scores = predict.score_image(predictor, image).ravel()
  selected = np.flatnonzero(scores > predictor.config.scorer.threshold)
  assert len(selected) == 5
  np.testing.assert_array_equal(pieces.object_ids, np.arange(5))
  geom = predictor.geom
  origins = np.stack([selected // 5, selected % 5], -1) * 16 - 28  # (80 + 56 - 58) // 16 + 1 = 5.
  np.testing.assert_array_equal(pieces.origins, origins)
  crops = continuation.crop_regions(np.pad(predict.prepare_image(image), 28, mode="reflect"),
                                    28, origins, geom)
  probs = np.asarray(predictor.segmenter.apply(predictor.segmenter_params, crops))
  np.testing.assert_allclose(pieces.probs, probs[..., 0] * continuation.anchored_components(
      probs[..., 0] > 0.5, continuation.centre_anchor(5, geom)), rtol=1e-5, atol=1e-6)
  # Without `connected_only` the pieces are the raw central probabilities.
  raw_config = predictor.config.copy_and_resolve_references()
  raw_config.continuation.connected_only = False
  raw = predict.predict_pieces(dataclasses.replace(predictor, config=raw_config), image)
  np.testing.assert_allclose(raw.probs, probs[..., 0], rtol=1e-5, atol=1e-6)


def test_predict_is_assembly_of_predicted_pieces():
  image = np.random.default_rng(3).random((64, 80))
  predictor = _with_threshold(_predictor(_config()), image, 4)
  pieces = predict.predict_pieces(predictor, image)
  assert len(pieces.origins) >= 4
  semantic, instances = assembly.assemble_from_config(pieces, image.shape,
                                                      predictor.config.assembly)
  np.testing.assert_array_equal(predict.predict_semantic(predictor, image), semantic)
  np.testing.assert_array_equal(predict.predict_instances(predictor, image), instances)


def test_score_stripes_are_equal_so_that_no_stripe_is_mostly_padding(monkeypatch):
  # 1040 rows at stride 16: 66 grid rows. Stripes of at most 64 rows: two of 33 (a 564-row
  # window, padded to 640), not 64 + 2 (two 1060-row windows padded to 1152).
  calls = []
  score_padded = scorer_lib.score_padded
  monkeypatch.setattr(scorer_lib, "score_padded",
                      lambda params, padded, geom: calls.append(padded.shape)
                      or score_padded(params, padded, geom))
  predictor = _predictor(_config())
  image = np.random.default_rng(0).random((1040, 1392), np.float32)
  scores = predict.score_grid(predictor, image)
  assert scores.shape == (66, 87)
  assert calls == [(640, 1536), (640, 1536)]
  np.testing.assert_allclose(scores, scorer_lib.score_image(predictor.scorer_params, image,
                                                            predictor.geom), rtol=1e-5, atol=1e-6)


def test_sizes_share_compilations_and_keep_their_shape(monkeypatch):
  predictor = _predictor(_config(features=3, batch=4))  # A segmenter no other test compiles.
  rng = np.random.default_rng(4)
  shapes = [(1, 1), (37, 53), (520, 696), (1040, 1392), (37, 53), (560, 700)]
  images = [(rng.random(shape) * 4095).astype(np.uint16) for shape in shapes]
  # Thresholds first: `_with_threshold` scores whole images, not in prediction's stripes.
  predictors = [_with_threshold(predictor, image, 3) for image in images]
  traces = collections.Counter()
  score_padded = scorer_lib.score_padded
  apply = segmenter_lib.Segmenter.apply

  def counted_score(params, padded, geom):
    traces["scorer"] += 1
    return score_padded(params, padded, geom)

  def counted_apply(self, params, regions, init_mask=None):
    traces["segmenter"] += 1
    return apply(self, params, regions, init_mask)

  monkeypatch.setattr(scorer_lib, "score_padded",
                      jax.jit(counted_score, static_argnames="geom"))
  monkeypatch.setattr(segmenter_lib.Segmenter, "apply", counted_apply)
  for shape, image, p in zip(shapes, images, predictors):
    semantic, instances = predict.predict(p, image)
    assert semantic.shape == shape and semantic.dtype == bool
    assert instances.shape == shape and instances.dtype == np.int32
    ids = np.unique(instances[instances > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
  # Padded stripe shapes 128×128 (1×1 has no region column: nothing to score), 640×768 (520×696
  # and 560×700: one stripe of 33 and 36 grid rows) and 640×1536 (1040×1392: two equal stripes
  # of 33 of its 66 rows): three scorer compilations; the segmenter's two batch sizes (4, and 2
  # for a remainder or a round of one or two moves), compiled ahead at the first batch.
  assert continuation.all_batch_sizes(4, predict.threads(predictor.config)) == [4, 2]
  assert dict(traces) == {"scorer": 3, "segmenter": 2}


# --- checkpoints -----------------------------------------------------------------------------


def test_from_workdir_restores_the_latest_checkpoints(tmp_path):
  config = _config()
  params = {"scorer": stages.get("scorer").init_params(config, jax.random.key(7)),
            "segmenter": stages.get("segmenter").init_params(config, jax.random.key(8))}
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  for stage, stage_params in params.items():
    tx = train_state.make_optimizer(1e-3)
    with ocp.CheckpointManager(checkpoints.checkpoint_dir(tmp_path, stage),
                               options=ocp.CheckpointManagerOptions(create=True)) as mngr:
      for step, scale in ((1, 0.0), (2, 1.0)):  # The latest (step 2) holds `params`.
        state = train_state.create_train_state(
            jax.tree.map(lambda x, s=scale: x * s, stage_params), tx)
        checkpoints.save(mngr, step, state)
      mngr.wait_until_finished()
  predictor = predict.Predictor.from_workdir(tmp_path)
  for got, want in ((predictor.scorer_params, params["scorer"]),
                    (predictor.segmenter_params, params["segmenter"])):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  assert predictor.config.predict.region_batch_size == 4
  assert predictor.segmenter == predict.Predictor.from_params(config, None, None).segmenter
  with pytest.raises(FileNotFoundError):
    predict.Predictor.from_workdir(tmp_path / "missing")


def test_prediction_stride_cuts_regions_on_a_denser_grid():
  config = _config()
  config.continuation.enabled = False
  config.scorer.threshold = -1e9  # Every region passes: the pieces are the whole grid.
  config.predict.stride = 8
  image = np.random.default_rng(3).random((40, 50))
  pieces = predict.predict_pieces(_predictor(config), image)
  # Rows (40 + 56 - 52) // 8 + 1 = 6, cols (50 + 56 - 58) // 8 + 1 = 7, origins 8k - 28.
  rows, cols = np.meshgrid(np.arange(6) * 8 - 28, np.arange(7) * 8 - 28, indexing="ij")
  np.testing.assert_array_equal(pieces.origins, np.stack([rows.ravel(), cols.ravel()], -1))
  # The scorer's own grid (and so evaluation's scorer error rates) keeps the training stride.
  assert predict.score_image(_predictor(config), image).shape == (3, 4)


def test_peak_seeds_centre_one_region_on_each_peak_of_the_fine_score_map(monkeypatch):
  config = _config()
  config.continuation.enabled = False
  config.predict.seeds = "peaks"
  config.scorer.threshold = 0.4
  strides = []

  def hand_scores(predictor, image, stride=None):
    strides.append(stride)
    scores = np.zeros((24, 30), np.float32)
    scores[2:9, 3:10] = 1.0  # Two blobs of passing cells, peaks at cells (5, 6) and (14, 22).
    scores[12:17, 20:25] = 0.8
    return scores

  monkeypatch.setattr(predict, "score_grid", hand_scores)
  pieces = predict.predict_pieces(_predictor(config), np.random.default_rng(3).random((80, 100)))
  assert strides == [4]
  np.testing.assert_array_equal(pieces.origins, [[5 * 4 - 28, 6 * 4 - 28], [14 * 4 - 28,
                                                                              22 * 4 - 28]])
  np.testing.assert_array_equal(pieces.object_ids, [0, 1])
  config.predict.seeds = "everywhere"
  with pytest.raises(ValueError, match="predict.seeds must be"):
    predict.predict_pieces(_predictor(config), np.random.default_rng(3).random((80, 100)))


def test_streamed_prediction_with_peaks_and_lobes_equals_whole_image_prediction():
  # The shipped model on a corner of a bundled BBBC039 field (random weights claim everything
  # as one blob): real candidates, some with lobes, streamed in many small chunks.
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  shipped = predict.Predictor.pretrained()
  config = shipped.config.copy_and_resolve_references()
  config.predict.seeds = "peaks"
  config.predict.lobes = True
  config.predict.lobe_max_solidity = 1.0  # Every two-lobed candidate: lobes on this small crop.
  config.assembly.split_containers = True
  config.assembly.split_valleys = False  # Streaming is about the claims; valleys come after.
  config.predict.region_batch_size = 1  # Slot 0 always: bit-identical paths (see below).
  config.predict.chunk_regions = 6
  config.predict.stripe_rows = 4
  predictor = dc.replace(shipped, config=config)
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image[:160, :200]
  semantic, instances = predict.predict(predictor, image)
  pieces = predict.predict_pieces(predictor, image)
  num_selected = len(predict.selected_origins(predictor, predict.prepare_image(
      image, predict.percentiles(config))))
  assert num_selected > 12  # Several chunks.
  assert (pieces.object_ids >= num_selected).any()  # Some candidates had lobes.
  want_semantic, want_instances = assembly.assemble_from_config(pieces, image.shape,
                                                                config.assembly)
  assert want_instances.max() > 5
  np.testing.assert_array_equal(semantic, want_semantic)
  np.testing.assert_array_equal(instances, want_instances)


def test_split_valleys_splits_the_assembled_instances_along_the_prepared_image():
  shipped = predict.Predictor.pretrained()
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image  # A whole field.
  outputs = {}
  for enabled in (False, True):
    config = shipped.config.copy_and_resolve_references()
    # A high ratio, so that this crop surely has instances to split.
    config.assembly.update(split_valleys=enabled, valley_ratio=0.95)
    outputs[enabled] = predict.predict(dataclasses.replace(shipped, config=config), image)
  prepared = predict.prepare_image(image, predict.percentiles(shipped.config))
  want = valleys.split_instances(outputs[False][1], prepared.astype(valleys.INTENSITY_DTYPE),
                                 4, 2.0, 0.95, 75.0, 15)
  assert want.max() > outputs[False][1].max()  # Something was split.
  np.testing.assert_array_equal(outputs[True][1], want)
  np.testing.assert_array_equal(outputs[True][0], outputs[False][0])  # Semantic untouched.


def test_lobe_objects_are_followed_over_region_edges_only_under_follow_lobes():
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  shipped = predict.Predictor.pretrained()
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image[:160, :200]
  pieces = {}
  for follow in (True, False):
    config = shipped.config.copy_and_resolve_references()
    config.predict.update(seeds="peaks", lobes=True, lobe_max_solidity=1.0, follow_lobes=follow)
    predictor = dc.replace(shipped, config=config)
    pieces[follow] = predict.predict_pieces(predictor, image)
  num_selected = len(predict.selected_origins(predictor, predict.prepare_image(
      image, predict.percentiles(predictor.config))))
  lobe_ids = {f: p.object_ids[p.object_ids >= num_selected] for f, p in pieces.items()}
  assert np.unique(lobe_ids[False]).size == lobe_ids[False].size > 0  # One piece per lobe.
  assert lobe_ids[True].size > np.unique(lobe_ids[True]).size  # Some lobes were followed.
  np.testing.assert_array_equal(np.unique(lobe_ids[True]), lobe_ids[False])
  for field in pieces[True]._fields:  # The seeds' objects do not change.
    np.testing.assert_array_equal(
        getattr(pieces[True], field)[pieces[True].object_ids < num_selected],
        getattr(pieces[False], field)[pieces[False].object_ids < num_selected])


def test_prediction_on_threads_equals_prediction_on_one():
  # Same batches, same compiled segmenter, only called from several threads at once: the
  # instances are bitwise those of one thread (shipped model, a bundled field's corner).
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  shipped = predict.Predictor.pretrained()
  image = data_lib.load_split("test", data_lib.sample_dir())[0].image[:160, :240]
  results = []
  for threads in (1, 3):
    config = shipped.config.copy_and_resolve_references()
    config.predict.threads = threads
    config.predict.region_batch_size = 4
    results.append(predict.predict(dc.replace(shipped, config=config), image))
  assert results[0][1].max() > 5
  for one, many in zip(*results):
    np.testing.assert_array_equal(one, many)


def test_threads_default_to_the_cores_the_process_may_use():
  config = _config()
  config.predict.threads = 3
  assert predict.threads(config) == 3
  config.predict.threads = 0
  assert predict.threads(config) == len(os.sched_getaffinity(0))


def test_threads_default_to_one_off_the_cpu(monkeypatch):
  config = _config()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert predict.threads(config) == 1
  config.predict.threads = 4  # An explicit number is taken as it is.
  assert predict.threads(config) == 4


# --- streamed prediction ----------------------------------------------------------------------


@pytest.mark.parametrize("shape, pad", [((5, 7), 3), ((3, 4), 9), ((1, 6), 4), ((4, 1), 5),
                                        ((1, 1), 2)])
def test_padded_rows_are_rows_of_the_reflect_padded_image(shape, pad):
  image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
  padded = regions_lib.reflect_pad(image, pad)
  for start, stop in ((0, padded.shape[0]), (1, 3), (pad, pad + 1), (padded.shape[0] - 2,
                                                                      padded.shape[0])):
    np.testing.assert_array_equal(regions_lib.padded_rows(image, pad, start, stop),
                                  padded[start:stop])


def test_chunks_cut_raster_ordered_regions_by_count_and_row_span():
  rows = np.array([0, 0, 0, 16, 16, 32, 80, 80, 96])
  # At most 2 regions, top rows less than 40 apart.
  assert regions_lib.chunks(rows, 2, 40) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
  # At most 4 regions: rows 0..32 fit one span of 40 but 4 regions cut first.
  assert regions_lib.chunks(rows, 4, 40) == [(0, 4), (4, 6), (6, 9)]
  assert regions_lib.chunks(rows, 100, 17) == [(0, 5), (5, 6), (6, 9)]
  assert regions_lib.chunks(rows[:0], 4, 40) == []


def test_window_rows_hold_every_row_a_chunk_can_reach():
  geom = regions_lib.RegionGeometry.from_config(default.get_config().regions)
  origins = np.array([[100, 0], [132, 40]])
  # Reach: 4 moves of max(26, 25) rows, plus pad 28 and 4 × 58 for reflections: 364.
  assert continuation.window_rows(origins, 10_000, geom, 4) == (0, 132 + 52 + 364)
  assert continuation.window_rows(origins + [1000, 0], 10_000, geom, 4) == (736, 1548)
  assert continuation.window_rows(origins + [1000, 0], 1200, geom, 4) == (736, 1200)
  assert continuation.window_rows(origins + [1000, 0], 10_000, geom, 0) == (1072, 1212)


def test_striped_scores_equal_whole_image_scores():
  config = _config()
  image = predict.prepare_image(np.random.default_rng(5).random((300, 170)))
  expected = scorer_lib.score_image(_params(4)[0], image, predict.Predictor.from_params(
      config, None, None).geom)
  for stripe_rows in (1, 4, 7, 100):
    config.predict.stripe_rows = stripe_rows
    scores = predict.score_grid(predict.Predictor.from_params(config, *_params(4)), image)
    assert scores.shape == (20, 11)  # (300 + 4) // 16 + 1, (170 - 2) // 16 + 1.
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_streamed_prediction_equals_whole_image_prediction():
  # Batches of 1: XLA:CPU rounds a region's probabilities differently (by 1 ulp) in different
  # slots of a batch, and continuation moves land in different slots when streamed, which can
  # flip a near-tie between two instances. In slot 0 always, the two paths are bit-identical.
  config = _config(batch=1)
  config.predict.chunk_regions = 48  # Many chunks, each with its own image window.
  config.predict.stripe_rows = 8
  image = (np.random.default_rng(6).random((1040, 1392)) * 4095).astype(np.uint16)
  predictor = _predictor(config)
  scores = np.sort(predict.score_grid(predictor, predict.prepare_image(image)).ravel())
  # A threshold midway between two scores (no score is near it) that selects ~8%.
  k = int(0.92 * scores.size)
  config.scorer.threshold = float(scores[k - 1] + scores[k]) / 2
  predictor = _predictor(config)

  calls = []
  semantic, instances = predict.predict(predictor, image,
                                        progress=lambda done, total: calls.append((done, total)))
  pieces = predict.predict_pieces(predictor, image)  # Every piece of the image at once.
  want_semantic, want_instances = assembly.assemble_from_config(pieces, image.shape,
                                                                predictor.config.assembly)
  selected = scores.size - k
  assert calls[0] == (0, selected) and calls[-1] == (selected, selected)
  assert len(calls) > 10  # Streamed in many chunks.
  assert len(pieces.origins) > selected  # Objects were followed out of their regions.
  assert want_instances.max() > 50
  np.testing.assert_array_equal(semantic, want_semantic)
  np.testing.assert_array_equal(instances, want_instances)


def test_constant_image_has_no_nuclei_without_running_the_networks():
  config = _config()
  config.scorer.threshold = -1e9  # Every region would pass.
  image = np.full((60, 70), 1234, np.uint16)
  # The networks would find objects: every one of the 5 × 5 regions is one.
  assert len(np.unique(predict.predict_pieces(_predictor(config), image).object_ids)) == 25
  semantic, instances = predict.predict(_predictor(config), image)
  assert not semantic.any() and not instances.any()
  assert semantic.shape == instances.shape == (60, 70)


# --- the U-Net ------------------------------------------------------------------------------


def _unet_config(tile=512):
  config = _config()
  config.unet.base_features = 4
  config.unet.depth = 2
  config.predict.unet_tile = tile
  return config


@functools.lru_cache(maxsize=None)
def _unet_params():
  # Seed 3: ~3/4 of the pixels of a noise image positive (other seeds give near-empty masks).
  return stages.get("unet").init_params(_unet_config(), jax.random.key(3))


def _unet_predictor(tile):
  return unet_predict.UNetPredictor.from_params(_unet_config(tile), _unet_params())


def test_unet_margin_covers_the_receptive_field():
  # The output around the centre depends on no input pixel farther than the margin.
  predictor = _unet_predictor(16)
  margin = unet_predict.unet_margin(2)
  assert margin == 40 and margin % 4 == 0
  size = 2 * margin + 8
  image = np.random.default_rng(7).random((size, size)).astype(np.float32)
  c = size // 2

  def centre_sum(x):
    out = predictor.net.apply({"params": predictor.params}, x[None, :, :, None])[0, :, :, 0]
    return out[c - 1:c + 2, c - 1:c + 2].sum()

  grad = np.asarray(jax.grad(centre_sum)(jax.numpy.asarray(image)))
  rows, cols = np.nonzero(grad)
  radius = max(np.abs(rows - c).max(), np.abs(cols - c).max()) - 1  # From the 3×3 window.
  assert 0 < radius <= margin


def test_tiled_unet_equals_whole_image_unet():
  image = np.random.default_rng(8).random((150, 233)).astype(np.float32)
  whole = _unet_predictor(10_000)
  tiled = _unet_predictor(24)  # Cores of 24 px with 40 px of context: 7 × 10 tiles.
  assert len(unet_predict.unet_tiles(image.shape, 24, unet_predict.unet_margin(2))) == 7 * 10
  assert len(unet_predict.unet_tiles(image.shape, 10_000, unet_predict.unet_margin(2))) == 1
  logits = np.asarray(whole.net.apply({"params": whole.params},
                                      image[None, :, :, None])[0, :, :, 0])
  semantic, instances = unet_predict.predict_unet(tiled, image)
  want_semantic, want_instances = unet_predict.predict_unet(whole, image)
  np.testing.assert_array_equal(want_semantic, logits > 0)  # sigmoid > 0.5.
  assert 0.1 < want_semantic.mean() < 0.9
  # Tiles see the same pixels through the same layers; only float rounding may differ, which
  # could flip a pixel whose logit is within rounding of 0 (none here, on this CPU). Logits of
  # exactly 0 (all ReLUs dead) are exact either way.
  confident = (np.abs(logits) > 1e-5) | (logits == 0)
  assert confident.mean() > 0.999
  np.testing.assert_array_equal(semantic[confident], want_semantic[confident])
  # Instances are the connected components of the semantic mask: equal where it is.
  assert np.array_equal(semantic, want_semantic), "a pixel within rounding of 0 flipped"
  np.testing.assert_array_equal(instances, want_instances)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float64, bool])
def test_big_images_are_normalised_in_blocks_exactly_as_whole(dtype, monkeypatch):
  rng = np.random.default_rng(9)
  image = (rng.random((37, 11)) * 5000 - (0 if dtype in (np.uint16, bool) else 2000))
  image = (image > 2500) if dtype is bool else image.astype(dtype)
  monkeypatch.setattr(data_lib.intensity, "BLOCK_PIXELS", 40)  # Blocks of 3 rows.
  out = predict.prepare_image(image)
  np.testing.assert_array_equal(out, data_lib.normalize(image))
  assert out.min() == 0 and out.max() == 1
  image = image.astype(np.float64)
  image[31, 4] = np.nan  # In a late block.
  with pytest.raises(ValueError, match="NaN"):
    predict.prepare_image(image)


def test_evaluation_models_normalise_once_as_predict_does():
  # evaluate_split hands models the normalised image; the SpiralNet model must not stretch it
  # a second time. A percentile stretch is not idempotent: np.percentile interpolates between
  # the clipped pixels and their next neighbour, so the clipped image's percentiles move a little.
  from spiralnet_jax import models  # pylint: disable=g-import-not-at-top
  config = _config()
  config.data.normalize_percentiles = (1.0, 99.8)
  predictor = _predictor(config)
  raw = np.random.default_rng(7).gamma(2.0, 300.0, (70, 90)).astype(np.uint16)
  normalised = data_lib.normalize(raw, config.data.normalize_percentiles)
  twice = predict.prepare_image(normalised, (1.0, 99.8))
  assert np.abs(twice - normalised).max() > 1e-4  # The bug this guards against is visible.
  model = models.spiralnet(predictor)
  np.testing.assert_array_equal(model.score(normalised), predict.score_image(predictor, raw))
  semantic, instances = model.predict(normalised)
  expected = predict.predict(predictor, raw)
  np.testing.assert_array_equal(semantic, expected[0])
  np.testing.assert_array_equal(instances, expected[1])


_BACKEND_COMPILES = []  # Every XLA backend compilation of this test process (jax.monitoring).
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _BACKEND_COMPILES.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)


@pytest.mark.parametrize("seeds,lobes,exit_rings,features",
                         [("grid", False, (), 6), ("peaks", True, (), 5),
                          ("peaks", True, (2, 3), 8)])
def test_a_second_field_of_the_same_size_compiles_nothing(seeds, lobes, exit_rings, features):
  """Fixed batch shapes, shape buckets and continuation rounds: fields of one size share every
  compiled function, whatever their nuclei (here different numbers of regions and moves)."""
  from spiralnet_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  config = _config(features=features)  # A segmenter of its own: nothing compiled yet.
  config.scorer.threshold = -1e9  # Random weights: let every region pass.
  config.predict.seeds, config.predict.lobes = seeds, lobes
  config.predict.exit_rings = exit_rings
  config.assembly.split_containers = lobes
  predictor = _predictor(config)
  first, second = (synthetic.generate(seed, shape=(120, 150))[0] for seed in (1, 2))
  start = len(_BACKEND_COMPILES)
  predict.predict(predictor, first)
  before = len(_BACKEND_COMPILES)
  assert before > start  # The listener sees compilations at all.
  _, instances = predict.predict(predictor, second)
  assert instances.shape == (120, 150)
  assert len(_BACKEND_COMPILES) == before


def test_the_first_batch_compiles_the_spiral_for_every_batch_size_prediction_uses():
  # One region needs the smallest batch only; later fields and continuation rounds bring any
  # number of regions, and every batch size run_batched may cut them into is already compiled.
  predictor = _predictor(_config(features=7, batch=8))  # A segmenter no other test compiles.
  shape = predictor.segmenter.region_shape
  start = len(_BACKEND_COMPILES)
  predict.segment_regions(predictor, np.zeros((1,) + shape, np.float32))
  before = len(_BACKEND_COMPILES)
  assert before - start >= 3  # Batches of 8, 4 and 2.
  for n in range(1, 3 * 8 * predict.threads(predictor.config)):
    predict.segment_regions(predictor, np.zeros((n,) + shape, np.float32))
  assert len(_BACKEND_COMPILES) == before
