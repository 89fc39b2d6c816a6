"""Metrics on hand-computed cases, and instance matching against a brute-force reference."""

import itertools

import numpy as np
import pytest

from spiralnet_jax import metrics

SHAPE = (24, 24)


def _empty():
  return np.zeros(SHAPE, np.int32)


def _box(y, x, h, w, value=1, labels=None):
  labels = _empty() if labels is None else labels
  labels[y:y + h, x:x + w] = value
  return labels


def test_thresholds_are_the_standard_ten():
  assert metrics.IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
  assert metrics.SCORER_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# --- pixel ---------------------------------------------------------------------------------------


def test_pixel_counts_on_shifted_squares():
  true = _box(5, 5, 10, 10)
  pred = _box(5, 7, 10, 10)
  assert metrics.pixel_counts(true, pred) == (80, 20, 20)
  s = metrics.pixel_scores([(true, pred)])
  assert (s["precision"], s["recall"], s["f1"]) == (0.8, 0.8, 0.8)


def test_pixel_counts_accept_label_images_with_any_ids():
  true = _box(0, 0, 2, 2, value=7)
  pred = _box(1, 1, 2, 2, value=300)
  assert metrics.pixel_counts(true, pred) == (1, 3, 3)
  assert metrics.pixel_counts(true > 0, pred > 0) == (1, 3, 3)


def test_pixel_empty_vs_empty_is_perfect():
  s = metrics.pixel_scores([(_empty(), _empty())])
  assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 0)
  for key in ("precision", "recall", "f1", "mean_precision", "mean_recall", "mean_f1"):
    assert s[key] == 1.0, key


def test_pixel_empty_truth_with_prediction_scores_zero():
  s = metrics.pixel_scores([(_empty(), _box(0, 0, 3, 3))])
  assert (s["tp"], s["fp"], s["fn"]) == (0, 9, 0)
  assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)


def test_pixel_missed_object_scores_zero():
  s = metrics.pixel_scores([(_box(0, 0, 3, 3), _empty())])
  assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 9)
  assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)


def test_pixel_pooled_differs_from_mean_over_images():
  # Image A: perfect, 100 px. Image B: tp = fp = fn = 2 (P = R = F1 = 0.5).
  a = _box(0, 0, 10, 10)
  b_true = _box(0, 0, 1, 4)
  b_pred = _box(0, 2, 1, 4)
  s = metrics.pixel_scores([(a, a), (b_true, b_pred)])
  assert (s["tp"], s["fp"], s["fn"]) == (102, 2, 2)
  assert s["f1"] == pytest.approx(204 / 208)
  assert s["precision"] == pytest.approx(102 / 104)
  assert s["recall"] == pytest.approx(102 / 104)
  assert s["mean_f1"] == pytest.approx(0.75)
  assert s["mean_precision"] == pytest.approx(0.75)
  np.testing.assert_allclose(s["per_image"]["f1"], [1.0, 0.5])


def test_pixel_empty_field_counts_as_perfect_in_the_mean():
  a_true = _box(0, 0, 1, 4)
  a_pred = _box(0, 2, 1, 4)
  s = metrics.pixel_scores([(a_true, a_pred), (_empty(), _empty())])
  assert s["mean_f1"] == pytest.approx(0.75)
  assert s["f1"] == pytest.approx(0.5)  # The empty field adds no pixels to the pool.


def test_pixel_f1_equals_dice():
  rng = np.random.default_rng(0)
  true = rng.random(SHAPE) > 0.5
  pred = rng.random(SHAPE) > 0.4
  dice = 2 * np.sum(true & pred) / (true.sum() + pred.sum())
  assert metrics.pixel_scores([(true, pred)])["f1"] == pytest.approx(dice)


