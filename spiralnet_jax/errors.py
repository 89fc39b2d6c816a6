"""Failures that train.py and eval.py report as one line (shared by training and inference)."""


class TrainingError(Exception):
  """A failure that train.py and eval.py report as one line, without a traceback."""


class CheckpointError(TrainingError):
  """Checkpoints of a stage exist but none of them restores."""


class DataError(TrainingError):
  """The data a run needs cannot be found or read (the message says where to get it)."""
