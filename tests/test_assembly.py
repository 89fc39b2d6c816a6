"""Tests for spiralnet_jax.assembly: pieces -> semantic mask and instance labels."""

import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import continuation

SHAPE = (20, 24)  # Image (H, W).
REGION = (10, 12)  # Piece (h, w); assembly does not care about the pinned region size.


def _piece(origin, mask, prob):
  """(h, w) probabilities of a piece at `origin`: `prob` where the image mask is set."""
  mask = np.pad(mask, 30)  # Image pixel (y, x) is padded pixel (y + 30, x + 30).
  y, x = origin[0] + 30, origin[1] + 30
  return np.where(mask[y:y + REGION[0], x:x + REGION[1]], prob, 0.1).astype(np.float32)


def _pieces(*specs):
  """Pieces from (origin, image mask, probability, object id) tuples."""
  return continuation.Pieces(
      np.array([s[0] for s in specs], np.int32).reshape(-1, 2),
      np.stack([_piece(*s[:3]) for s in specs]) if specs else np.zeros((0,) + REGION),
      np.array([s[3] for s in specs], np.int32))


def _box(y0, y1, x0, x1):
  mask = np.zeros(SHAPE, bool)
  mask[y0:y1, x0:x1] = True
  return mask


def _assemble(pieces, min_size=1, merge_iou=0.5, merge_containment=0.8):
  return assembly.assemble(pieces, SHAPE, threshold=0.5, merge_iou=merge_iou,
                           merge_containment=merge_containment, min_size=min_size)


def test_duplicates_from_overlapping_regions_merge():
  nucleus = _box(5, 10, 6, 12)  # 30 px, fully inside both regions below.
  pieces = _pieces(((2, 3), nucleus, 0.9, 0), ((4, 5), nucleus, 0.7, 1))
  semantic, instances = _assemble(pieces)
  np.testing.assert_array_equal(semantic, nucleus)
  np.testing.assert_array_equal(instances, nucleus.astype(np.int32))


def test_touching_nuclei_stay_two():
  left, right = _box(5, 10, 4, 9), _box(5, 10, 9, 14)
  pieces = _pieces(((2, 1), left, 0.9, 0), ((2, 6), right, 0.9, 1))
  semantic, instances = _assemble(pieces)
  np.testing.assert_array_equal(semantic, left | right)
  np.testing.assert_array_equal(instances, left * 1 + right * 2)


def test_conflicting_pixel_goes_to_higher_probability():
  # 5×6 boxes overlapping in one column (5 px): IoU 5/55, containment 5/30, so no merge.
  a, b = _box(5, 10, 4, 10), _box(5, 10, 9, 15)
  for pa, pb, owner in ((0.9, 0.6, 1), (0.6, 0.9, 2)):
    pieces = _pieces(((2, 1), a, pa, 0), ((2, 6), b, pb, 1))
    _, instances = _assemble(pieces)
    expected = a * 1 + b * 2
    expected[5:10, 9] = owner
    np.testing.assert_array_equal(instances, expected)


def test_equal_probabilities_go_to_the_lower_object_id():
  a, b = _box(5, 10, 4, 10), _box(5, 10, 9, 15)
  _, instances = _assemble(_pieces(((2, 1), a, 0.8, 5), ((2, 6), b, 0.8, 3)))
  np.testing.assert_array_equal(instances[5:10, 9], 2)  # b (object 3) is instance 2.


def test_one_object_takes_the_max_over_its_pieces():
  # Object 0 claims the shared column with 0.6 in one piece and 0.95 in another; object 1 has 0.9.
  a, b = _box(5, 10, 4, 10), _box(5, 10, 9, 15)
  pieces = _pieces(((2, 1), a, 0.6, 0), ((2, 0), a & _box(0, 20, 9, 10), 0.95, 0),
                   ((2, 6), b, 0.9, 1))
  _, instances = _assemble(pieces)
  np.testing.assert_array_equal(instances[5:10, 9], 1)