def test_channel_scores_per_channel():
  # Two pixels; channels: central, other, background.
  labels = np.array([[[1, 0, 0], [0, 0, 1]]], np.float32)  # (1, 2, 3)
  probs = np.array([[[0.9, 0.6, 0.1], [0.7, 0.2, 0.5]]], np.float32)
  s = metrics.channel_scores(probs, labels, threshold=0.5)
  np.testing.assert_array_equal(s["tp"], [1, 0, 0])
  np.testing.assert_array_equal(s["fp"], [1, 1, 0])  # 0.5 is not > 0.5.
  np.testing.assert_array_equal(s["fn"], [0, 0, 1])
  np.testing.assert_allclose(s["precision"], [0.5, 0.0, 0.0])
  np.testing.assert_allclose(s["recall"], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(s["f1"], [2 / 3, 0.0, 0.0])


def test_channel_scores_pool_over_all_leading_axes():
  rng = np.random.default_rng(1)
  labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 5, 6))]  # (2, 5, 6, 3)
  probs = rng.random((2, 5, 6, 3)).astype(np.float32)
  s = metrics.channel_scores(probs, labels)
  for c in range(3):
    tp, fp, fn = metrics.pixel_counts(labels[..., c] > 0.5, probs[..., c] > 0.5)
    assert (s["tp"][c], s["fp"][c], s["fn"][c]) == (tp, fp, fn)


# --- instance: hand-computed -----------------------------------------------------------------------


def test_iou_matrix_shifted_squares_and_non_consecutive_ids():
  true = _box(5, 5, 10, 10, value=40)
  pred = _box(5, 7, 10, 10, value=9)
  _box(0, 20, 2, 2, value=3, labels=pred)  # A second prediction, disjoint from the truth.
  iou = metrics.iou_matrix(true, pred)
  assert iou.shape == (1, 2)
  np.testing.assert_allclose(iou, [[0.0, 80 / 120]])  # Columns follow sorted ids 3, 9.


