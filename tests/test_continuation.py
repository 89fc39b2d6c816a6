"""Tests for spiralnet_jax.continuation: following objects out of their regions (Fig. 16).

The segmenter is replaced by an exact fake: the image holds each pixel's own flat index, so a
region (cropped from the reflect-padded image) tells the fake which image pixels it shows, and
the fake returns the true one-hot labels of the instance under the region's centre pixel. The
tests therefore check the geometry and bookkeeping exactly.
"""

import threading
import time

import numpy as np
import pytest

from spiralnet_jax import assembly
from spiralnet_jax import continuation
from spiralnet_jax import regions

GEOM = regions.RegionGeometry(height=52, width=58, stride=16, pad=28, score_window=5)


def _index_image(shape):
  return np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)


def _true_segmenter(labels, calls=None):
  """segment_fn returning the true central instance (under the centre pixel) of each region."""
  flat = labels.ravel()
  cy, cx = GEOM.centre

  def segment_fn(region_batch, init_mask):
    if calls is not None:
      calls.append((np.array(region_batch), np.array(init_mask)))
    ids = flat[np.asarray(region_batch).astype(np.int64)]
    centre = ids[:, cy, cx][:, None, None]
    central = (ids == centre) & (centre > 0)
    return np.stack([central, (ids > 0) & ~central, ids == 0], axis=-1).astype(np.float32)

  return segment_fn


def _first_pieces(image, labels, origins):
  origins = np.asarray(origins, np.int32)
  padded = regions.reflect_pad(image, GEOM.pad)
  crops = continuation.crop_regions(padded, GEOM.pad, origins, GEOM)
  probs = _true_segmenter(labels)(crops, None)
  return continuation.Pieces(origins, probs, np.arange(len(origins), dtype=np.int32))


def _bar():
  """A 12 × 150 px horizontal bar (id 1) in a 96 × 224 image; longer than a region is wide."""
  labels = np.zeros((96, 224), np.int32)
  labels[42:54, 37:187] = 1
  return _index_image(labels.shape), labels


def _run(image, labels, first, max_moves, batch_size=4, calls=None, connected_only=False):
  return continuation.continue_objects(_true_segmenter(labels, calls), image, first, GEOM,
                                       max_moves=max_moves, threshold=0.5,
                                       batch_size=batch_size, connected_only=connected_only)


def _instances(pieces, shape):
  return assembly.assemble(pieces, shape, threshold=0.5, merge_iou=0.5, merge_containment=0.8,
                           min_size=1)[1]


@pytest.mark.parametrize("connected_only", [False, True])
def test_bar_longer_than_region_is_followed_to_both_ends(connected_only):
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])  # Centre (47, 112): the bar's middle.
  pieces = _run(image, labels, first, max_moves=4, connected_only=connected_only)
  # Hand-computed: the bar's edge pixels are region rows 21..32 (mean 26.5 -> 27), so the first
  # moves shift one row down; after that the bar sits on rows 20..31 (mean 25.5 -> 26).
  np.testing.assert_array_equal(pieces.origins,
                                [(21, 83), (22, 54), (22, 111), (22, 25), (22, 139)])
  np.testing.assert_array_equal(pieces.object_ids, [0, 0, 0, 0, 0])
  assert pieces.probs.shape == (5, 52, 58) and pieces.probs.dtype == np.float32
  instances = _instances(pieces, labels.shape)
  np.testing.assert_array_equal(instances, labels)  # ONE instance, exactly the bar.


def test_without_moves_the_bar_is_cut():
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])
  pieces = _run(image, labels, first, max_moves=0)
  np.testing.assert_array_equal(pieces.origins, [(21, 83)])
  instances = _instances(pieces, labels.shape)
  expected = np.zeros_like(labels)
  expected[42:54, 83:141] = 1  # Only the part inside the one region.
  np.testing.assert_array_equal(instances, expected)


def test_budget_limits_moves_per_object():
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])
  pieces = _run(image, labels, first, max_moves=3)
  # Round 1 spends two moves, round 2 has two candidates but one move left: left edge first
  # (equal crossings; frontier order).
  np.testing.assert_array_equal(pieces.origins, [(21, 83), (22, 54), (22, 111), (22, 25)])


