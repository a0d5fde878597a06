"""User-facing errors, the seed check every CLI shares, and the wrapper that turns errors into one
line and an exit code: for bad flags, config files that do not load, and help requests (exit 0)."""

from __future__ import annotations

import logging
import numbers
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence


class UserError(Exception):
  """A mistake in the user's input (flags, config, files): reported as one line, no traceback."""


EXIT_USER_ERROR = 2
# jax.random.key keeps 32 bits of a seed (without x64): larger or negative seeds would alias others.
MAX_SEED = 2 ** 32 - 1
# absl's help flags, which print the usage and exit 1 while the flags are parsed.
_HELP_FLAG = re.compile(r"--?(help|helpshort|helpfull|helpxml|\?)(=.*)?")

# Libraries whose INFO lines (every checkpoint read/write, every dataset open) drown the training
# progress in a terminal; their warnings and errors still show.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")
# Warnings about what the CLIs do on purpose: sample and evaluate open checkpoints read-only.
_EXPECTED_WARNINGS = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")


def shows_log_record(record: logging.LogRecord) -> bool:
  """The absl log filter: warnings unless expected, info only from outside the chatty libraries."""
  if record.levelno >= logging.WARNING:
    return not str(record.msg).startswith(_EXPECTED_WARNINGS)
  return not any(part in record.pathname for part in _CHATTY_LIBRARIES)


def check_seed(name: str, seed: Any) -> int:
  """Returns `seed` if jax.random.key keeps it whole (an integer in 0..MAX_SEED); else raises UserError."""
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
    raise UserError(f"{name}={seed!r} is not valid: a seed is an integer from 0 to {MAX_SEED} "
                    "(jax.random.key keeps 32 bits of it)")
  return int(seed)


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


def _same_file(a: str, b: str) -> bool:
  return os.path.realpath(a) == os.path.realpath(b)


def _config_file_problem(file: str, error: BaseException) -> str:
  """Where in the config file `error` arose (when it did) and what it is, in one line."""
  if isinstance(error, SyntaxError) and error.filename and _same_file(error.filename, file):
    return f"{file}, line {error.lineno}: {type(error).__name__}: {error.msg}"
  # ml_collections re-raises a TypeError or ValueError with the whole traceback as its message.
  if str(error).startswith("Error whilst parsing config file") and error.__context__ is not None:
    error = error.__context__
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if _same_file(f.filename, file)]
  if not lines and isinstance(error, AttributeError) and getattr(error, "name", None) == "get_config":
    return f"{file} defines no get_config() function"
  where = f"{file}, line {lines[-1]}" if lines else file
  return f"{where}: {type(error).__name__}: {_one_line(str(error))}"


def _missing_keys(config: Any, base: Any) -> list[str]:
  """The keys of `base` (a ConfigDict of sections and top-level values) that `config` lacks."""
  missing = []
  for name, value in base.items():
    if name not in config:
      missing.append(name)
    elif hasattr(value, "keys"):
      section = config[name]
      missing += [f"{name}.{key}" for key in value if not hasattr(section, "keys") or key not in section]
  return missing


def load_config_file(parse: Callable[[str], Any], path: str) -> Any:
  """`parse(path)` (ml_collections' loader), with every way a config file can fail as one UserError."""
  import ml_collections
  from aigc_jax import config as config_lib
  file = path.split(":", 1)[0]
  try:
    open(file, "rb").close()
  except OSError as e:  # e.g. "[Errno 2] No such file or directory: 'configs/x.py'"
    raise UserError(f"--config: cannot load the config file: {e}") from None
  try:
    config = parse(path)
    if not isinstance(config, ml_collections.ConfigDict):
      getattr(config, "lock", None)  # raises the OSError ml_collections defers to the config's first use
  except OSError as e:  # the code in the file failed to read a file
    raise UserError("--config: cannot load the config file: "
                    f"{_config_file_problem(file, e.__cause__ or e)}") from None
  except Exception as e:  # the file is Python that runs: any exception can come out of it
    raise UserError(f"--config: cannot load the config file: {_config_file_problem(file, e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    returned = "None" if config is None else f"a {type(config).__name__}"
    raise UserError(f"--config: {file}: get_config() returned {returned}, not an "
                    "ml_collections.ConfigDict; start from aigc_jax.config.base_config()")
  missing = _missing_keys(config, config_lib.base_config())
  if missing:
    raise UserError(f"--config: {file}: the config lacks {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}; start from aigc_jax.config.base_config()")
  return config


def _asks_for_help(argv: Sequence[str]) -> bool:
  flag_args = argv[1:list(argv).index("--")] if "--" in argv else argv[1:]
  return any(_HELP_FLAG.fullmatch(arg) for arg in flag_args)


class _ConfigFileParser:
  """ml_collections' config-file flag parser, reporting a config file that fails to load as a UserError."""

  def __init__(self, parser):
    self._parser = parser

  def __getattr__(self, name: str) -> Any:  # flag_type and the help texts: the wrapped parser's
    if name.startswith("_"):  # not yet set (a copy under construction): no recursion through _parser
      raise AttributeError(name)
    return getattr(self._parser, name)

  def parse(self, path: str) -> Any:
    return load_config_file(self._parser.parse, path)


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every mistake in the flags reported as one line and exit 2.

  absl itself prints "FATAL Flags parsing error" and exits 1, and exits 1 after printing
  --help too; ml_collections' config flag raises plain exceptions: whatever the config file's
  code raises, or an override naming a key the config does not have.
  """
  from absl import flags
  if "config" in flags.FLAGS:
    flags.FLAGS["config"].parser = _ConfigFileParser(flags.FLAGS["config"].parser)
  try:
    return flags.FLAGS(list(argv))
  except SystemExit as e:  # a help request is not a failure
    if e.code == 1 and _asks_for_help(argv):
      sys.exit(0)
    raise
  except BrokenPipeError:  # `--help | head`: the reader has all it wanted
    if not _asks_for_help(argv):
      raise
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes stdout
    sys.exit(0)
  except flags.Error as e:  # unknown flag, malformed value
    _exit_with(_one_line(str(e)))
  except UserError as e:  # the config file
    _exit_with(str(e))
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
    absl_logging.get_absl_handler().addFilter(shows_log_record)
    try:
      main(argv)
    except UserError as e:
      _exit_with(str(e))

  app.run(guarded, flags_parser=_parse_flags)
