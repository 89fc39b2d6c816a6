"""Evaluation metrics: pixel P/R/F1, StarDist-style instance matching, scorer error rates.

Everything here is host-side NumPy. Instance overlaps come from one joint histogram of
(true id, predicted id) pixel pairs, so cost is O(pixels + objects²), with no Python loop over
objects or pixels.

Conventions for empty cases (BBBC039 has three fields without nuclei):
- Pixel scores (`pixel_scores`, `channel_scores`): a ratio whose denominator is 0 is 1.0 when the
  image (or channel) has no errors at all (fp = fn = 0, i.e. nothing true and nothing predicted)
  and 0.0 otherwise. So empty vs empty scores P = R = F1 = 1; empty truth with a non-empty
  prediction, or the reverse, scores 0 for every 0/0 ratio (agreeing with F1 = 0 there).
- Instance scores (`match`, `instance_scores`) follow StarDist's `matching` exactly, including
  its `_safe_divide`: any ratio with a zero denominator is 0.0 (so a single empty-vs-empty image
  scores 0, as in StarDist). Split-level numbers pool counts over images, where this only
  matters if the whole split is empty.
"""

from typing import Iterable, Sequence

import numpy as np
from scipy import optimize

# τ = 0.50, 0.55, ..., 0.95 (rounded so that thresholds compare exactly as written).
IOU_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.50, 0.951, 0.05), 2))
# Thresholds for the scorer error-rate curves (thesis Fig. 22).
SCORER_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.1, 0.91, 0.1), 1))
# Caicedo et al. 2019: an overlap above this IoU counts towards a merge / split.
MERGE_SPLIT_IOU = 0.1


# --- pixel metrics -------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, perfect: np.ndarray) -> np.ndarray:
  """num / den, with 0/0 = 1.0 where `perfect` (no errors) and 0.0 elsewhere."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  safe = np.where(den > 0, den, 1.0)
  return np.where(den > 0, num / safe, np.where(perfect, 1.0, 0.0))


def prf(tp, fp, fn) -> dict:
  """Precision, recall, F1 from counts (arrays broadcast), with the module's 0/0 convention."""
  tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
  perfect = (fp == 0) & (fn == 0)
  return {
      "precision": _ratio(tp, tp + fp, perfect),
      "recall": _ratio(tp, tp + fn, perfect),
      "f1": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
  }


def pixel_counts(true_fg: np.ndarray, pred_fg: np.ndarray) -> tuple[int, int, int]:
  """Foreground (tp, fp, fn) pixel counts; nonzero = foreground, so label images work too."""
  t = np.asarray(true_fg) != 0
  p = np.asarray(pred_fg) != 0
  if t.shape != p.shape:
    raise ValueError(f"shape mismatch: true {t.shape} vs pred {p.shape}")
  tp = int(np.count_nonzero(t & p))
  return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def pixel_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
  """Foreground P/R/F1 over a split: pooled (sum counts first) and mean over images.

  Keys: tp, fp, fn (pooled counts); precision, recall, f1 (pooled); mean_precision,
  mean_recall, mean_f1 (per-image scores averaged); per_image (dict of (N,) arrays);
  num_images. F1 equals Dice.
  """
  counts = np.array([pixel_counts(t, p) for t, p in pairs], np.int64).reshape(-1, 3)
  tp, fp, fn = counts.sum(axis=0)
  pooled = prf(tp, fp, fn)
  per_image = prf(counts[:, 0], counts[:, 1], counts[:, 2])
  out = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "num_images": len(counts)}
  out.update({k: float(v) for k, v in pooled.items()})
  for k, v in per_image.items():
    # Mean over zero images is undefined; NaN says so rather than inventing a number.
    out[f"mean_{k}"] = float(v.mean()) if len(v) else float("nan")
  out["per_image"] = {**per_image, "tp": counts[:, 0], "fp": counts[:, 1], "fn": counts[:, 2]}
  return out


