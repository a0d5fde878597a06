"""The CLIs' error handling: the log filter, seed ranges, config files that fail to load."""

import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import errors
from aigc_jax.errors import UserError
from tests.test_train import ROOT


def _record(pathname: str, level: int, msg: str, *args) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, msg, args, None)


@pytest.mark.parametrize("pathname, level, msg, args, shown", [
    ("/site-packages/orbax/checkpoint/checkpoint_manager.py", logging.INFO, "Saving step %d", (10,), False),
    ("/site-packages/tensorflow_datasets/core/reader.py", logging.INFO, "Creating a tf.data.Dataset", (), False),
    ("/site-packages/jax/_src/xla_bridge.py", logging.INFO, "Unable to initialize backend 'tpu'", (), False),
    ("/site-packages/orbax/checkpoint/checkpoint_manager.py", logging.WARNING,
     "Given directory is read only=%s", ("/run/checkpoints",), False),
    ("/site-packages/orbax/checkpoint/checkpoint_manager.py", logging.WARNING,
     "CheckpointManagerOptions.read_only=True, setting save_interval_steps=0.", (), False),
    ("/site-packages/orbax/checkpoint/checkpoint.py", logging.WARNING,
     "Metadata file does not exist: %s", ("/run/checkpoints/10",), True),
    ("/site-packages/orbax/checkpoint/checkpoint_manager.py", logging.ERROR, "Failed to save", (), True),
    ("/work/aigc_jax/train.py", logging.INFO, "step %d", (5,), True),
])
def test_library_info_and_expected_warnings_are_hidden_the_rest_shown(pathname, level, msg, args, shown):
  assert errors.shows_log_record(_record(pathname, level, msg, *args)) is shown


@pytest.mark.parametrize("seed", [0, 7, errors.MAX_SEED])
def test_seeds_jax_random_key_keeps_whole_pass(seed):
  assert errors.check_seed("--seed", seed) == seed
  # The check's reason: within the range distinct seeds are distinct keys; 2**32 would be seed 0's key.
  assert not np.array_equal(jax.random.key_data(jax.random.key(seed)),
                            jax.random.key_data(jax.random.key((seed + 1) % 2 ** 32)))
  np.testing.assert_array_equal(jax.random.key_data(jax.random.key(2 ** 32)),
                                jax.random.key_data(jax.random.key(0)))


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 63, True, 1.5, "3"])
def test_seeds_out_of_range_are_one_line_stating_the_range(seed):
  with pytest.raises(UserError) as e:
    errors.check_seed("--seed", seed)
  assert str(e.value) == (f"--seed={seed!r} is not valid: a seed is an integer from 0 to 4294967295 "
                          "(jax.random.key keeps 32 bits of it)")


_CONFIG_FILES = {  # file text -> the one line, after "--config: ", with FILE for the file's path
    "def get_config(:\n": "cannot load the config file: FILE, line 1: SyntaxError: invalid syntax",
    "def get_config():\n  x = 1\n   y = 2\n": "cannot load the config file: FILE, line 3: IndentationError: unexpected indent",
    "def get_config():\n  return foo\n": "cannot load the config file: FILE, line 2: NameError: name 'foo' is not defined",
    "import no_such_module_here\n": "cannot load the config file: FILE, line 1: ModuleNotFoundError: No module named "
                                   "'no_such_module_here'",
    "def get_config():\n  raise ValueError('no\\nway')\n": "cannot load the config file: FILE, line 2: ValueError: no ... way",
    "def get_config():\n  return open('/no/such/file')\n": "cannot load the config file: FILE, line 2: FileNotFoundError: "
                                                         "[Errno 2] No such file or directory: '/no/such/file'",
    "def get_config(name):\n  return None\n": "cannot load the config file: FILE: TypeError: get_config() missing 1 "
                                              "required positional argument: 'name'",
    "CONFIG = {}\n": "cannot load the config file: FILE defines no get_config() function",
    "def get_config():\n  return {'seed': 1}\n": "FILE: get_config() returned a dict, not an ml_collections.ConfigDict; "
                                                "start from aigc_jax.config.base_config()",
    "def get_config():\n  pass\n": "FILE: get_config() returned None, not an ml_collections.ConfigDict; "
                                  "start from aigc_jax.config.base_config()",
    "from aigc_jax.config import base_config\ndef get_config():\n  c = base_config()\n  del c['train']\n"
    "  return c\n": "FILE: the config lacks train; start from aigc_jax.config.base_config()",
    "from aigc_jax.config import base_config\ndef get_config():\n  c = base_config()\n  del c.train['num_steps']\n"
    "  return c\n": "FILE: the config lacks train.num_steps; start from aigc_jax.config.base_config()",
}


def _config_parser():
  """The train CLI's parser of --config; each CLI process loads one file, each test here one too."""
  from ml_collections.config_flags import config_flags
  sys.modules.pop("config_config", None)  # ml_collections reuses the module object a previous load left
  return config_flags.ConfigFileFlagParser(name="config")


@pytest.mark.parametrize("text", list(_CONFIG_FILES))
def test_a_config_file_that_fails_is_one_line_naming_the_file_and_the_problem(tmp_path, text):
  path = str(tmp_path / "bad.py")
  with open(path, "w") as f:
    f.write(text)
  with pytest.raises(UserError) as e:
    errors.load_config_file(_config_parser().parse, path)
  assert str(e.value) == "--config: " + _CONFIG_FILES[text].replace("FILE", path)


def test_a_missing_config_file_and_a_good_one(tmp_path):
  with pytest.raises(UserError, match=r"^--config: cannot load the config file: \[Errno 2\] No such file or "
                                      r"directory: '.*nope\.py'$"):
    errors.load_config_file(_config_parser().parse, str(tmp_path / "nope.py"))
  config = errors.load_config_file(_config_parser().parse, os.path.join(ROOT, "configs", "quickstart.py"))
  assert config.data.dataset == "digits" and config.is_locked


def test_a_bad_config_file_on_the_command_line_is_one_line_and_exit_2(tmp_path):
  dict_config = tmp_path / "dict_config.py"
  dict_config.write_text("def get_config():\n  return {'seed': 1}\n")
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.train", f"--config={dict_config}", f"--workdir={tmp_path}/w"],
                        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --config: {dict_config}: get_config() returned a dict, not an ml_collections.ConfigDict; "
      "start from aigc_jax.config.base_config()")
  assert not (tmp_path / "w").exists()