def test_containment_merges_even_with_low_iou():
  big, small = _box(2, 10, 2, 10), _box(4, 8, 4, 9)  # 64 px and 20 px, small fully inside.
  pieces = _pieces(((0, 0), big, 0.9, 0), ((1, 1), small, 0.95, 1))
  _, merged = _assemble(pieces)
  np.testing.assert_array_equal(merged, big.astype(np.int32))
  # Without the containment rule (IoU 20/64 < 0.5) they stay two; the small one is surer.
  _, split = _assemble(pieces, merge_containment=1.01)
  assert split.max() == 2 and (split == 2).sum() == 20


def test_merging_is_transitive():
  a, b, c = _box(4, 9, 2, 8), _box(4, 9, 3, 9), _box(4, 9, 4, 10)  # a~b, b~c, a vs c IoU 0.5.
  pieces = _pieces(((0, 0), a, 0.9, 0), ((0, 0), b, 0.9, 1), ((0, 0), c, 0.9, 2))
  _, instances = _assemble(pieces, merge_iou=0.6)  # a, c: 20/40 = 0.5 < 0.6; a, b: 25/35.
  np.testing.assert_array_equal(instances, (a | b | c).astype(np.int32))


def test_min_size_drops_specks_but_not_from_semantic():
  nucleus, speck = _box(2, 8, 2, 8), _box(12, 14, 15, 17)  # 36 px and 4 px.
  pieces = _pieces(((0, 0), nucleus, 0.9, 0), ((8, 8), speck, 0.9, 1))
  semantic, instances = _assemble(pieces, min_size=5)
  np.testing.assert_array_equal(semantic, nucleus | speck)
  np.testing.assert_array_equal(instances, nucleus.astype(np.int32))


def test_dropped_instance_pixels_go_to_the_next_claim():
  # Object 1 (higher probability) wins a 2×2 corner of object 0 but is itself a speck
  # (4 px < 5): it is dropped and the corner returns to object 0.
  nucleus, speck = _box(2, 8, 2, 8), _box(6, 8, 6, 8)
  pieces = _pieces(((0, 0), nucleus, 0.6, 0), ((0, 0), speck, 0.9, 1))
  _, kept = _assemble(pieces, min_size=5, merge_containment=1.01)
  np.testing.assert_array_equal(kept, nucleus.astype(np.int32))


def test_ids_are_consecutive_in_raster_order():
  boxes = [_box(12, 16, 2, 6), _box(2, 6, 16, 20), _box(2, 6, 2, 6)]
  pieces = _pieces(*[((b.nonzero()[0][0] - 2, b.nonzero()[1][0] - 2), b, 0.9, 10 * k + 3)
                     for k, b in enumerate(boxes)])
  _, instances = _assemble(pieces)
  assert instances.dtype == np.int32
  np.testing.assert_array_equal(instances, boxes[2] * 1 + boxes[1] * 2 + boxes[0] * 3)


def test_pieces_are_clipped_to_the_image():
  mask = np.zeros(SHAPE, bool)
  mask[:3, :4] = True
  probs = np.full((1,) + REGION, 0.9, np.float32)  # Everything, also outside the image.
  pieces = continuation.Pieces(np.array([[-5, -6]], np.int32), probs, np.array([0], np.int32))
  semantic, instances = _assemble(pieces)
  expected = np.zeros(SHAPE, bool)
  expected[:5, :6] = True
  np.testing.assert_array_equal(semantic, expected)
  np.testing.assert_array_equal(instances, expected.astype(np.int32))


def test_three_channel_probs_use_channel0():
  nucleus = _box(5, 10, 6, 12)
  p = _pieces(((2, 3), nucleus, 0.9, 0))
  three = p._replace(probs=np.stack([p.probs, 1 - p.probs, np.full_like(p.probs, 0.99)], -1))
  np.testing.assert_array_equal(_assemble(three)[1], _assemble(p)[1])


