"""Checkpoints under fault injection: damaged files, trees that do not fit, non-finite states, drift.

The runs here are real Orbax checkpoints of untrained quickstart states (each step's parameters
shifted by the step, so a restore shows which one it read), written without training.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aigc_jax import checkpoints, parallel, runs, sample, trainers
from aigc_jax.evaluation import scoring
from aigc_jax.errors import UserError
from tests.test_train import ROOT, quickstart
from tests.trainers import test_diffusion


def _state_at(state, step):
  """`state` as if at `step`: the step set, the generator's parameters shifted by `step`."""
  return state.replace(step=jnp.asarray(step, state.step.dtype),
                       g_params=jax.tree.map(lambda x: x + step, state.g_params))


def make_run(workdir, config, steps):
  """A run in `workdir`: config.json and a checkpoint at each of `steps`; returns the step-0 state."""
  keys = trainers.base_keys(config.seed)
  state, _ = trainers.init_sharded_state(config, parallel.create_mesh(), keys["init"])
  manager = checkpoints.create_manager(workdir, config)
  for step in steps:
    checkpoints.save(manager, step, _state_at(state, step), keys["step"])
  manager.close()
  checkpoints.write_config(workdir, config)
  return jax.device_get(state)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run with checkpoints at steps 10 and 20 (copied by each test that damages it)."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = quickstart()
  return workdir, make_run(workdir, config, [10, 20]), config


