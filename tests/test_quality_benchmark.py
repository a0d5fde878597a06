"""benchmarks/quality.py rejects a bad --model_overrides with one line before it samples anything."""

import os
import subprocess
import sys

import pytest

from tests.test_train import ROOT


@pytest.mark.parametrize("setting, message", [
    ("diffusion.steps=0", "error: --model_overrides: config.diffusion.steps=0 is not valid: must be an integer >= 1"),
    ("diffusion.sampler=ddim", "error: --model_overrides: config.diffusion.sampler='ddim' is not valid"),
    ("train.batch_size=8", "error: --model_overrides='train.batch_size=8' is not diffusion.KEY=VALUE"),
])
def test_bad_model_override_is_one_line(setting, message, tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join("benchmarks", "quality.py"), "--models=edm_mnist",
       f"--model_overrides={setting}", f"--mnist_dir={tmp_path}", f"--root={tmp_path}"],
      cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(message), result.stderr
  assert "Traceback" not in result.stderr
  assert os.listdir(tmp_path) == []  # nothing sampled or written