def test_no_pieces_give_empty_outputs():
  semantic, instances = _assemble(_pieces())
  assert semantic.shape == SHAPE and not semantic.any()
  assert instances.shape == SHAPE and instances.dtype == np.int32 and not instances.any()


def test_config_wrapper_reads_the_assembly_config():
  from configs import default  # pylint: disable=g-import-not-at-top
  cfg = default.get_config().assembly
  nucleus, speck = _box(2, 8, 2, 8), _box(12, 14, 15, 17)
  pieces = _pieces(((0, 0), nucleus, 0.9, 0), ((8, 8), speck, 0.9, 1))
  np.testing.assert_array_equal(
      assembly.assemble_from_config(pieces, SHAPE, cfg)[1],
      assembly.assemble(pieces, SHAPE, cfg.threshold, cfg.merge_iou, cfg.merge_containment,
                        cfg.min_size)[1])
  assert cfg.min_size > 4  # The speck (4 px) is dropped under the defaults.
  assert assembly.assemble_from_config(pieces, SHAPE, cfg)[1].max() == 1


def test_claims_in_any_order_assemble_the_same():
  # Streamed claims arrive sorted by object; any other order must give the same image.
  pieces = _pieces(((0, 0), _box(2, 9, 2, 9), 0.9, 0), ((2, 3), _box(3, 9, 3, 10), 0.8, 1),
                   ((6, 8), _box(8, 14, 8, 13), 0.7, 2), ((8, 10), _box(15, 17, 18, 20), 0.9, 3))
  claimed = assembly.claims(pieces, SHAPE, 0.5)
  order = np.random.default_rng(0).permutation(claimed.pixel.size)
  shuffled = assembly.Claims(*(field[order] for field in claimed))
  for args in [(0.5, 0.8, 1), (0.5, 0.8, 5), (0.99, 0.99, 1)]:
    np.testing.assert_array_equal(assembly.assemble_claims(claimed, SHAPE, *args)[1],
                                  assembly.assemble_claims(shuffled, SHAPE, *args)[1])


def test_concatenate_claims_joins_and_empties_the_parts():
  a = assembly.Claims(np.array([3, 1], np.int64), np.array([0, 0], np.int32),
                      np.array([0.9, 0.6], np.float32))
  b = assembly.Claims(np.array([7], np.int64), np.array([2], np.int32),
                      np.array([0.7], np.float32))
  parts = [a, b]
  joined = assembly.concatenate_claims(parts, SHAPE)
  assert parts == []
  assert joined.pixel.dtype == np.int32  # 20 × 24 pixels index in int32.
  np.testing.assert_array_equal(joined.pixel, [3, 1, 7])
  np.testing.assert_array_equal(joined.object_id, [0, 0, 2])
  np.testing.assert_array_equal(joined.prob, np.array([0.9, 0.6, 0.7], np.float32))
  assert assembly.concatenate_claims([], SHAPE).pixel.size == 0


# --- split_containers: a candidate holding two nuclei is a merger, not a third copy -----------


def _merger_case():
  """Two touching 5×5 nuclei, each found on its own, and one candidate covering both."""
  left, right = _box(5, 10, 4, 9), _box(5, 10, 9, 14)
  return left, right, _pieces(((2, 1), left, 0.9, 0), ((2, 6), right, 0.9, 1),
                              ((2, 3), left | right, 0.8, 2))


def test_without_the_rule_a_merger_joins_both_nuclei():
  left, right, pieces = _merger_case()
  _, instances = _assemble(pieces)
  np.testing.assert_array_equal(instances, (left | right).astype(np.int32))


def test_split_containers_withdraws_the_merger():
  left, right, pieces = _merger_case()
  semantic, instances = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)
  np.testing.assert_array_equal(semantic, left | right)
  np.testing.assert_array_equal(instances, left * 1 + right * 2)


