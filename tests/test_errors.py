"""What the CLIs' log filter (`errors._not_chatty_info`) lets through to the terminal."""

import logging

import pytest

from aigc_jax import errors


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
  assert errors._not_chatty_info(_record(pathname, level, msg, *args)) is shown
