"""What a run tells its user: short lines on the terminal, the detail in the workdir's log file.

Libraries (orbax, TFDS, clu, jax) log at INFO through Python's `logging`. The CLIs keep those
records off the terminal unless `--verbosity` asks for them (absl's flag: 0 INFO, 1 DEBUG), so
the terminal shows the progress bar, one `line` per event (a log interval, a skipped checkpoint)
and warnings; a training run writes every record, and every terminal line, to `train.log` in its
workdir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import jax

LOG_FILE = "train.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The terminal lines reach the log file through their own logger, which the terminal's handler
# (absl's, on the root logger) never sees: they are printed once, as they are.
_lines = logging.getLogger("aigc_jax.lines")
_lines.propagate = False
_lines.setLevel(logging.INFO)


def line(message: str, bar=None) -> None:
  """Prints `message` on the terminal (above a tqdm `bar` if one is showing) and logs it; process 0 only."""
  if jax.process_index() != 0:
    return
  if bar is not None:
    bar.write(message, file=sys.stderr)
  else:
    print(message, file=sys.stderr)
  _lines.info(message)


def warn(message: str, bar=None) -> None:
  """A `line` that starts with "warning: "."""
  line(f"warning: {message}", bar)


def quiet_terminal(verbosity_given: bool) -> None:
  """Keeps library INFO records off the terminal (warnings still show) unless --verbosity was given."""
  if not verbosity_given:
    from absl import logging as absl_logging
    absl_logging.get_absl_handler().setLevel(logging.WARNING)


@contextlib.contextmanager
def log_file(workdir: str) -> Iterator[str | None]:
  """Appends every log record and terminal line to `workdir/train.log` while the block runs.

  Process 0 of a local workdir only (yields the path, else None): a URL workdir has no append.
  Records arrive at the levels the loggers let through (a CLI: INFO, DEBUG with --verbosity=1).
  """
  if "://" in workdir or jax.process_index() != 0:
    yield None
    return
  path = os.path.join(os.path.abspath(workdir), LOG_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handler = logging.FileHandler(path, encoding="utf-8")
  handler.setFormatter(logging.Formatter(_FORMAT))
  loggers = (logging.getLogger(), _lines)
  for logger in loggers:
    logger.addHandler(handler)
  try:
    yield path
  finally:
    for logger in loggers:
      logger.removeHandler(handler)
    handler.close()
