"""Command-line plumbing shared by train.py and eval.py: errors as one line, not a traceback."""

import re
import sys
from typing import Callable, NoReturn, Sequence

from absl import app


def unknown_field(argv: Sequence[str], error: Exception) -> str:
  """A one-line message naming the `--config.<path>` whose field the config does not have."""
  text = str(error)
  hint = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
  missing = hint.group(2) if hint else (re.findall(r"\w+", text) or ["?"])[0]
  path = missing
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--config.") and missing in name.split(".")[1:]:
      path = name.removeprefix("--config.")
  suggestion = f" (did you mean {hint.group(1)!r}?)" if hint else ""
  return f"unknown config field {path!r}{suggestion}"


def fail(program: str, message: str) -> NoReturn:
  """Exits with status 1 after one `<program>: error: <message>` line on stderr."""
  sys.exit(f"{program}: error: {message}")


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
  """An `app.run` flags_parser that reports an unknown `--config.<field>` in one line."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return app.parse_flags_with_usage(argv)
    except (KeyError, AttributeError) as e:
      # config_flags raises a bare KeyError / AttributeError ("Did you mean ...") for a field
      # the config does not have; with lock_config=True no new field can be added.
      fail(program, unknown_field(argv, e))

  return parse