def test_split_containers_keeps_a_container_of_one_nucleus_seen_twice():
  # The big candidate contains two candidates that are the same nucleus (IoU 20/25 ≥ 0.5):
  # one nucleus, so everything merges as before.
  big, a, b = _box(4, 11, 4, 11), _box(5, 10, 5, 10), _box(5, 10, 6, 10)
  pieces = _pieces(((2, 1), big, 0.8, 0), ((2, 1), a, 0.9, 1), ((2, 1), b, 0.9, 2))
  _, instances = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)
  np.testing.assert_array_equal(instances, big.astype(np.int32))


def test_split_containers_keeps_a_container_holding_only_one_candidate():
  big, small = _box(4, 11, 4, 11), _box(5, 10, 5, 10)
  pieces = _pieces(((2, 1), big, 0.8, 0), ((2, 1), small, 0.9, 1))
  _, instances = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)
  np.testing.assert_array_equal(instances, big.astype(np.int32))


def test_merge_candidates_reports_the_withdrawn_container():
  _, _, pieces = _merger_case()
  claimed = assembly.claims(pieces, SHAPE, 0.5)
  merged, withdrawn = assembly.merge_candidates(claimed.pixel, claimed.object_id, 3, 0.5, 0.8,
                                                split_containers=True)
  np.testing.assert_array_equal(withdrawn, [False, False, True])
  assert len(set(merged.tolist())) == 3


def test_split_containment_sets_how_much_of_a_nucleus_must_lie_inside():
  # The merger covers all of the left nucleus but only 15 of the right one's 25 px (60%).
  left, right = _box(5, 10, 4, 9), _box(5, 10, 9, 14)
  merger = left | _box(5, 10, 9, 12)
  pieces = _pieces(((2, 1), left, 0.9, 0), ((2, 6), right, 0.9, 1), ((2, 3), merger, 0.95, 2))
  strict = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)[1]
  loose = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True,
                            split_containment=0.5)[1]
  # At 0.8 only the left nucleus counts as contained: the merger stays, joins it and, being the
  # more confident, wins the shared pixels (the right nucleus, 60% inside, is not "the same" by
  # merge_containment either, so it keeps the rest).
  np.testing.assert_array_equal(strict, merger * 1 + (right & ~merger) * 2)
  np.testing.assert_array_equal(loose, left * 1 + right * 2)


def test_split_containers_withdraws_nested_mergers_smallest_first():
  # Two touching nuclei, each found on its own; a merger of both, and a bigger merger around it.
  # Judged together, the small merger would chain the nuclei inside the big one (both lie fully
  # inside it) and save it; judged smallest first, the small one is withdrawn, then the big one.
  left, right = _box(5, 10, 4, 9), _box(5, 10, 9, 14)
  big = _box(4, 11, 3, 15)
  pieces = _pieces(((2, 1), left, 0.9, 0), ((2, 6), right, 0.9, 1),
                   ((2, 3), left | right, 0.8, 2), ((2, 3), big, 0.7, 3))
  claimed = assembly.claims(pieces, SHAPE, 0.5)
  _, withdrawn = assembly.merge_candidates(claimed.pixel, claimed.object_id, 4, 0.5, 0.8,
                                           split_containers=True)
  np.testing.assert_array_equal(withdrawn, [False, False, True, True])
  semantic, instances = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)
  np.testing.assert_array_equal(semantic, big)
  np.testing.assert_array_equal(instances, left * 1 + right * 2)


def test_nested_mergers_are_withdrawn_whatever_their_ids():
  # The order is by area, not by object id: the big merger first in id order changes nothing.
  left, right = _box(5, 10, 4, 9), _box(5, 10, 9, 14)
  big = _box(4, 11, 3, 15)
  pieces = _pieces(((2, 3), big, 0.7, 0), ((2, 3), left | right, 0.8, 1),
                   ((2, 1), left, 0.9, 2), ((2, 6), right, 0.9, 3))
  _, instances = assembly.assemble(pieces, SHAPE, 0.5, 0.5, 0.8, 1, split_containers=True)
  np.testing.assert_array_equal(instances, left * 1 + right * 2)