def test_segment_fn_sees_fixed_batches_and_shifted_seeds():
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])
  calls = []
  _run(image, labels, first, max_moves=4, batch_size=3, calls=calls)
  # 2 moves per round: a batch of 2 holds them (run_batched caps the batch at the power of two
  # that holds the regions), so nothing is padded.
  assert [c[0].shape for c in calls] == [(2, 52, 58)] * 2
  assert all(c[1].shape == (2, 52, 58, 3) for c in calls)
  # Round 1, second move: (21, 83) -> (22, 111), i.e. shifted by (1, 28).
  seed = calls[0][1][1]
  expected = np.zeros((52, 58, 3), np.float32)
  expected[:51, :30] = first.probs[0, 1:, 28:]
  np.testing.assert_array_equal(seed, expected)


def test_channel0_only_pieces_seed_channel0():
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])
  calls = []
  only0 = first._replace(probs=first.probs[..., 0])
  pieces = _run(image, labels, only0, max_moves=1, batch_size=2, calls=calls)
  seeds = calls[0][1]
  np.testing.assert_array_equal(seeds[..., 1:], 0)
  # Budget 1: only the left move, (21, 83) -> (22, 54), i.e. shifted by (1, -29).
  expected = np.zeros((52, 58), np.float32)
  expected[:51, 29:] = first.probs[0, 1:, :29, 0]
  np.testing.assert_array_equal(seeds[0, ..., 0], expected)
  np.testing.assert_array_equal(seeds[1], 0)  # The padding entry.
  assert len(pieces.origins) == 2  # Budget 1: the first (left) move only.


def test_cross_spreads_in_all_four_directions_as_one_object():
  labels = np.zeros((200, 200), np.int32)
  labels[94:106, 25:175] = 7  # 150 px across...
  labels[35:165, 94:106] = 7  # ...and 130 px down, crossing at the centre.
  image = _index_image(labels.shape)
  first = _first_pieces(image, labels, [(100 - 26, 100 - 29)])
  first = first._replace(object_ids=np.array([7], np.int32))
  pieces = _run(image, labels, first, max_moves=8)
  assert len(pieces.origins) <= 9
  assert len(np.unique(pieces.origins, axis=0)) == len(pieces.origins)
  np.testing.assert_array_equal(pieces.object_ids, 7)
  np.testing.assert_array_equal(_instances(pieces, labels.shape), labels > 0)


def test_objects_are_followed_independently_in_one_batch():
  labels = np.zeros((160, 224), np.int32)
  labels[42:54, 37:187] = 1
  labels[112:124, 37:187] = 2
  image = _index_image(labels.shape)
  first = _first_pieces(image, labels, [(21, 83), (91, 83)])
  calls = []
  pieces = _run(image, labels, first, max_moves=4, batch_size=8, calls=calls)
  assert len(calls) == 2  # Both objects' moves share each round's single batch.
  np.testing.assert_array_equal(np.bincount(pieces.object_ids), [5, 5])
  np.testing.assert_array_equal(_instances(pieces, labels.shape), labels)


def test_edge_moves_hand_computed():
  central = np.zeros((1, 52, 58), bool)
  central[0, 10:20, 57] = True  # Right edge, rows 10..19: mean 14.5 -> 15.
  central[0, 0, 3:6] = True  # Top edge, cols 3..5: mean 4.
  touches, origins, counts = continuation.edge_moves(central, np.array([[100, 200]]),
                                                     (1000, 1000), GEOM)
  np.testing.assert_array_equal(touches, [[True, False, False, True]])
  np.testing.assert_array_equal(counts, [[3, 0, 0, 10]])
  # New centre (0, 4) resp. (15, 57) in region coordinates; centre pixel is (26, 29).
  np.testing.assert_array_equal(origins[0, 0], (100 - 26, 200 + 4 - 29))
  np.testing.assert_array_equal(origins[0, 3], (100 + 15 - 26, 200 + 57 - 29))


def test_edge_pixels_outside_the_image_do_not_move():
  central = np.zeros((1, 52, 58), bool)
  central[0, 0, 20:40] = True  # Top edge at image row -28: reflect padding, not the object.
  central[0, 30:40, 0] = True  # Left edge at image col -28.
  central[0, 51, 20:40] = True  # Bottom edge at image row 23: inside.
  touches, _, _ = continuation.edge_moves(central, np.array([[-28, -28]]), (100, 100), GEOM)
  np.testing.assert_array_equal(touches, [[False, True, False, False]])


