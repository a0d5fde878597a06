"""The training loop end to end: exact resume in a new process, CLI errors, divergence, faults."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aigc_jax import checkpoints, runs, train
from aigc_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"data.image_size": 8, "model.width": 8, "model.latent_dim": 8, "train.batch_size": 16,
        "train.log_every": 5, "train.checkpoint_every": 10, "train.sample_every": 10,
        "train.num_sample_images": 4}


def config_file(name: str):
  """`get_config()` of configs/NAME.py."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def quickstart(**overrides):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  try:
    import quickstart as q
  finally:
    sys.path.pop(0)
  config = q.get_config()
  config.update_from_flattened_dict({**TINY, **overrides})
  return config


def cli(module, *args):
  """Runs `python -m module args` in a new process; returns (returncode, stdout, stderr)."""
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


def train_cli(workdir, num_steps, *extra):
  flags = [f"--config.{k}={v}" for k, v in {**TINY, "train.num_steps": num_steps}.items()]
  return cli("aigc_jax.train", "--config=configs/quickstart.py", f"--workdir={workdir}", *flags, *extra)


@pytest.fixture(scope="module")
def run_20_steps(tmp_path_factory):
  """A 20-step quickstart run in one go (in this process)."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train.train_and_evaluate(quickstart(**{"train.num_steps": 20}), workdir)
  return workdir


def test_resume_in_a_new_process_gives_identical_parameters(run_20_steps, tmp_path):
  workdir = str(tmp_path / "resumed")
  train.train_and_evaluate(quickstart(**{"train.num_steps": 10}), workdir)
  rc, _, err = train_cli(workdir, 20, "--verbosity=0")
  assert rc == 0, err
  assert "steps_per_sec" in err  # --verbosity=0 shows the libraries' INFO records on the terminal too
  _, resumed, step = runs.load_run(workdir)
  _, uninterrupted, _ = runs.load_run(run_20_steps)
  assert step == 20 and int(resumed.step) == 20
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_00000010.png", "step_00000020.png"]


def test_keeps_the_last_k_checkpoints(tmp_path):
  workdir = str(tmp_path / "keep")
  train.train_and_evaluate(quickstart(**{"train.num_steps": 30, "train.keep_checkpoints": 2}), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "30"]


def test_bad_config_is_one_line_and_nonzero_exit(tmp_path):
  rc, _, err = cli("aigc_jax.train", "--config=configs/quickstart.py", f"--workdir={tmp_path}/w",
                   "--config.data.image_size=48")
  assert rc == 2
  assert err.strip().splitlines()[-1].startswith("error: config.data.image_size=48")
  assert "Traceback" not in err
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_bad_flags_are_one_line_and_nonzero_exit(tmp_path):
  cases = {  # flags -> the start of the one error line
      ("--config=configs/missing.py",):
          "error: --config: cannot load the config file: [Errno 2] No such file or directory: "
          "'configs/missing.py'",
      ("--config=configs/missing.py", "--config.train.batch_size=8"):
          "error: --config: cannot load the config file: [Errno 2]",
      ("--config=configs/quickstart.py", "--config.train.bacth_size=8"):
          "error: --config.train.bacth_size: the config has no key 'bacth_size' "
          "(Did you mean \"batch_size\" instead of \"bacth_size\"?)",
      ("--config=configs/quickstart.py", "--config.nosuch.key=1"):
          "error: --config.nosuch.key: the config has no key 'nosuch'",
      ("--config=configs/quickstart.py", "--config.train.batch_size=eight"):
          "error: flag --config.train.batch_size=eight: invalid literal for int()",
      ("--config=configs/quickstart.py", "--no_such_flag"): "error: Unknown command line flag 'no_such_flag'",
  }
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = {flags: subprocess.Popen([sys.executable, "-m", "aigc_jax.train", f"--workdir={tmp_path}/w", *flags],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for flags in cases}
  for flags, proc in procs.items():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (flags, err)
    assert err.strip().splitlines()[-1].startswith(cases[flags]), (flags, err)
    assert "Traceback" not in err, (flags, err)
  assert not os.path.exists(tmp_path / "w")


def test_missing_data_or_an_unusable_workdir_fail_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match="split 'validation' is not in dataset 'digits'"):
    train.train_and_evaluate(quickstart(**{"data.split": "validation"}), str(workdir))
  assert not workdir.exists()
  (tmp_path / "a_file").write_text("keep me")
  with pytest.raises(UserError, match="cannot use .*a_file/checkpoints' for checkpoints: Not a directory"):
    train.train_and_evaluate(quickstart(), str(tmp_path / "a_file"))
  assert (tmp_path / "a_file").read_text() == "keep me"


def test_a_non_finite_state_is_never_saved(tmp_path):
  """learning_rate=1e39 overflows float32: the VAE's losses at step 1 are finite, its new state not."""
  workdir = str(tmp_path / "diverge")
  config = quickstart(**{"model.family": "vae", "model.name": "conv_vae", "train.num_steps": 10,
                         "train.learning_rate": 1e39, "train.checkpoint_every": 1})
  with pytest.raises(train.TrainingDiverged, match=r"^training diverged at step 1: the train state holds "
                     r"NaN or infinite values \(params/.*\) and was not saved; no checkpoint was written$"):
    train.train_and_evaluate(config, workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  with pytest.raises(UserError, match="no checkpoint in"):
    runs.load_run(workdir)


def test_resume_refuses_another_experiment_and_leaves_the_run_as_it_was(run_20_steps, tmp_path):
  """A mistyped --workdir, or a changed config: one line listing the differences, nothing rotated."""
  workdir = str(tmp_path / "theirs")
  shutil.copytree(run_20_steps, workdir)
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(UserError, match=r"holds a run trained with another config \(model.width 8 -> 16, "
                                      r"train.learning_rate 0.0002 -> 0.01\); resuming would change"):
    train.train_and_evaluate(quickstart(**{"train.num_steps": 40, "model.width": 16,
                                           "train.learning_rate": 1e-2, "train.keep_checkpoints": 1}), workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]


def test_training_resumes_past_a_damaged_checkpoint_and_replaces_it(run_20_steps, tmp_path, capsys):
  from tests.test_checkpoints import truncate_largest_file
  workdir = str(tmp_path / "damaged")
  shutil.copytree(run_20_steps, workdir)
  truncate_largest_file(os.path.join(workdir, "checkpoints", "20"))
  capsys.readouterr()
  resumed = train.train_and_evaluate(quickstart(**{"train.num_steps": 20}), workdir)
  warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith("warning: the checkpoint at step 20 ")
  assert " is damaged (OUT_OF_RANGE: " in warnings[0] and warnings[0].endswith("): skipped, using step 10")
  _, uninterrupted, _ = runs.load_run(run_20_steps)
  _, rewritten, step = runs.load_run(workdir)  # step 20 again, and readable
  assert step == 20
  for a, b, c in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), jax.tree.leaves(rewritten),
                     strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, c)


