"""Failures that train.py and eval.py report as one line (shared by training and inference)."""


class TrainingError(Exception):
  """A failure that train.py and eval.py report as one line, without a traceback."""


class CheckpointError(TrainingError):
  """Checkpoints of a stage exist but none of them restores."""


class ConfigFileError(TrainingError, ValueError):
  """A workdir's config.json that train.py did not write (not JSON, not an object, no sections)."""


class DataError(TrainingError):
  """The data a run needs cannot be found or read (the message says where to get it)."""


class CheckpointFallbackWarning(UserWarning):
  """Inference loaded an older checkpoint because the newer ones do not restore."""


def one_line(error: BaseException) -> str:
  """An exception as one line: its first non-empty line, else its type."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__