def test_match_shifted_squares():
  true = _box(5, 5, 10, 10, value=2)
  pred = _box(5, 7, 10, 10, value=5)
  m = metrics.match(true, pred, thresholds=(0.5, 0.7))
  np.testing.assert_array_equal(m["tp"], [1, 0])
  np.testing.assert_array_equal(m["fp"], [0, 1])
  np.testing.assert_array_equal(m["fn"], [0, 1])
  np.testing.assert_allclose(m["f1"], [1.0, 0.0])
  np.testing.assert_allclose(m["accuracy"], [1.0, 0.0])
  np.testing.assert_allclose(m["panoptic_quality"], [2 / 3, 0.0])
  np.testing.assert_allclose(m["mean_true_score"], [2 / 3, 0.0])
  # Over the ten standard thresholds IoU = 0.667 matches at 0.50, 0.55, 0.60, 0.65 only.
  s = metrics.instance_scores([(true, pred)])
  np.testing.assert_array_equal(s["tp"], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  assert s["map"] == pytest.approx(0.4)
  assert (s["merges"], s["splits"]) == (0, 0)


def test_match_empty_vs_empty_follows_stardist():
  m = metrics.match(_empty(), _empty(), thresholds=(0.5,))
  assert (m["tp"][0], m["fp"][0], m["fn"][0]) == (0, 0, 0)
  # StarDist's _safe_divide: 0/0 -> 0.
  assert (m["precision"][0], m["recall"][0], m["f1"][0], m["accuracy"][0]) == (0, 0, 0, 0)
  assert metrics.merges_splits(_empty(), _empty()) == (0, 0)


def test_match_empty_truth_one_prediction():
  m = metrics.match(_empty(), _box(1, 1, 3, 3), thresholds=(0.5,))
  assert (m["tp"][0], m["fp"][0], m["fn"][0]) == (0, 1, 0)
  assert (m["n_true"], m["n_pred"]) == (0, 1)
  assert (m["precision"][0], m["recall"][0], m["f1"][0]) == (0, 0, 0)


def test_match_one_truth_empty_prediction():
  m = metrics.match(_box(1, 1, 3, 3), _empty(), thresholds=(0.5,))
  assert (m["tp"][0], m["fp"][0], m["fn"][0]) == (0, 0, 1)
  assert (m["n_true"], m["n_pred"]) == (1, 0)


def _split_case():
  true = _box(2, 2, 10, 10, value=7)
  pred = _box(2, 2, 10, 5, value=3)
  _box(2, 7, 10, 5, value=9, labels=pred)
  return true, pred


def test_split_one_true_predicted_as_two_halves():
  true, pred = _split_case()
  np.testing.assert_allclose(metrics.iou_matrix(true, pred), [[0.5, 0.5]])
  assert metrics.merges_splits(true, pred) == (0, 1)
  m = metrics.match(true, pred, thresholds=(0.5, 0.55))
  # IoU exactly 0.5 counts at τ = 0.5 (>=); only one half can match (one-to-one).
  np.testing.assert_array_equal(m["tp"], [1, 0])
  np.testing.assert_array_equal(m["fp"], [1, 2])
  np.testing.assert_array_equal(m["fn"], [0, 1])
  np.testing.assert_allclose(m["panoptic_quality"], [0.5 / 1.5, 0.0])


def test_merge_two_true_predicted_as_one():
  pred, true = _split_case()
  assert metrics.merges_splits(true, pred) == (1, 0)
  m = metrics.match(true, pred, thresholds=(0.5,))
  assert (m["tp"][0], m["fp"][0], m["fn"][0]) == (1, 0, 1)


def test_merge_split_needs_iou_above_point_one():
  # A 10x10 truth and a 10x1 sliver (IoU 0.1 exactly, not > 0.1) plus a 10x9 rest.
  true = _box(0, 0, 10, 10, value=1)
  pred = _box(0, 0, 10, 1, value=1)
  _box(0, 1, 10, 9, value=2, labels=pred)
  np.testing.assert_allclose(metrics.iou_matrix(true, pred), [[0.1, 0.9]])
  assert metrics.merges_splits(true, pred) == (0, 0)
  _box(0, 0, 10, 2, value=1, labels=pred)  # Sliver now 10x2: IoU 0.2.
  assert metrics.merges_splits(true, pred) == (0, 1)


def test_instance_scores_pool_counts_over_images():
  shifted = (_box(5, 5, 10, 10), _box(5, 7, 10, 10))
  s = metrics.instance_scores([shifted, _split_case()])
  assert s["num_images"] == 2
  assert (s["n_true"], s["n_pred"]) == (2, 3)
  assert (s["tp"][0], s["fp"][0], s["fn"][0]) == (2, 1, 0)
  assert s["f1"][0] == pytest.approx(4 / 5)
  assert s["accuracy"][0] == pytest.approx(2 / 3)
  assert s["panoptic_quality"][0] == pytest.approx((2 / 3 + 0.5) / 2.5)
  assert s["mean_true_score"][0] == pytest.approx((2 / 3 + 0.5) / 2)
  # τ 0.55..0.65: only the shifted pair matches (tp 1, fp 2, fn 1); τ >= 0.7: nothing.
  np.testing.assert_allclose(s["accuracy"], [2 / 3] + [1 / 4] * 3 + [0.0] * 6)
  assert s["map"] == pytest.approx(17 / 120)
  # DSB 2018: per image first. Shifted pair (IoU 2/3): 1 for τ ≤ 0.65, else 0 -> 0.4; the split
  # (IoU 1/2 each): 1/2 at τ = 0.5, else 0 -> 0.05; mean over the two images 0.225.
  assert s["dsb2018_score"] == pytest.approx(0.225)
  assert (s["merges"], s["splits"]) == (0, 1)


def test_dsb2018_score_counts_an_empty_field_with_no_prediction_as_perfect():
  empty = np.zeros((8, 8), np.int32)
  shifted = (_box(5, 5, 10, 10), _box(5, 7, 10, 10))
  s = metrics.instance_scores([shifted, (empty, empty)])
  assert s["dsb2018_score"] == pytest.approx((0.4 + 1.0) / 2)
  assert s["map"] == pytest.approx(0.4)  # Pooled: the empty field adds no counts.


# --- instance: brute-force reference -------------------------------------------------------------


def _random_pair(seed):
  """Random overlapping rectangles with non-consecutive ids, and a perturbed prediction."""
  rng = np.random.default_rng(seed)
  true = np.zeros((20, 20), np.int32)
  pred = np.zeros((20, 20), np.int32)
  for obj_id in rng.choice(np.arange(1, 1000), size=rng.integers(2, 6), replace=False):
    y, x = rng.integers(0, 15, size=2)
    h, w = rng.integers(2, 7, size=2)
    true[y:y + h, x:x + w] = obj_id
    if rng.random() < 0.85:  # Sometimes missed entirely.
      dy, dx = rng.integers(-2, 3, size=2)
      dh, dw = rng.integers(-1, 2, size=2)
      y2, x2 = max(y + dy, 0), max(x + dx, 0)
      pred[y2:y2 + max(h + dh, 1), x2:x2 + max(w + dw, 1)] = rng.integers(1, 5000)
  if rng.random() < 0.5:  # A spurious prediction.
    y, x = rng.integers(0, 17, size=2)
    pred[y:y + 3, x:x + 3] = 77777
  return true, pred


def _brute_iou(true, pred):
  t_ids = [i for i in np.unique(true) if i != 0]
  p_ids = [i for i in np.unique(pred) if i != 0]
  iou = np.zeros((len(t_ids), len(p_ids)))
  for a, ti in enumerate(t_ids):
    for b, pi in enumerate(p_ids):
      inter = np.logical_and(true == ti, pred == pi).sum()
      union = np.logical_or(true == ti, pred == pi).sum()
      iou[a, b] = inter / union
  return iou


def _brute_match(iou, thr):
  """Max #pairs with IoU >= thr over ALL one-to-one assignments; then max matched IoU sum.

  Enumerating injections of the smaller side suffices: any partial matching extends to one,
  and extra pairs never lower the count of pairs that pass.
  """
  n_t, n_p = iou.shape
  if min(n_t, n_p) == 0:
    return 0, 0.0
  mat = iou if n_t <= n_p else iou.T
  best = (0, 0.0)
  for cols in itertools.permutations(range(mat.shape[1]), mat.shape[0]):
    vals = mat[np.arange(mat.shape[0]), list(cols)]
    ok = vals >= thr
    best = max(best, (int(ok.sum()), float(vals[ok].sum())))
  return best


@pytest.mark.parametrize("seed", range(40))
def test_matching_equals_brute_force(seed):
  true, pred = _random_pair(seed)
  iou = _brute_iou(true, pred)
  np.testing.assert_allclose(metrics.iou_matrix(true, pred), iou)
  thresholds = (0.1, 0.2, 0.3, 0.4) + metrics.IOU_THRESHOLDS
  m = metrics.match(true, pred, thresholds)
  n_t, n_p = iou.shape
  assert (m["n_true"], m["n_pred"]) == (n_t, n_p)
  for k, thr in enumerate(thresholds):
    tp, sum_iou = _brute_match(iou, thr)
    assert m["tp"][k] == tp, thr
    assert (m["fp"][k], m["fn"][k]) == (n_p - tp, n_t - tp)
    denom = 2 * tp + (n_p - tp) + (n_t - tp)
    assert m["f1"][k] == pytest.approx(2 * tp / denom if denom else 0.0)
    if thr >= 0.5:  # Above 0.5 the passing pairs are unique, so is their IoU sum.
      assert m["sum_matched_iou"][k] == pytest.approx(sum_iou)
      pq_den = tp + (n_p - tp) / 2 + (n_t - tp) / 2
      assert m["panoptic_quality"][k] == pytest.approx(sum_iou / pq_den if pq_den else 0.0)
  hit = iou > 0.1
  merges = sum(1 for b in range(n_p) if hit[:, b].sum() >= 2)
  splits = sum(1 for a in range(n_t) if hit[a, :].sum() >= 2)
  assert metrics.merges_splits(true, pred) == (merges, splits)


def test_random_pairs_exercise_nontrivial_matching():
  # Guards the brute-force test against degenerate random cases.
  tps = [metrics.match(*_random_pair(s), (0.3,))["tp"][0] for s in range(40)]
  fps = [metrics.match(*_random_pair(s), (0.3,))["fp"][0] for s in range(40)]
  assert max(tps) >= 2 and max(fps) >= 1


@pytest.mark.parametrize("iou", [
    # Greedy by IoU takes (t1, p1) and strands t2: 1 match; the optimum has 2.
    [[0.6, 0.35], [0.4, 0.0]],
    # Maximising the IoU sum takes the 0.9 pair (sum 0.9 > 0.6): 1 match; the optimum has 2.
    [[0.9, 0.3], [0.3, 0.0]],
])
def test_matching_maximises_the_number_of_matches(iou):
  iou = np.array(iou)
  assert _brute_match(iou, 0.3)[0] == 2
  assert metrics._match_iou(iou, (0.3,))["tp"][0] == 2


# --- scorer ---------------------------------------------------------------------------------------


def test_scorer_error_rates_hand_computed():
  pred = np.array([0.95, 0.45, 0.35, 0.05, 0.8])
  label = np.array([0.9, 0.3, 0.5, 0.0, 0.2])
  centre_fg = np.array([True, False, True, False, False])
  r = metrics.scorer_error_rates(pred, label, centre_fg, thresholds=(0.4, 0.9, 0.99))
  np.testing.assert_array_equal(r["num_pred_pass"], [3, 1, 0])
  np.testing.assert_array_equal(r["num_label_pass"], [2, 0, 0])  # 0.9 is not > 0.9.
  np.testing.assert_array_equal(r["errors"], [2, 0, 0])
  np.testing.assert_allclose(r["error_rate"], [200 / 3, 0.0, 0.0])  # None passing -> 0.
  np.testing.assert_allclose(r["stability_error_rate"], [20.0, 20.0, 0.0])
  assert r["num_regions"] == 5


def test_scorer_error_rates_default_thresholds_and_any_shape():
  rng = np.random.default_rng(0)
  pred = rng.random((3, 4, 5))
  label = rng.random((3, 4, 5))
  fg = rng.random((3, 4, 5)) > 0.5
  r = metrics.scorer_error_rates(pred, label, fg)
  assert r["error_rate"].shape == (9,)
  t = 0.3
  k = 2
  passing = pred > t
  assert r["error_rate"][k] == pytest.approx(100 * np.sum(passing & ~fg) / passing.sum())
  assert r["stability_error_rate"][k] == pytest.approx(
      100 * abs(passing.sum() - (label > t).sum()) / 60)


def test_counterpart_ious_by_hand():
  want = np.zeros((4, 6), np.int32)
  want[:2, :2] = 1  # 4 px.
  want[2:, 3:] = 2  # 6 px.
  got = np.zeros_like(want)
  got[:2, :3] = 7  # Covers 1 and 2 px more: IoU 4/6.
  np.testing.assert_allclose(metrics.counterpart_ious(want, got), [4 / 6, 0.0])
  got[2:, 3:] = 5
  np.testing.assert_allclose(metrics.counterpart_ious(want, got), [4 / 6, 1.0])


def test_split_summary_pools_a_merger_and_a_match_by_hand():
  merged_true, merged_pred = np.array([[1, 1, 0, 2, 2]]), np.ones((1, 5), np.int32)
  match = np.array([[1, 1]])
  # The merger (IoU 2/5 with each nucleus) is one false positive, two misses and one merge;
  # the match is a TP at every IoU threshold: pooled TP 1, FP 1, FN 2.
  summary = metrics.split_summary([(merged_true, merged_pred), (match, match)],
                                  [(merged_true > 0, merged_pred > 0), (match > 0, match > 0)])
  assert summary == {"instance_f1_05": pytest.approx(2 / 5), "map_pooled": pytest.approx(1 / 4),
                     "merges": 1, "splits": 0, "recall_05": pytest.approx(1 / 3),
                     "precision_05": pytest.approx(1 / 2), "n_true": 3,
                     "pixel_f1": pytest.approx(12 / 13)}  # Pixels: TP 6, FP 1, FN 0.
