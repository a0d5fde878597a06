"""User-facing errors and the wrapper that turns them into one line and an exit code."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence


class UserError(Exception):
  """A mistake in the user's input (flags, config, files): reported as one line, no traceback."""


EXIT_USER_ERROR = 2

# Libraries whose INFO lines (every checkpoint read/write, every dataset open) drown the training
# progress in a terminal; their warnings and errors still show.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")


def _not_chatty_info(record: logging.LogRecord) -> bool:
  return record.levelno >= logging.WARNING or not any(
      part in record.pathname for part in _CHATTY_LIBRARIES)


def run_main(main: Callable[[Sequence[str]], None]) -> None:
  """Runs an absl `main` so that a `UserError` prints one line on stderr and exits 2."""
  from absl import app  # Imported here so library users never pay for absl's flag parsing.

  def guarded(argv: Sequence[str]) -> None:
    logging.getLogger("absl").addFilter(_not_chatty_info)
    try:
      main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)

  app.run(guarded)
