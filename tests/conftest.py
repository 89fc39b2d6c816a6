"""Shared test fixtures: where BBBC039 lives, and whether its absence is allowed."""

import importlib
import os
import pathlib

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]
_DEFAULT_BBBC039 = _REPO.parent / "shared" / "data" / "bbbc039"


def _bbbc039_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("SPIRALNET_BBBC039_DIR") or _DEFAULT_BBBC039)


@pytest.fixture(scope="session")
def bbbc039_dir() -> pathlib.Path:
  """The full BBBC039 directory; under CI its absence is a failure, elsewhere a skip."""
  path = _bbbc039_dir()
  if not (path / "metadata" / "training.txt").is_file():
    reason = (f"BBBC039 not found at {path}: set SPIRALNET_BBBC039_DIR to a directory with "
              "images/, masks/ and metadata/ (https://bbbc.broadinstitute.org/BBBC039)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
      pytest.fail(reason)
    pytest.skip(reason)
  return path


def optional_module(name: str, extra: str):
  """Imports an optional dependency; under CI its absence is a failure, elsewhere a skip."""
  try:
    return importlib.import_module(name)
  except ImportError as e:
    reason = f"{name} is not installed ({e}): pip install -e \".[test,{extra}]\""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
      pytest.fail(reason)
    pytest.skip(reason)
