"""Training's failures (each reported by train.py as one line) and its stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

import jax

# Also here so that one module names every failure of training (CheckpointError comes from
# restoring, which inference shares).
from spiralnet_jax.errors import CheckpointError, TrainingError  # pylint: disable=unused-import


class ConfigMismatchError(TrainingError, ValueError):
  """The workdir was written by a config that differs where resuming would not be exact."""


class NonFiniteError(TrainingError, FloatingPointError):
  """A non-finite loss or gradient norm; the state of that step was not saved."""


class BatchSizeError(TrainingError, ValueError):
  """A global batch that does not split evenly over the devices of the data mesh."""


class Stopped(Exception):
  """Training stopped on a signal after saving the current step; rerunning resumes it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class StopRequest:
  """Context that turns SIGTERM into a request the training loop honours after its step.

  Only in a single process's main thread: several hosts would have to agree on the step to stop
  at, so there SIGTERM keeps its default (the run resumes from its last checkpoint).
  """

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = None

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.signum = signum

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
