"""The median equivalent nucleus diameter of a split's labels: what `data.nucleus_diameter` holds.

    python tools/nucleus_diameter.py --split=training   # BBBC039: 28.25 px over 12,001 nuclei

`--diameter` rescales a user's image so that its nuclei measure this (spiralnet_jax.scale);
a model trained on other data records its own value in `config.data.nucleus_diameter`.
"""

from absl import app
from absl import flags
import numpy as np

from spiralnet_jax import data as data_lib
from spiralnet_jax import scale

_SPLIT = flags.DEFINE_string("split", "training", "Split whose labels are measured.")


def main(argv):
  del argv
  labels = [ex.labels for ex in data_lib.load_split(_SPLIT.value)]
  count = sum(len(np.unique(x[x > 0])) for x in labels)
  print(f"{_SPLIT.value}: median equivalent diameter {scale.median_diameter(labels):.2f} px "
        f"over {count} nuclei in {len(labels)} fields")


if __name__ == "__main__":
  app.run(main)
