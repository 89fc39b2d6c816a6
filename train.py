"""Trains SpiralNet (or the U-Net baseline) as a config says.

    python train.py --config=configs/demo.py --workdir=workdir/demo
    python train.py --config=configs/spiral.py --workdir=workdir/spiral \
        --config.segmenter.learning_rate=3e-4

The work is in `spiralnet_jax.training`; this file only parses flags. Rerunning with the same
workdir resumes every stage from its newest restorable checkpoint (also after a crash or a kill).
Training is data-parallel over all local devices. On several hosts, run the same command on
every host with `--distributed` (and, outside SLURM / Open MPI / Cloud TPU, the coordinator):

    python train.py --config=configs/spiral.py --workdir=/shared/spiral --distributed \
        --coordinator_address=host0:1234 --num_processes=2 --process_id=<0 or 1>
"""

import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from spiralnet_jax import checkpoints
from spiralnet_jax import cli
from spiralnet_jax.training import errors
from spiralnet_jax.training import loop

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, config.json and logs.")
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host training; the workdir "
                  "must be on a file system every host sees).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for --distributed where it is not auto-detected.")
flags.DEFINE_integer("num_processes", None, "Number of processes, for --distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, for --distributed.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if FLAGS.distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  checkpoints.quiet_orbax_logging()
  try:
    results = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except errors.TrainingError as e:
    # Refused resumes, unrestorable checkpoints, non-finite losses: the message says it all.
    cli.fail("train.py", str(e))
  except errors.Stopped as e:
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)  # The shell's code for "ended by this signal".
  if jax.process_index() != 0:
    return
  for stage, metrics in results.items():
    print(f"{stage}: " + ", ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
  for stage in results:
    print(f"{stage} checkpoints: {checkpoints.checkpoint_dir(FLAGS.workdir, stage)}")
  print(f"logs: {FLAGS.workdir}/metrics.jsonl, TensorBoard: tensorboard --logdir "
        f"{FLAGS.workdir}/tensorboard")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser("train.py"))
