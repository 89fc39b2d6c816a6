"""What every benchmark script shares: the repository's default config and its git commit."""

import importlib.util
import pathlib
import subprocess

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def default_config() -> ml_collections.ConfigDict:
  """configs/default.py's config (loaded by path: benchmarks run as plain scripts)."""
  spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def git_commit() -> str:
  """HEAD's commit, with "+dirty" if the working tree has changes; "unknown" outside git."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    # Untracked files (e.g. the JSON a benchmark is writing) do not make the code dirty.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
