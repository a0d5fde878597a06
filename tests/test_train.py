"""The training loop end to end: exact resume in a new process, CLI errors, divergence."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import checkpoints, runs, train
from aigc_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"data.image_size": 8, "model.width": 8, "model.latent_dim": 8, "train.batch_size": 16,
        "train.log_every": 5, "train.checkpoint_every": 10, "train.sample_every": 10,
        "train.num_sample_images": 4}


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
  rc, _, err = train_cli(workdir, 20)
  assert rc == 0, err
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


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "diverge")
  train.train_and_evaluate(quickstart(**{"train.num_steps": 10}), workdir)
  with pytest.raises(UserError, match=r"diverged at step 15: .* last good checkpoint \(step 10\)"):
    train.train_and_evaluate(quickstart(**{"train.num_steps": 20, "train.learning_rate": 1e30,
                                           "gan.d_learning_rate": 1e30}), workdir)
  _, _, step = runs.load_run(workdir)
  assert step == 10


def test_resuming_with_a_config_of_another_state_shape_is_a_clear_error(tmp_path):
  workdir = str(tmp_path / "mismatch")
  train.train_and_evaluate(quickstart(**{"train.num_steps": 10}), workdir)
  with pytest.raises(UserError, match=r"checkpoint at step 10 .* does not fit this config's train state"):
    train.train_and_evaluate(quickstart(**{"train.num_steps": 20, "model.width": 16}), workdir)
  # The run's own config stays on disk.
  assert checkpoints.read_config(workdir).model.width == 8


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
