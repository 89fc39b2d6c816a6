"""train.py and eval.py report a user's mistake in one `<program>: error: ...` line, exit 1."""

import pathlib
import subprocess
import sys

import pytest

from spiralnet_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  return lines[0]


def test_unknown_field_names_the_flag_and_the_suggestion():
  error = AttributeError('Did you mean "learning_rate" instead of "learning_rat"?')
  argv = ["train.py", "--config=configs/demo.py", "--config.scorer.learning_rat=1"]
  assert (cli.unknown_field(argv, error)
          == "unknown config field 'scorer.learning_rat' (did you mean 'learning_rate'?)")


def test_unknown_field_without_a_suggestion():
  error = KeyError("zzz")
  argv = ["eval.py", "--config.data.zzz=1"]
  assert cli.unknown_field(argv, error) == "unknown config field 'data.zzz'"


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_misspelt_config_field(script, tmp_path):
  proc = _run(script, "--config=configs/test.py", f"--workdir={tmp_path}",
              "--config.scorer.learning_rat=0.1")
  assert _one_error_line(proc) == (f"{script}: error: unknown config field "
                                   "'scorer.learning_rat' (did you mean 'learning_rate'?)")
  assert not list(tmp_path.iterdir())  # Nothing trained, nothing written.


def test_eval_of_a_workdir_without_config(tmp_path):
  proc = _run("eval.py", f"--workdir={tmp_path}")
  assert _one_error_line(proc) == (f"eval.py: error: no config.json in {tmp_path}; "
                                   "pass the config explicitly")


def test_eval_of_a_workdir_without_checkpoints(tmp_path):
  proc = _run("eval.py", "--config=configs/test.py", f"--workdir={tmp_path}")
  assert _one_error_line(proc).startswith(f"eval.py: error: no trained model in {tmp_path}: ")
