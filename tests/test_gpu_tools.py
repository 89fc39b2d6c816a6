"""tools/gpu/chunk.sh, the device runbook's one command (docs/gpu.md), run here on the CPU."""

import os
import pathlib
import subprocess
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[1]
CHUNK = REPO / "tools" / "gpu" / "chunk.sh"


def _checkout(tmp_path: pathlib.Path) -> pathlib.Path:
  """A folder that looks like the repo root to chunk.sh (it writes workdir/ and reads .pack/)."""
  root = tmp_path / "repo"
  root.mkdir()
  for name in ("train.py", "eval.py", "configs", "spiralnet_jax"):
    (root / name).symlink_to(REPO / name)
  return root


def _chunk(root: pathlib.Path, out: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, OUT=str(out))
  # chunk.sh calls `python3`: let it be this interpreter.
  env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
  return subprocess.run(["bash", str(CHUNK), *args], cwd=root, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def test_usage_errors(tmp_path):
  proc = _chunk(tmp_path, tmp_path, "name", "60")  # Training needs a --config.
  assert proc.returncode == 2
  assert proc.stderr.startswith("usage: bash tools/gpu/chunk.sh NAME SECONDS")


def test_a_chunk_trains_and_returns_the_workdir_and_the_next_one_resumes_it(tmp_path):
  root, out = _checkout(tmp_path), tmp_path / "out"
  out.mkdir()
  args = ("tiny", "300", "--config=configs/test.py", "--config.stages=('scorer',)")
  proc = _chunk(root, out, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  log = (out / "tiny.log").read_text()
  assert "train.py exit status: 0" in log
  with tarfile.open(out / "tiny.tar") as tar:
    names = set(tar.getnames())
  assert {"tiny/config.json", "tiny/metrics.jsonl", "tiny/checkpoints/scorer/2"} <= names

  # The next chunk gets the tar back in .pack/ and starts from its checkpoint: nothing to redo.
  (root / ".pack").mkdir()
  (out / "tiny.tar").rename(root / ".pack" / "tiny.tar")
  (root / "workdir").rename(tmp_path / "first-workdir")  # As on a fresh machine.
  proc = _chunk(root, out, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "scorer: resumed from step 2" in (out / "tiny.log").read_text()
