"""Where each instance error comes from: every true nucleus that the prediction misses, merges
or splits, attributed to one cause. Writes JSON (counts per cause and kind, plus per field).

    python tools/error_sources.py --weights=spiralnet_jax/weights/bbbc039_cpu_finetune --split=validation \
        --out=results/bbbc039-cpu-recipe/error_sources_validation.json

A true nucleus is correct when a predicted instance matches it at IoU ≥ 0.5. Otherwise its kind
is "merged" (a prediction overlapping it by IoU > 0.1 also overlaps another true nucleus),
"split" (≥ 2 predictions overlap it by IoU > 0.1), "missed" (no prediction overlaps it) or
"poor_iou". Its cause is the first that applies:
  valleys             assembly's instances matched it, the valley split (assembly.split_valleys,
                      spiralnet_jax.valleys) broke it;
  no_region           no region of the prediction grid has it as its (label) central object
                      (under predict.seeds = "peaks": no seed's region has; this then
                      includes the scorer missing it);
  scorer_threshold    some do, but the scorer passes none of them (grid seeding only);
  size_filter         a candidate matches it (IoU ≥ 0.5) but is below assembly.min_size;
  assembly            a candidate matches it (IoU ≥ 0.5), yet the assembled instances do not:
                      assembly joined or overrode the correct candidate;
  segmenter_neighbour the best candidate of its own regions also covers another nucleus
                      (IoU > 0.1): the segmenter marked a neighbour as central;
  continuation        that candidate covers under half of it and the nucleus reaches outside
                      the candidate's first region (following it over the edge fell short);
  segmenter_other     anything else (under- or over-segmented inside its region).
The same counts are also given for the small true nuclei alone (area < --small_area px): what
a 52×58 region scored at its centre hardly sees.
"""

import collections
import dataclasses
import json
import pathlib

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import assembly
from spiralnet_jax import continuation
from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import pretrained
from spiralnet_jax import regions as regions_lib
from spiralnet_jax import scorer as scorer_lib
from spiralnet_jax import valleys

_WEIGHTS = flags.DEFINE_string("weights", str(pretrained.weights_dir()),
                               "Exported weights directory or train.py workdir.")