def test_shift_masks_moves_content_and_zero_fills():
  probs = np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1) + 1
  out = continuation.shift_masks(probs, np.array([(1, 2), (-1, 0)]))
  expected = np.zeros_like(probs)
  expected[0, :3, :3] = probs[0, 1:, 2:]
  expected[1, 1:, :] = probs[1, :3, :]
  np.testing.assert_array_equal(out, expected)


def test_no_pieces_and_no_touching_objects():
  image, labels = _bar()
  empty = continuation.Pieces(np.zeros((0, 2), np.int32), np.zeros((0, 52, 58, 3), np.float32),
                              np.zeros((0,), np.int32))
  out = _run(image, labels, empty, max_moves=4)
  assert out.origins.shape == (0, 2) and out.probs.shape == (0, 52, 58)
  small = np.zeros((96, 224), np.int32)
  small[40:50, 100:110] = 3
  first = _first_pieces(image, small, [(21, 83)])
  out = _run(image, small, first, max_moves=4)
  np.testing.assert_array_equal(out.origins, [(21, 83)])


@pytest.mark.parametrize("batch_size", [1, 5])
def test_result_does_not_depend_on_batch_size(batch_size):
  image, labels = _bar()
  first = _first_pieces(image, labels, [(21, 83)])
  a = _run(image, labels, first, max_moves=4, batch_size=batch_size)
  b = _run(image, labels, first, max_moves=4, batch_size=2)
  np.testing.assert_array_equal(a.origins, b.origins)
  np.testing.assert_array_equal(a.probs, b.probs)


def test_anchored_components_keep_only_blobs_touching_the_anchor_per_piece():
  central = np.zeros((2, 6, 7), bool)
  central[0, 1:3, 1:3] = True  # Touches the anchor.
  central[0, 4:6, 4:7] = True  # Separate blob: another nucleus.
  central[0, 3, 5] = True  # Only diagonally next to nothing kept: still separate.
  central[1, 1:3, 1:3] = True  # Same place in the next piece, but its anchor is elsewhere.
  anchor = np.zeros_like(central)
  anchor[0, 2, 2] = True
  anchor[1, 5, 0] = True
  kept = continuation.anchored_components(central, anchor)
  expected = np.zeros_like(central)
  expected[0, 1:3, 1:3] = True
  np.testing.assert_array_equal(kept, expected)


def test_keep_connected_zeroes_channel_0_outside_the_centre_component_only():
  geom = regions.RegionGeometry(height=9, width=11, stride=4, pad=4, score_window=3)
  probs = np.full((1, 9, 11, 3), 0.25, np.float32)
  probs[0, 3:6, 4:7, 0] = 0.9  # Covers the centre (4, 5).
  probs[0, 0:2, 0:2, 0] = 0.8  # A separate blob in the corner.
  out = continuation.keep_connected(probs, continuation.centre_anchor(1, geom), 0.5)
  expected = probs.copy()
  expected[0, :, :, 0] = np.where(probs[0, :, :, 0] > 0.5, probs[0, :, :, 0], 0.0)
  expected[0, 0:2, 0:2, 0] = 0.0
  np.testing.assert_array_equal(out, expected)


def test_batch_buckets_halve_down_to_the_smallest_that_fits():
  assert continuation.MIN_BUCKET == 2
  assert [continuation.batch_bucket(n, 256) for n in (1, 2, 3, 8, 9, 16, 17, 100, 129, 256)] == [
      2, 2, 4, 8, 16, 16, 32, 128, 256, 256]
  assert continuation.batch_bucket(3, 4) == 4  # Never below what holds the regions.
  assert continuation.batch_bucket(5, 12) == 6
  assert continuation.batch_bucket(1, 12) == 3  # An odd size does not halve.


def test_run_batched_pads_the_remainder_to_a_bucket_and_keeps_order():
  seen = []

  def fake(regions_batch, init_mask):
    seen.append(len(regions_batch))
    return np.stack([regions_batch, init_mask[..., 0], regions_batch * 2], -1)

  regions_in = np.arange(70 * 2 * 3, dtype=np.float32).reshape(70, 2, 3)
  out = continuation.run_batched(fake, regions_in, np.zeros((70, 2, 3, 3), np.float32), 32)
  assert seen == [32, 32, 8]
  np.testing.assert_array_equal(out[..., 0], regions_in)
  np.testing.assert_array_equal(out[..., 2], regions_in * 2)


