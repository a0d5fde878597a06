"""User-facing errors and the wrapper that turns them into one line and an exit code."""

from __future__ import annotations

import logging
import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
  """A mistake in the user's input (flags, config, files): reported as one line, no traceback."""


EXIT_USER_ERROR = 2

# Libraries whose INFO lines (every checkpoint read/write, every dataset open) drown the training
# progress in a terminal; their warnings and errors still show.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")
# Warnings about what the CLIs do on purpose: sample and evaluate open checkpoints read-only.
_EXPECTED_WARNINGS = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")


def _not_chatty_info(record: logging.LogRecord) -> bool:
  if record.levelno >= logging.WARNING:
    return not str(record.msg).startswith(_EXPECTED_WARNINGS)
  return not any(part in record.pathname for part in _CHATTY_LIBRARIES)


def _exit_with(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _one_line(message: str) -> str:
  """The first line of a multi-line library message and its last (where the cause is), joined."""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def _override_named(argv: Sequence[str], key: str) -> str:
  """The `--config.a.b=v` flag in argv whose path has the component `key` (else a generic name)."""
  for arg in argv:
    path = arg.split("=", 1)[0]
    if path.startswith("--config.") and key in path.split("."):
      return path
  return "a --config override"


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every mistake in the flags reported as one line and exit 2.

  absl itself prints "FATAL Flags parsing error" and exits 1, and ml_collections' config flag
  raises plain exceptions: a missing config file (deferred until the config is first read), or
  an override naming a key the config does not have.
  """
  from absl import flags
  try:
    rest = flags.FLAGS(list(argv))
    if "config" in flags.FLAGS:
      getattr(flags.FLAGS.config, "keys", None)  # raises the config file's deferred load error
    return rest
  except flags.Error as e:  # unknown flag, malformed value
    _exit_with(_one_line(str(e)))
  except OSError as e:  # its last line is the cause, e.g. "[Errno 2] No such file or directory: ..."
    _exit_with(f"--config: cannot load the config file: {str(e).strip().splitlines()[-1].strip()}")
  except (AttributeError, KeyError) as e:
    cause = e  # ml_collections wraps the KeyError that carries the message in an AttributeError
    while isinstance(cause, BaseException) and cause.args:
      cause = cause.args[0]
    lines = str(cause).split("\n")
    key = lines[0].strip("'\"")
    hint = f" ({lines[-1]})" if len(lines) > 1 else ""
    _exit_with(f"{_override_named(argv, key)}: the config has no key {key!r}{hint}; "
               "every key and its default: aigc_jax/config.py")


def run_main(main: Callable[[Sequence[str]], None]) -> None:
  """Runs an absl `main` so that a `UserError` or a bad flag prints one line on stderr and exits 2."""
  from absl import app  # Imported here so library users never pay for absl's flag parsing.
  from absl import logging as absl_logging

  def guarded(argv: Sequence[str]) -> None:
    # On absl's handler, not its logger: the handler also prints what other loggers (jax's) propagate.
    absl_logging.get_absl_handler().addFilter(_not_chatty_info)
    try:
      main(argv)
    except UserError as e:
      _exit_with(str(e))

  app.run(guarded, flags_parser=_parse_flags)
