"""export_classifier: checks before it writes, refuses non-classifier runs, never overwrites by default."""

import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import checkpoints, parallel, trainers
from aigc_jax.config import base_config
from aigc_jax.errors import UserError
from aigc_jax.evaluation import export_classifier, features
from tests.test_train import ROOT, quickstart


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  """An untrained LeNet on 8 px digits, saved at step 1 (real Orbax checkpoint, config.json)."""
  workdir = str(tmp_path_factory.mktemp("lenet"))
  config = base_config()
  config.model.family, config.model.name = "classifier", "lenet"
  config.data.image_size, config.data.eval_split = 8, "train[:200]"
  keys = trainers.base_keys(config.seed)
  state, _ = trainers.init_sharded_state(config, parallel.create_mesh(), keys["init"])
  manager = checkpoints.create_manager(workdir, config)
  checkpoints.save(manager, 1, state.replace(step=state.step + 1), keys["step"])
  manager.close()
  checkpoints.write_config(workdir, config)
  return workdir, jax.device_get(state)


def test_exports_the_params_with_their_held_out_accuracy(classifier_run, tmp_path):
  workdir, state = classifier_run
  output = str(tmp_path / "lenet.npz")
  result = export_classifier.export(workdir, output)
  assert result["step"] == 1 and result["num_examples"] == 200 and 0 <= result["accuracy"] <= 1
  written = features.load_lenet_params(output)
  for a, b in zip(jax.tree.leaves(written), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  # An existing output is replaced only when asked.
  with pytest.raises(UserError, match="exists: pass --overwrite to replace it"):
    export_classifier.export(workdir, output)
  export_classifier.export(workdir, output, overwrite=True)


def test_a_run_that_is_no_classifier_is_refused_before_anything_is_read_or_written(tmp_path):
  workdir, output = str(tmp_path / "gan"), str(tmp_path / "lenet.npz")
  checkpoints.write_config(workdir, quickstart())  # its config is enough: no checkpoint is opened
  with pytest.raises(UserError, match="gan models cannot be exported as the digit classifier"):
    export_classifier.export(workdir, output)
  assert not os.path.exists(output)


def test_the_shipped_weights_are_never_overwritten_by_default(classifier_run):
  before = hashlib.sha256(open(features.DIGITS_WEIGHTS, "rb").read()).hexdigest()
  with pytest.raises(UserError, match="lenet_mnist.npz' exists: pass --overwrite to replace it"):
    export_classifier.export(classifier_run[0], features.DIGITS_WEIGHTS)
  assert hashlib.sha256(open(features.DIGITS_WEIGHTS, "rb").read()).hexdigest() == before
  # And the CLI has no default --output (it was the shipped file).
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.evaluation.export_classifier",
                         f"--workdir={classifier_run[0]}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2 and "--output" in proc.stderr.strip().splitlines()[-1], proc.stderr