def test_a_resume_with_another_steps_per_dispatch_ends_on_every_checkpoint(run_20_steps, tmp_path):
  """The issue's case: 10 steps, then to 20 with k=4 and checkpoint_every=8 (the loop met 14, 18)."""
  workdir = str(tmp_path / "k4")
  shutil.copytree(run_20_steps, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))  # as if the first run had stopped at 10
  train.train_and_evaluate(quickstart(**{"train.num_steps": 20, "train.steps_per_dispatch": 4,
                                         "train.checkpoint_every": 8, "train.log_every": 4,
                                         "train.sample_every": 20}), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["10", "16", "20"]
  _, resumed, _ = runs.load_run(workdir)
  _, uninterrupted, _ = runs.load_run(run_20_steps)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # The safe changes are allowed, and recorded: config.json and the log say what the run is now.
  assert checkpoints.read_config(workdir).train.steps_per_dispatch == 4
  log = open(os.path.join(workdir, "train.log")).read()
  assert ("resuming from step 10 with train.log_every 5 -> 4, train.checkpoint_every 10 -> 8, "
          "train.sample_every 10 -> 20, train.steps_per_dispatch 1 -> 4") in log
  resumed_log = log.split("resuming from step 10")[1]  # the log of the first run comes before
  assert [line.split("aigc_jax.lines: ")[1].split(":")[0] for line in resumed_log.splitlines()
          if "aigc_jax.lines: step " in line] == ["step 12/20", "step 16/20", "step 20/20"]


# `python -m aigc_jax.train` whose batch for step HOLD_AT waits until the file GO exists (having
# written MARKER), so that a signal sent in between arrives at a known step.
HELD = """
import os, time
from aigc_jax import data, train
from aigc_jax.errors import run_main

real = data.create_train_iterator


class Held:
  def __init__(self, batches, step):
    self.batches, self.step = batches, step

  def __enter__(self):
    self.batches.__enter__()
    return self

  def __exit__(self, *exc):
    return self.batches.__exit__(*exc)

  def __next__(self):
    self.step += 1
    if self.step == int(os.environ["HOLD_AT"]):
      open(os.environ["MARKER"], "w").close()
      while not os.path.exists(os.environ["GO"]):
        time.sleep(0.01)
    return next(self.batches)


data.create_train_iterator = lambda config, mesh, *, start_step=0: Held(
    real(config, mesh, start_step=start_step), start_step)
train.define_flags()
run_main(train.main)
"""


def test_sigterm_saves_at_the_next_step_boundary_and_resuming_continues_exactly(run_20_steps, tmp_path):
  workdir, marker, go = tmp_path / "preempted", tmp_path / "at_step_8", tmp_path / "go"
  flags = [f"--config.{k}={v}" for k, v in {**TINY, "train.num_steps": 1000}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "HOLD_AT": "8", "MARKER": str(marker), "GO": str(go)}
  proc = subprocess.Popen([sys.executable, "-c", HELD, "--config=configs/quickstart.py",
                           f"--workdir={workdir}", *flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  go.touch()
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  assert os.listdir(workdir / "checkpoints") == ["8"]
  assert err.rstrip().endswith("stopped at step 8 on SIGTERM, with a checkpoint there: run the same "
                               "command again to resume")
  # The terminal: the bar and one line per log interval; the INFO detail only in train.log.
  assert "step 5/1000: d_fake " in err
  assert "steps_per_sec" not in err and "Traceback" not in err
  log = (workdir / "train.log").read_text()
  assert "steps_per_sec" in log and "step 5/1000: d_fake " in log and "stopped at step 8" in log

  resumed = train.train_and_evaluate(quickstart(**{"train.num_steps": 20}), str(workdir))
  _, uninterrupted, _ = runs.load_run(run_20_steps)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
    np.testing.assert_array_equal(a, b)


def _tensorboard_tags(workdir):
  """Tag -> plugin name of every summary in the run's event files, read with TensorFlow."""
  import tensorflow as tf
  tags = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags[value.tag] = value.metadata.plugin_data.plugin_name
  return tags


def test_tensorboard_has_scalars_sample_grids_and_the_config(run_20_steps):
  tags = _tensorboard_tags(run_20_steps)
  assert {tags[t] for t in ("d_loss", "g_loss", "steps_per_sec")} == {"scalars"}
  assert tags["samples"] == "images"
  assert tags["config"] == "text"


def test_workdir_files_round_trip_through_a_url_filesystem():
  import tensorflow as tf
  config = quickstart()
  checkpoints.write_config("ram://run", config)
  checkpoints.write_file("ram://run/samples/a.png", b"png")
  assert checkpoints.read_config("ram://run").to_dict() == config.to_dict()
  assert tf.io.gfile.GFile("ram://run/samples/a.png", "rb").read() == b"png"
  assert checkpoints.checkpoint_dir("ram://run") == "ram://run/checkpoints"


def test_k_steps_per_dispatch_on_sharded_parameters_equal_k_single_steps(run_20_steps, tmp_path):
  workdir = str(tmp_path / "scan")
  every = {"train.log_every": 10, "train.checkpoint_every": 10, "train.sample_every": 10}
  sharded = {"train.fsdp_devices": 2, "train.fsdp_min_kib": 0}
  final = train.train_and_evaluate(quickstart(**{"train.num_steps": 20, "train.steps_per_dispatch": 2,
                                                 **every, **sharded}), workdir)
  assert "fsdp" in final.g_params["ConvTransposeFromVector_0"]["kernel"].sharding.spec
  _, scanned, _ = runs.load_run(workdir)
  _, single, _ = runs.load_run(run_20_steps)
  for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(single), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_on_device_data_trains_to_the_same_parameters(run_20_steps, tmp_path):
  """data.on_device gives the host pipeline's batches, so the run ends in the same state."""
  workdir = str(tmp_path / "on_device")
  train.train_and_evaluate(quickstart(**{"train.num_steps": 20, "data.on_device": True}), workdir)
  _, on_device, _ = runs.load_run(workdir)
  _, host, _ = runs.load_run(run_20_steps)
  for a, b in zip(jax.tree.leaves(on_device), jax.tree.leaves(host)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
