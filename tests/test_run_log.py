"""Terminal lines and the workdir's log file."""

import logging

from absl import logging as absl_logging

from aigc_jax import run_log


def test_lines_reach_the_terminal_once_and_the_log_file_with_every_record(tmp_path, capsys):
  library = logging.getLogger("some.library")
  library.setLevel(logging.INFO)
  with run_log.log_file(str(tmp_path)) as path:
    run_log.line("step 5/10: loss 0.5")
    run_log.warn("the checkpoint at step 20 is damaged")
    library.info("detail for the file")
  run_log.line("after the block")
  assert capsys.readouterr().err.splitlines() == [
      "step 5/10: loss 0.5", "warning: the checkpoint at step 20 is damaged", "after the block"]
  log = open(path).read().splitlines()
  assert [line.split(": ", 1)[1] for line in log] == [
      "step 5/10: loss 0.5", "warning: the checkpoint at step 20 is damaged", "detail for the file"]
  assert " INFO some.library: " in log[2]
  assert path == str(tmp_path / run_log.LOG_FILE)
  assert not any(getattr(h, "baseFilename", None) == path for h in logging.getLogger().handlers)


def test_url_workdirs_have_no_log_file():
  with run_log.log_file("gs://bucket/run") as path:
    assert path is None


def test_the_terminal_keeps_info_records_off_unless_verbosity_is_given():
  handler = absl_logging.get_absl_handler()
  level = handler.level
  try:
    run_log.quiet_terminal(verbosity_given=True)
    assert handler.level == level
    run_log.quiet_terminal(verbosity_given=False)
    assert handler.level == logging.WARNING
  finally:
    handler.setLevel(level)
