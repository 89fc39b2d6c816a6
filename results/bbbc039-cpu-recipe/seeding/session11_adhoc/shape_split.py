import sys, glob, numpy as np
import scipy.ndimage as ndi, scipy.sparse, scipy.sparse.csgraph, skimage.segmentation, skimage.feature
from spiralnet_jax import assembly, metrics, seeding
import ml_collections
split = sys.argv[1]
cfg = ml_collections.ConfigDict(dict(threshold=0.5, merge_iou=0.5, merge_containment=0.8, min_size=15,
                                     split_containers=True, split_containment=0.5))
fields = []
for f in sorted(glob.glob(f"/tmp/spiralnet_claims_{split}/*.npz")):
  z = np.load(f)
  c = assembly.Claims(z["pixel"], z["object_id"], z["prob"])
  sem, inst = assembly.assemble_claims_from_config(c, tuple(z["shape"]), cfg)
  fields.append((z["labels"], sem, inst))

def necks(ws, dt):
  """saddle ratios of adjacent part pairs"""
  pairs = {}
  for a, b, da, db in ((ws[:, :-1], ws[:, 1:], dt[:, :-1], dt[:, 1:]), (ws[:-1], ws[1:], dt[:-1], dt[1:])):
    k = (a != b) & (a > 0) & (b > 0)
    for p, q, v in zip(a[k], b[k], np.minimum(da[k], db[k])):
      key = (min(p, q), max(p, q)); pairs[key] = max(pairs.get(key, 0), v)
  return pairs

def split_inst(inst, d, h, s, r, min_part):
  out = inst.copy(); nxt = inst.max() + 1
  for lab, sl in enumerate(ndi.find_objects(inst), start=1):
    if sl is None: continue
    sl = tuple(slice(max(0, a.start - 1), a.stop + 1) for a in sl)
    m = inst[sl] == lab
    if m.sum() < 2 * min_part: continue
    dt = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    pk = skimage.feature.peak_local_max(dt, min_distance=d, threshold_abs=h, exclude_border=False, labels=m.astype(int))
    if len(pk) < 2: continue
    if s < 1 and seeding.solidity(m) > s: continue
    markers = np.zeros(m.shape, int); markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    ws = skimage.segmentation.watershed(-dt, markers, mask=m)
    n = ws.max()
    peak = ndi.maximum(dt, ws, np.arange(1, n + 1))
    keep = [(p, q) for (p, q), v in necks(ws, dt).items() if v >= r * min(peak[p - 1], peak[q - 1])]
    g = scipy.sparse.coo_matrix((np.ones(len(keep)), ([p - 1 for p, _ in keep], [q - 1 for _, q in keep])), shape=(n, n))
    ncomp, comp = scipy.sparse.csgraph.connected_components(g, directed=False)
    if ncomp < 2: continue
    ws = np.r_[0, comp + 1][ws]
    sizes = np.bincount(ws.ravel())[1:]
    if (sizes < min_part).any(): continue
    sub = out[sl]
    for k in range(2, ncomp + 1):
      sub[ws == k] = nxt; nxt += 1
  return out

def score(pred_fields):
  pairs = [(t, i) for (t, _, _), i in zip(fields, pred_fields)]
  sem = [(t != 0, s) for (t, s, _) in fields]
  inst, pix = metrics.instance_scores(pairs), metrics.pixel_scores(sem)
  return dict(f1=round(float(inst["f1"][0]), 4), map=round(float(inst["map"]), 4), merges=int(inst["merges"]),
              splits=int(inst["splits"]), recall=round(float(inst["recall"][0]), 4), pix=round(float(pix["f1"]), 4))
print("base", score([i for _, _, i in fields]), flush=True)
grid = [(d, 2.0, s, r, 15) for d in (4,) for s in (1.0, 0.93) for r in (0.5, 0.6, 0.7, 0.8)]
for g in grid:
  print(g, score([split_inst(i, *g) for _, _, i in fields]), flush=True)
