"""Multi-host training for real: two `train.py --distributed` processes on this machine.

Each process has one CPU device and the coordinator is 127.0.0.1; the run must equal the
one-process run on two devices bitwise, write each checkpoint once, and, after one process is
SIGKILLed mid-run (the other then stops too) and both are restarted, resume exactly.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from configs import test as test_config
from spiralnet_jax import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
END = 12
FLAGS = ["--config=configs/test.py", "--config.stages=('scorer',)", "--config.scorer.epochs=4",
         f"--config.train.max_steps={END}", "--config.train.checkpoint_every_steps=2",
         "--config.train.log_every_steps=1"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices):
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _start_pair(workdir, logs):
  """Two --distributed train.py processes (ids 0 and 1) writing stderr to `logs`."""
  port, procs = _free_port(), []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, "train.py", *FLAGS, f"--workdir={workdir}", "--distributed",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=_env(1), stdout=subprocess.DEVNULL, stderr=open(logs[i], "w")))
  return procs


def _params(workdir):
  config = test_config.get_config()
  config.stages, config.scorer.epochs = ("scorer",), 4
  return jax.tree.leaves(checkpoints.load_params(workdir, "scorer", config))


def _assert_equal(workdir, reference):
  for got, want in zip(_params(workdir), _params(reference)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_two_processes_equal_one_process_and_resume_exactly_after_a_kill(tmp_path):
  reference = tmp_path / "one"
  subprocess.run([sys.executable, "train.py", *FLAGS, f"--workdir={reference}"], cwd=REPO,
                 env=_env(2), check=True, capture_output=True, timeout=300)
  logs = [tmp_path / "p0.log", tmp_path / "p1.log"]
  procs = _start_pair(tmp_path / "pair", logs)
  assert [p.wait(timeout=300) for p in procs] == [0, 0], logs[0].read_text()[-2000:]
  _assert_equal(tmp_path / "pair", reference)
  # Written once, by both together: one finished directory per saved step, nothing else.
  names = [p.name for p in checkpoints.checkpoint_dir(tmp_path / "pair", "scorer").iterdir()]
  assert all(n.isdigit() for n in names) and max(map(int, names)) == END, names

  killed = tmp_path / "killed"
  procs = _start_pair(killed, logs)
  deadline = time.time() + 300
  while f"scorer step 7/{END}" not in logs[1].read_text():
    assert time.time() < deadline and procs[1].poll() is None, logs[1].read_text()[-2000:]
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  try:  # Its peer cannot finish a collective step without it; stop it if it waits.
    procs[0].wait(timeout=20)
  except subprocess.TimeoutExpired:
    procs[0].kill()
  procs[0].wait()
  saved = checkpoints.checkpoint_steps(killed, "scorer")
  assert saved and saved[-1] < END, saved
  procs = _start_pair(killed, logs)  # The same command again, on both.
  assert [p.wait(timeout=300) for p in procs] == [0, 0], logs[0].read_text()[-2000:]
  _assert_equal(killed, reference)