def channel_scores(pred_probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
  """Per-channel pooled P/R/F1 of the segmenter (thesis Table 1), each channel binarised.

  pred_probs, labels: (..., C) (e.g. (N, H, W, 3): central / other / background). A pixel is
  predicted positive in channel c when pred_probs[..., c] > threshold, and is a true positive
  label when labels[..., c] > 0.5 (labels are one-hot). Returns (C,) arrays: tp, fp, fn,
  precision, recall, f1.
  """
  pred = np.asarray(pred_probs) > threshold
  true = np.asarray(labels) > 0.5
  if pred.shape != true.shape:
    raise ValueError(f"shape mismatch: pred {pred.shape} vs labels {true.shape}")
  axes = tuple(range(pred.ndim - 1))
  tp = np.count_nonzero(pred & true, axis=axes)
  fp = np.count_nonzero(pred & ~true, axis=axes)
  fn = np.count_nonzero(~pred & true, axis=axes)
  return {"tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}


# --- instance metrics ------------------------------------------------------------------------------


def _overlap(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Joint pixel histogram of objects: (overlap (T, P), true areas (T,), pred areas (P,)).

  Ids may be arbitrary non-negative integers (non-consecutive); 0 is background. Row/column
  order follows the sorted object ids.
  """
  true = np.asarray(true)
  pred = np.asarray(pred)
  if true.shape != pred.shape:
    raise ValueError(f"shape mismatch: true {true.shape} vs pred {pred.shape}")
  # Index 0 is reserved for background: prepend 0 so return_inverse maps background to 0.
  t_ids, t_idx = np.unique(np.concatenate([[0], true.ravel()]), return_inverse=True)
  p_ids, p_idx = np.unique(np.concatenate([[0], pred.ravel()]), return_inverse=True)
  t_idx, p_idx = t_idx[1:], p_idx[1:]
  n_t, n_p = len(t_ids), len(p_ids)
  joint = np.bincount(t_idx * n_p + p_idx, minlength=n_t * n_p).reshape(n_t, n_p)
  return joint[1:, 1:], joint.sum(axis=1)[1:], joint.sum(axis=0)[1:]


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """IoU between every true object (rows) and predicted object (columns), ids sorted."""
  inter, t_area, p_area = _overlap(true, pred)
  union = t_area[:, None] + p_area[None, :] - inter
  return inter / np.maximum(union, 1)


def _match_iou(iou: np.ndarray, thresholds: Sequence[float]) -> dict:
  """StarDist `matching` statistics from an IoU matrix, one entry per threshold."""
  n_true, n_pred = iou.shape
  n_matched = min(n_true, n_pred)
  tp = np.zeros(len(thresholds), np.int64)
  sum_iou = np.zeros(len(thresholds), np.float64)
  for k, thr in enumerate(thresholds):
    if n_matched == 0:
      continue
    # As StarDist: maximise the number of pairs with IoU >= thr; the IoU term (< 1 in total)
    # only breaks ties between assignments with equally many such pairs.
    costs = -(iou >= thr).astype(np.float64) - iou / (2 * n_matched)
    rows, cols = optimize.linear_sum_assignment(costs)
    matched = iou[rows, cols]
    ok = matched >= thr
    tp[k] = np.count_nonzero(ok)
    sum_iou[k] = matched[ok].sum()
  fp = n_pred - tp
  fn = n_true - tp
  return {
      "thresholds": np.asarray(thresholds, np.float64),
      "tp": tp, "fp": fp, "fn": fn,
      "n_true": n_true, "n_pred": n_pred,
      "sum_matched_iou": sum_iou,
      **_instance_ratios(tp, fp, fn, n_true, sum_iou),
  }


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """StarDist's `_safe_divide`: num / den, and 0.0 where den == 0."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _instance_ratios(tp, fp, fn, n_true, sum_iou) -> dict:
  """Precision, recall, F1, DSB accuracy, mean scores, PQ from (pooled) counts."""
  return {
      "precision": _safe_divide(tp, tp + fp),
      "recall": _safe_divide(tp, tp + fn),
      "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
      "accuracy": _safe_divide(tp, tp + fp + fn),  # The DSB 2018 score.
      "mean_true_score": _safe_divide(sum_iou, n_true),
      "mean_matched_score": _safe_divide(sum_iou, tp),
      "panoptic_quality": _safe_divide(sum_iou, tp + fp / 2 + fn / 2),
  }


def match(true: np.ndarray, pred: np.ndarray,
          thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
  """One-to-one Hungarian matching at IoU >= τ, exactly as StarDist's `matching`.

  Returns a dict of (T,) arrays over `thresholds`: tp, fp, fn, precision, recall, f1,
  accuracy (DSB score TP/(TP+FP+FN)), mean_true_score, mean_matched_score, panoptic_quality,
  sum_matched_iou; plus thresholds, n_true, n_pred.
  """
  return _match_iou(iou_matrix(true, pred), thresholds)


def _merges_splits_iou(iou: np.ndarray) -> tuple[int, int]:
  """(merges, splits) from an IoU matrix (rows true, columns predicted)."""
  hit = iou > MERGE_SPLIT_IOU
  merges = int(np.count_nonzero(hit.sum(axis=0) >= 2))
  splits = int(np.count_nonzero(hit.sum(axis=1) >= 2))
  return merges, splits


def merges_splits(true: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
  """Caicedo et al. 2019 (merges, splits): predictions (true objects) with IoU > 0.1 to ≥ 2 partners."""
  return _merges_splits_iou(iou_matrix(true, pred))


def instance_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                    thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
  """Instance scores over a split, StarDist `matching_dataset` style (counts pooled over images).

  Returns the keys of `match` (tp, fp, fn, n_true, n_pred, sum_matched_iou summed over images,
  ratios recomputed from the sums), plus `map` (the pooled mAP: mean over `thresholds` of the
  pooled TP/(TP+FP+FN)), `dsb2018_score` (the DSB 2018 score: per image the mean over
  `thresholds` of TP/(TP+FP+FN), then the mean over images; an image with nothing to find and
  nothing found scores 1), `merges`, `splits` (summed) and `num_images`.
  """
  thresholds = tuple(thresholds)
  tp = np.zeros(len(thresholds), np.int64)
  fp = np.zeros_like(tp)
  fn = np.zeros_like(tp)
  sum_iou = np.zeros(len(thresholds), np.float64)
  n_true = n_pred = merges = splits = num_images = 0
  per_image_scores = []
  for true, pred in pairs:
    iou = iou_matrix(true, pred)
    m = _match_iou(iou, thresholds)
    errors = m["tp"] + m["fp"] + m["fn"]
    per_image_scores.append(np.where(errors > 0, m["tp"] / np.maximum(errors, 1), 1.0).mean()
                            if thresholds else float("nan"))
    tp += m["tp"]
    fp += m["fp"]
    fn += m["fn"]
    sum_iou += m["sum_matched_iou"]
    n_true += m["n_true"]
    n_pred += m["n_pred"]
    mg, sp = _merges_splits_iou(iou)
    merges += mg
    splits += sp
    num_images += 1
  out = {
      "thresholds": np.asarray(thresholds, np.float64),
      "tp": tp, "fp": fp, "fn": fn, "n_true": n_true, "n_pred": n_pred,
      "sum_matched_iou": sum_iou,
      **_instance_ratios(tp, fp, fn, n_true, sum_iou),
  }
  out["map"] = float(np.mean(out["accuracy"])) if thresholds else float("nan")
  out["dsb2018_score"] = float(np.mean(per_image_scores)) if per_image_scores else float("nan")
  out.update(merges=merges, splits=splits, num_images=num_images)
  return out


def split_summary(instance_pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                  semantic_pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
  """The headline numbers of a split (instance F1@0.5, pooled mAP, merges, splits, recall and
  precision@0.5, true nuclei, pixel F1) from (truth, prediction) instance and semantic pairs."""
  inst = instance_scores(instance_pairs, thresholds=IOU_THRESHOLDS)
  at_05 = IOU_THRESHOLDS.index(0.5)
  return {"instance_f1_05": float(inst["f1"][at_05]), "map_pooled": float(inst["map"]),
          "merges": int(inst["merges"]), "splits": int(inst["splits"]),
          "recall_05": float(inst["recall"][at_05]),
          "precision_05": float(inst["precision"][at_05]), "n_true": int(inst["n_true"]),
          "pixel_f1": float(pixel_scores(semantic_pairs)["f1"])}


# --- scorer quality (Stage 1) ---------------------------------------------------------------------


def scorer_error_rates(pred_scores: np.ndarray, label_scores: np.ndarray,
                       centre_is_fg: np.ndarray,
                       thresholds: Sequence[float] = SCORER_THRESHOLDS) -> dict:
  """Scorer error rate and stability error rate (thesis §4.1, Fig. 22) per threshold, in %.

  Inputs are per-region arrays of one shape (flattened), pooled over any number of images.
  A region passes t when its score is > t ("score higher than t", thesis §3.1).
  error_rate = #(pred passes and centre pixel is background) / #(pred passes) × 100, and 0.0
  when no region passes (no selected region, so no error). stability_error_rate =
  |#pred passes − #label passes| / #regions × 100 (0.0 for zero regions).
  Returns (T,) arrays: thresholds, error_rate, stability_error_rate, errors, num_pred_pass,
  num_label_pass; and num_regions.
  """
  pred = np.asarray(pred_scores, np.float64).ravel()
  label = np.asarray(label_scores, np.float64).ravel()
  fg = np.asarray(centre_is_fg).ravel().astype(bool)
  if not pred.shape == label.shape == fg.shape:
    raise ValueError(f"shape mismatch: {pred.shape}, {label.shape}, {fg.shape}")
  t = np.asarray(thresholds, np.float64)[:, None]
  pred_pass = pred[None, :] > t
  num_pred = pred_pass.sum(axis=1)
  num_label = (label[None, :] > t).sum(axis=1)
  errors = (pred_pass & ~fg[None, :]).sum(axis=1)
  return {
      "thresholds": t[:, 0],
      "error_rate": 100.0 * _safe_divide(errors, num_pred),
      "stability_error_rate": 100.0 * _safe_divide(np.abs(num_pred - num_label), len(pred)),
      "errors": errors,
      "num_pred_pass": num_pred,
      "num_label_pass": num_label,
      "num_regions": len(pred),
  }


def counterpart_ious(want: np.ndarray, got: np.ndarray) -> np.ndarray:
  """Per instance of `want` (ids 1..N): its IoU with the instance of `got` that covers most of
  it (0 if only background does)."""
  ious = []
  for i in range(1, int(want.max(initial=0)) + 1):
    mask = want == i
    ids, counts = np.unique(got[mask], return_counts=True)
    best = ids[np.argmax(np.where(ids > 0, counts, -1))]
    ious.append(0.0 if best == 0 else (mask & (got == best)).sum() / (mask | (got == best)).sum())
  return np.asarray(ious, np.float64)
