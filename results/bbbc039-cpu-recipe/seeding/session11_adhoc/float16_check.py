import sys, glob, numpy as np
from spiralnet_jax import assembly, metrics, valleys, data as data_lib, predict, pretrained
base = predict.Predictor.from_weights(str(pretrained.weights_dir()))
cfg = base.config.assembly
for split in ("validation", "test"):
  res = {}
  for dt in (np.float32, np.float16):
    pairs, diff = [], 0
    for f, ex in zip(sorted(glob.glob(f"/tmp/spiralnet_claims_{split}/*.npz")), data_lib.load_split(split)):
      z = np.load(f); image = predict.prepare_image(ex.image, predict.percentiles(base.config))
      s, i = assembly.assemble_claims_from_config(assembly.Claims(z["pixel"], z["object_id"], z["prob"]), image.shape, cfg)
      pairs.append((ex.labels, valleys.split_from_config(i, image.astype(dt), cfg)))
    res[dt.__name__] = pairs
  same = sum(int((a[1] != b[1]).any()) for a, b in zip(res["float32"], res["float16"]))
  for k, pairs in res.items():
    inst = metrics.instance_scores(pairs)
    print(split, k, round(float(inst["f1"][0]), 4), inst["merges"], inst["splits"], "fields differing:", same)