def test_run_batched_caps_a_batch_far_bigger_than_the_regions():
  shapes = []

  def fake(regions, init_mask):
    shapes.append(regions.shape[0])
    return np.zeros(regions.shape + (3,), np.float32)

  out = continuation.run_batched(fake, np.zeros((20, 2, 3), np.float32),
                                 np.zeros((20, 2, 3, 3), np.float32), 10**9)
  assert out.shape == (20, 2, 3, 3)
  assert shapes == [32]  # The power of two that holds the 20 regions, not 10^9 / 2^9.
  shapes.clear()
  continuation.run_batched(fake, np.zeros((3, 2, 3), np.float32),
                           np.zeros((3, 2, 3, 3), np.float32), 10**9)
  assert shapes == [4]


@pytest.mark.parametrize("n, threads, sizes", [
    (7, 2, [4, 4]), (3, 2, [2, 2]), (1, 2, [2]), (16, 2, [8, 8]), (13, 2, [8, 8]),
    (7, 1, [8]), (20, 3, [8, 8, 4]), (9, 3, [4, 4, 2])])
def test_run_batched_splits_a_few_regions_so_that_every_thread_has_a_batch(n, threads, sizes):
  seen = []
  lock = threading.Lock()

  def fake(regions_batch, init_mask):
    with lock:
      seen.append(len(regions_batch))
    return np.stack([regions_batch, init_mask[..., 0], regions_batch * 2], -1)

  regions_in = np.arange(n * 2 * 3, dtype=np.float32).reshape(n, 2, 3)
  out = continuation.run_batched(fake, regions_in, np.zeros((n, 2, 3, 3), np.float32), 8,
                                 threads=threads)
  assert sorted(seen, reverse=True) == sizes
  np.testing.assert_array_equal(out[..., 2], regions_in * 2)


def test_all_batch_sizes_are_every_size_run_batched_can_use():
  assert continuation.all_batch_sizes(8, 1) == [8, 4, 2]
  assert continuation.all_batch_sizes(8, 2) == [8, 4, 2]
  assert continuation.all_batch_sizes(12, 1) == [12, 8, 6, 4, 3, 2]
  assert continuation.batch_sizes(29, 12) == [12, 12, 6]
  for batch, threads in [(8, 1), (8, 2), (12, 3), (32, 2)]:
    every = set(continuation.all_batch_sizes(batch, threads))
    seen = {s for n in range(1, 500) for s in continuation.batch_sizes(n, batch, threads)}
    assert seen == every, (batch, threads)


def test_run_batched_on_threads_runs_batches_at_once_and_keeps_their_order():
  # Two batches must be in flight together to pass the barrier; the first one to be called
  # waits longest, so batches finish out of order.
  barrier = threading.Barrier(2, timeout=30)
  delays = iter([0.2, 0.1, 0.0, 0.0])

  def fake(regions_batch, init_mask):
    del init_mask
    time.sleep(next(delays))
    barrier.wait()
    return np.stack([regions_batch, -regions_batch, regions_batch * 2], -1)

  regions_in = np.arange(30 * 2 * 3, dtype=np.float32).reshape(30, 2, 3)
  init = np.zeros((30, 2, 3, 3), np.float32)
  out = continuation.run_batched(fake, regions_in, init, 8, threads=2)
  serial = continuation.run_batched(
      lambda r, m: np.stack([r, -r, r * 2], -1), regions_in, init, 8, threads=1)
  np.testing.assert_array_equal(out, serial)
  np.testing.assert_array_equal(out[..., 0], regions_in)


def test_run_batched_on_one_thread_never_runs_two_batches_at_once():
  running, most = [0], [0]
  lock = threading.Lock()

  def fake(regions_batch, init_mask):
    del init_mask
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    time.sleep(0.01)
    with lock:
      running[0] -= 1
    return np.zeros(regions_batch.shape + (3,), np.float32)

  continuation.run_batched(fake, np.zeros((40, 2, 3), np.float32),
                           np.zeros((40, 2, 3, 3), np.float32), 8, threads=1)
  assert most[0] == 1
