"""Exports a train.py workdir's SpiralNet as shippable weights (parameters only, no pickle).

    python tools/export_weights.py WORKDIR DEST --provenance=results/x/provenance.json

Writes DEST/config.json, DEST/scorer.npz, DEST/segmenter.npz and DEST/provenance.json (the
given record plus the checkpoint steps exported and each file's size), then checks that the
exported weights predict exactly what the workdir's checkpoints predict on a bundled field.
"""

import json
import pathlib
import shutil
import sys

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import predict
from spiralnet_jax import pretrained
from spiralnet_jax import checkpoints

_PROVENANCE = flags.DEFINE_string("provenance", "", "JSON file with the provenance record.")


def main(argv):
  workdir, dest = pathlib.Path(argv[1]), pathlib.Path(argv[2])
  checkpoints.quiet_orbax_logging()
  config = checkpoints.load_config(workdir)
  dest.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(workdir / "config.json", dest / "config.json")
  record = json.loads(pathlib.Path(_PROVENANCE.value).read_text()) if _PROVENANCE.value else {}
  record["checkpoint_steps"] = {}
  for stage in pretrained.STAGES:
    pretrained.save_params(dest / f"{stage}.npz", checkpoints.load_params(workdir, stage, config))
    record["checkpoint_steps"][stage] = checkpoints.checkpoint_steps(workdir, stage)[-1]
  record["files_bytes"] = {p.name: p.stat().st_size for p in sorted(dest.glob("*.npz"))}
  (dest / "provenance.json").write_text(json.dumps(record, indent=1) + "\n")
  image = data_lib.load_split("test", data_lib.sample_dir(), 1)[0].image
  want = predict.predict_instances(predict.Predictor.from_workdir(workdir), image)
  got = predict.predict_instances(predict.Predictor.from_weights(dest), image)
  if not np.array_equal(want, got):
    sys.exit("exported weights predict differently from the workdir's checkpoints")
  print(f"wrote {dest} ({sum(record['files_bytes'].values())} bytes of weights); "
        f"predictions equal the workdir's on {image.shape}")


if __name__ == "__main__":
  app.run(main)
