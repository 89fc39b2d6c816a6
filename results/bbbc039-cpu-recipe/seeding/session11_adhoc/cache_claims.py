import sys, numpy as np, pathlib
from spiralnet_jax import data as data_lib, predict, pretrained
split = sys.argv[1]
base = predict.Predictor.from_weights(str(pretrained.weights_dir()))
out = pathlib.Path(f"/tmp/spiralnet_claims_{split}"); out.mkdir(exist_ok=True)
for k, ex in enumerate(data_lib.load_split(split)):
  image = predict.prepare_image(ex.image, predict.percentiles(base.config))
  c = predict.predict_claims(base, image)
  np.savez(out / f"{k:03d}.npz", pixel=c.pixel, object_id=c.object_id, prob=c.prob,
           shape=np.array(image.shape[:2]), labels=ex.labels)
  print(k, flush=True)