def _copy(run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(run[0], workdir)
  return workdir


def truncate_largest_file(step_dir):
  """Halves the largest file of the merged OCDBT data, the one that holds the checkpoint's arrays."""
  path = max(glob.glob(os.path.join(step_dir, "default", "d", "*")), key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_array_folders(step_dir):
  for folder in glob.glob(os.path.join(step_dir, "default", "d")) + glob.glob(
      os.path.join(step_dir, "default", "ocdbt.process_*")):
    shutil.rmtree(folder)


def _flip_a_byte(step_dir):
  path = max(glob.glob(os.path.join(step_dir, "default", "d", "*")), key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _delete_tree_metadata(step_dir):
  os.remove(os.path.join(step_dir, "default", "_METADATA"))


DAMAGES = [truncate_largest_file, _delete_array_folders, _flip_a_byte, _delete_tree_metadata]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(run, tmp_path, capsys, damage):
  workdir = _copy(run, tmp_path)
  damage(os.path.join(workdir, "checkpoints", "20"))
  capsys.readouterr()
  _, state, step = runs.load_run(workdir)
  assert step == 10
  expected = _state_at(run[1], 10)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(a, b)
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith(f"warning: the checkpoint at step 20 in '{workdir}/checkpoints' is damaged (")
  assert lines[0].endswith("): skipped, using step 10")
  # Asked for by its step, the damaged checkpoint is refused in one line.
  with pytest.raises(UserError, match="the checkpoint at step 20 .* is damaged"):
    runs.load_run(workdir, 20)


def test_when_every_checkpoint_is_damaged_the_error_names_each(run, tmp_path):
  workdir = _copy(run, tmp_path)
  truncate_largest_file(os.path.join(workdir, "checkpoints", "20"))
  _delete_array_folders(os.path.join(workdir, "checkpoints", "10"))
  with pytest.raises(UserError) as e:
    runs.load_run(workdir)
  message = str(e.value)
  assert message.startswith("no usable checkpoint: the checkpoint at step 20 ")
  assert "; the checkpoint at step 10 " in message and "\n" not in message


def test_a_tree_that_does_not_fit_is_named_and_not_skipped(run, tmp_path):
  """A config.json that no longer matches the checkpoints: "does not fit", with the first difference."""
  workdir = _copy(run, tmp_path)
  stored = json.loads(open(os.path.join(workdir, "config.json")).read())
  stored["model"]["width"] = 16
  open(os.path.join(workdir, "config.json"), "w").write(json.dumps(stored))
  with pytest.raises(UserError, match=r"the checkpoint at step 20 .* does not fit this config's train "
                                      r"state \(\S+ has shape \(.*\) in the checkpoint, \(.*\) in this config\)"):
    runs.load_run(workdir)
  stored["model"]["width"], stored["model"]["d_norm"] = 8, "spectral"  # another tree: spectral-norm vectors
  open(os.path.join(workdir, "config.json"), "w").write(json.dumps(stored))
  with pytest.raises(UserError, match=r"at step 20 .* does not fit .*\(this config.s train state has state/d_collections/"):
    runs.load_run(workdir)


def test_a_state_is_checked_finite_before_it_is_saved(run, tmp_path):
  config = run[2]
  keys = trainers.base_keys(0)
  state = _state_at(run[1], 30)
  poisoned = state.replace(g_params=jax.tree.map(lambda x: jnp.asarray(x).at[..., 0].set(jnp.nan), state.g_params))
  manager = checkpoints.create_manager(str(tmp_path), config)
  with pytest.raises(checkpoints.NonFiniteState, match=r"NaN or infinite values \(g_params/"):
    checkpoints.save(manager, 30, poisoned, keys["step"])
  assert manager.all_steps() == [] and not os.path.exists(tmp_path / "checkpoints" / "30")


def test_non_finite_leaves_names_exactly_the_bad_floats():
  tree = {"a": jnp.array([1.0, jnp.inf]), "b": {"c": jnp.zeros(3), "d": jnp.array(jnp.nan, jnp.bfloat16)},
          "n": jnp.arange(3), "k": jax.random.key(0)}
  assert checkpoints.non_finite_leaves(tree) == ["a", "b/d"]


def _save_unchecked(workdir, config, step, state):
  """Writes a checkpoint the way a run without the finiteness check could have."""
  manager = checkpoints.create_manager(workdir, config)
  item = {"state": state, "base_key": np.asarray(jax.random.key_data(trainers.base_keys(0)["step"]))}
  manager.save(step, args=ocp.args.StandardSave(item), force=True)
  manager.wait_until_finished()
  manager.close()


def test_sample_and_evaluate_refuse_a_non_finite_checkpoint(run, tmp_path, capsys):
  workdir, state, config = _copy(run, tmp_path), _state_at(run[1], 30), run[2]
  _save_unchecked(workdir, config, 30, state.replace(g_params=jax.tree.map(lambda x: x * jnp.inf, state.g_params)))
  out = str(tmp_path / "grid.png")
  with pytest.raises(UserError, match=r"the checkpoint at step 30 .* holds NaN or infinite values \(g_params/"):
    sample.run("generate", out, workdir=workdir, step=30, seeds="0-3")
  with pytest.raises(UserError, match=r"the checkpoint at step 30 .* holds NaN or infinite values"):
    scoring.evaluate_run(workdir, step=30, num_samples=10, extractor="digits", progress=False)
  assert not os.path.exists(out) and not os.path.exists(os.path.join(workdir, "metrics.json"))
  # Unasked, the newest usable checkpoint is sampled instead, with the reason in one warning line.
  capsys.readouterr()
  assert runs.load_run(workdir)[2] == 20
  assert capsys.readouterr().err.startswith("warning: the checkpoint at step 30 ")


def test_sample_cli_on_a_damaged_run_warns_in_one_line_and_writes_the_grid(run, tmp_path):
  workdir = _copy(run, tmp_path)
  truncate_largest_file(os.path.join(workdir, "checkpoints", "20"))
  out = tmp_path / "grid.png"
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.sample", f"--workdir={workdir}", "--seeds=0-3",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.strip().splitlines() == [
      proc.stderr.strip().splitlines()[0], f"wrote {out}"], proc.stderr
  assert proc.stderr.startswith("warning: the checkpoint at step 20 ") and "Traceback" not in proc.stderr
  assert out.exists()


def test_resume_refuses_keys_that_change_the_mathematics(run, tmp_path):
  config = run[2]
  other = quickstart(**{"train.batch_size": 32})
  other.seed, other.gan.loss = 1, "hinge"
  with pytest.raises(UserError) as e:
    checkpoints.check_resume(run[0], other)
  message = str(e.value)
  assert message.startswith(f"--workdir={run[0]!r} holds a run trained with another config (seed 0 -> 1, ")
  for change in ("seed 0 -> 1", "train.batch_size 16 -> 32", "gan.loss 'non_saturating' -> 'hinge'"):
    assert change in message
  assert "\n" not in message
  safe = quickstart(**{"train.num_steps": 40, "train.steps_per_dispatch": 2, "train.log_every": 10})
  safe.data.manual_dir = "/elsewhere/mnist"
  assert checkpoints.check_resume(run[0], safe) == [
      "data.manual_dir None -> '/elsewhere/mnist'", f"train.num_steps {config.train.num_steps} -> 40",
      "train.log_every 5 -> 10", "train.steps_per_dispatch 1 -> 2"]
  assert checkpoints.check_resume(str(tmp_path), other) == []  # no config.json: nothing to compare


def test_resume_may_change_how_a_diffusion_run_samples_but_not_how_it_trains(tmp_path):
  stored = test_diffusion.tiny_config(num_classes=0)
  checkpoints.write_config(str(tmp_path), stored)
  sampling = test_diffusion.tiny_config(num_classes=0)
  sampling.diffusion.steps, sampling.diffusion.sampler, sampling.diffusion.s_churn = 40, "stochastic", 10.0
  assert checkpoints.check_resume(str(tmp_path), sampling) == [
      "diffusion.sampler 'heun' -> 'stochastic'", f"diffusion.steps {stored.diffusion.steps} -> 40",
      "diffusion.s_churn 40.0 -> 10.0"]
  training = test_diffusion.tiny_config(num_classes=0)
  training.diffusion.p_mean, training.diffusion.steps = 0.0, 40
  with pytest.raises(UserError, match=r"another config \(diffusion.p_mean -1.2 -> 0.0\); .* diffusion.steps"):
    checkpoints.check_resume(str(tmp_path), training)


def test_config_changes_sees_keys_a_stored_config_lacks_as_their_defaults(run):
  stored = json.loads(open(os.path.join(run[0], "config.json")).read())
  del stored["gan"]["ada_pipeline"]  # a run saved before the key existed
  import ml_collections
  assert checkpoints.config_changes(ml_collections.ConfigDict(stored), run[2]) == []


def test_exports_are_checked_first_and_written_together(tmp_path, monkeypatch):
  a, b = str(tmp_path / "a.json"), str(tmp_path / "b.bin")
  checkpoints.write_together({a: b"new a", b: b"new b"})
  assert open(a, "rb").read() == b"new a" and open(b, "rb").read() == b"new b"
  with pytest.raises(UserError, match=r"'.*a.json' exists: pass --overwrite to replace it"):
    checkpoints.check_outputs([str(tmp_path / "c"), a], overwrite=False)
  checkpoints.check_outputs([a, b], overwrite=True)
  with pytest.raises(UserError, match="folder .* does not exist"):
    checkpoints.check_outputs([str(tmp_path / "no" / "c")], overwrite=True)
  # A failure while the second is written leaves both as they were.
  real = checkpoints.write_bytes_atomic

  def fail_on_b(path, data):
    if path.startswith(b):
      raise OSError("disk full")
    real(path, data)

  monkeypatch.setattr(checkpoints, "write_bytes_atomic", fail_on_b)
  with pytest.raises(OSError, match="disk full"):
    checkpoints.write_together({a: b"newer a", b: b"newer b"})
  assert open(a, "rb").read() == b"new a" and open(b, "rb").read() == b"new b"
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin"]