_SPLIT = flags.DEFINE_string("split", "validation", "Split to analyse.")
_NUM = flags.DEFINE_integer("num_images", 0, "Fields of the split (0 = all).")
_OUT = flags.DEFINE_string("out", "", "JSON output path (default: print only).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "config overrides, e.g. assembly.split_containers=1")
_SMALL = flags.DEFINE_integer("small_area", 50, "True nuclei under this many px count as small.")

CAUSES = ("valleys", "no_region", "scorer_threshold", "size_filter", "assembly",
          "segmenter_neighbour", "continuation", "segmenter_other")


def _pair_iou(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
  """(IoU (na+1, nb+1), intersection) of two label arrays given per pixel (0 = none)."""
  inter = np.zeros((na + 1, nb + 1), np.int64)
  np.add.at(inter, (a, b), 1)
  area_a, area_b = inter.sum(1), inter.sum(0)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0), inter


def _candidate_iou(labels: np.ndarray, claimed: assembly.Claims, num_objects: int):
  """(IoU (true+1, objects), object areas) of each true nucleus with each object's candidate."""
  n_true = int(labels.max(initial=0))
  true_at = labels.ravel()[claimed.pixel]
  inter = np.zeros((n_true + 1, num_objects), np.int64)
  np.add.at(inter, (true_at, claimed.object_id), 1)
  cand_area = np.bincount(claimed.object_id, minlength=num_objects)
  true_area = np.bincount(labels.ravel(), minlength=n_true + 1)
  union = true_area[:, None] + cand_area[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0), cand_area


def attribute_field(predictor: predict.Predictor, image: np.ndarray,
                    labels: np.ndarray) -> list[tuple[str, str, int]]:
  """(kind, cause, area in px) of every true nucleus of one field that the prediction gets
  wrong."""
  config = predictor.config
  geom = dataclasses.replace(predictor.geom, stride=int(config.predict.stride))
  prepared = predict.prepare_image(image, predict.percentiles(config))
  if config.predict.seeds == "grid":
    # Every grid region, and which of them the scorer passes (object k is selected[k]).
    central = regions_lib.central_ids(regions_lib.extract_regions(labels, geom), geom)
    selected = scorer_lib.select_regions(predict.score_grid(predictor, prepared).ravel(),
                                         float(config.scorer.threshold))
  else:
    # Seeds are chosen among passing cells already: a nucleus no seed is centred on counts as
    # no_region (scorer and seeding together); object k is seed k.
    origins = predict.selected_origins(predictor, prepared)
    crops = continuation.crop_regions(regions_lib.reflect_pad(labels, geom.pad), geom.pad,
                                      origins, geom)
    central = regions_lib.central_ids(np.rint(crops).astype(np.int64), geom)
    selected = np.arange(len(origins))
  pieces = predict.predict_pieces(predictor, image)
  claimed = assembly.claims(pieces, labels.shape, float(config.assembly.threshold))
  # The final instances from the same pieces (what predict.predict streams), not a second pass.
  _, assembled = assembly.assemble_claims_from_config(claimed, labels.shape, config.assembly)
  final = valleys.split_from_config(assembled, prepared, config.assembly)
  n_true, n_pred = int(labels.max(initial=0)), int(final.max(initial=0))
  iou, _ = _pair_iou(labels.ravel(), final.ravel(), n_true, n_pred)
  iou = iou[1:, 1:]
  # Nuclei that assembly got right and the valley split (assembly.split_valleys) then broke.
  before = iou if final is assembled else _pair_iou(
      labels.ravel(), assembled.ravel(), n_true, int(assembled.max(initial=0)))[0][1:, 1:]
  right_before = (before >= 0.5).any(axis=1)
  # Lobe regions' objects (predict.lobes) have ids past the selected ones: candidates too.
  num_objects = max(len(selected), int(pieces.object_ids.max(initial=-1)) + 1)
  cand_iou, cand_area = _candidate_iou(labels, claimed, num_objects)
  cand_iou = cand_iou[1:]
  true_area = np.bincount(labels.ravel(), minlength=n_true + 1)
  first_origin = {int(o): pieces.origins[k] for k, o in reversed(list(enumerate(pieces.object_ids)))}
  errors = []
  for n in range(n_true):
    if (iou[n] >= 0.5).any():
      continue
    hits = np.flatnonzero(iou[n] > 0.1)
    if hits.size >= 2:
      kind = "split"
    elif hits.size == 1 and (iou[:, hits[0]] > 0.1).sum() >= 2:
      kind = "merged"
    else:
      kind = "missed" if hits.size == 0 else "poor_iou"
    cause = "valleys" if right_before[n] else _cause(
        n + 1, labels, central, selected, cand_iou[n], cand_iou, cand_area, first_origin, geom,
        int(config.assembly.min_size))
    errors.append((kind, cause, int(true_area[n + 1])))
  return errors


def _cause(nucleus: int, labels, central, selected, iou_n, cand_iou, cand_area, first_origin,
           geom, min_size) -> str:
  """The first cause (CAUSES order) that explains one wrong nucleus."""
  if not (central == nucleus).any():
    return "no_region"
  own = np.flatnonzero(central[selected] == nucleus)  # Objects whose region is centred on it.
  if own.size == 0:
    return "scorer_threshold"
  good = np.flatnonzero(iou_n >= 0.5)
  if good.size:
    return "size_filter" if (cand_area[good] < min_size).all() else "assembly"
  best = own[np.argmax(iou_n[own])]
  if (cand_iou[:, best] > 0.1).sum() >= 2:
    return "segmenter_neighbour"
  ys, xs = np.nonzero(labels == nucleus)
  y0, x0 = first_origin.get(int(best), (0, 0))
  outside = ((ys < y0) | (ys >= y0 + geom.height) | (xs < x0) | (xs >= x0 + geom.width)).any()
  covered = cand_iou[nucleus - 1, best]
  return "continuation" if outside and covered < 0.5 else "segmenter_other"


def main(argv):
  del argv
  weights = pathlib.Path(_WEIGHTS.value)
  predictor = (predict.Predictor.from_weights(weights) if pretrained.is_weights_dir(weights)
               else predict.Predictor.from_workdir(weights))
  for item in _OVERRIDES.value:
    key, value = item.split("=", 1)
    section, field = key.split(".")
    predictor.config[section][field] = type(predictor.config[section][field])(json.loads(value))
  examples = data_lib.load_split(_SPLIT.value, data_lib.resolve_data_dir(""), _NUM.value)
  counts, small = collections.Counter(), collections.Counter()
  per_field = {}
  n_true = n_small = 0
  for ex in examples:
    errors = attribute_field(predictor, ex.image, ex.labels)
    n_true += int(ex.labels.max(initial=0))
    areas = np.bincount(ex.labels.ravel())[1:]
    n_small += int(((areas > 0) & (areas < _SMALL.value)).sum())
    per_field[ex.name] = dict(collections.Counter(f"{k}/{c}" for k, c, _ in errors))
    counts.update((k, c) for k, c, _ in errors)
    small.update((k, c) for k, c, area in errors if area < _SMALL.value)
  by_cause = {c: sum(v for (k, cc), v in counts.items() if cc == c) for c in CAUSES}
  by_kind = collections.Counter()
  for (k, _), v in counts.items():
    by_kind[k] += v
  out = {"weights": str(weights), "split": _SPLIT.value, "fields": len(examples),
         "true_nuclei": n_true, "wrong_nuclei": sum(counts.values()), "by_cause": by_cause,
         "by_kind": dict(by_kind), "by_kind_and_cause": {f"{k}/{c}": v for (k, c), v in
                                                          sorted(counts.items())},
         "small_area_px": _SMALL.value, "true_nuclei_small": n_small,
         "wrong_nuclei_small": sum(small.values()),
         "small_by_kind_and_cause": {f"{k}/{c}": v for (k, c), v in sorted(small.items())},
         "overrides": _OVERRIDES.value, "per_field": per_field}
  text = json.dumps(out, indent=1)
  print(json.dumps({k: out[k] for k in ("true_nuclei", "wrong_nuclei", "by_cause", "by_kind",
                                        "true_nuclei_small", "wrong_nuclei_small")}))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")


if __name__ == "__main__":
  app.run(main)
