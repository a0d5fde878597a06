"""Multi-host training: 2 local processes x 2 CPU devices vs 1 process x 4 devices, kill, resume.

The two-process runs go through scripts/launch_local.sh (jax.distributed over 127.0.0.1,
gloo collectives). The reference is one process with 4 devices fed the same global batches:
process 0's slice of the data followed by process 1's.
"""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aigc_jax import runs
from tests.conftest import QUICK_COMPILE_FLAGS
from tests.test_train import ROOT, TINY

STEPS = {**TINY, "train.log_every": 2, "train.checkpoint_every": 4, "train.sample_every": 4,
         "train.keep_checkpoints": 20}
LAST = 24  # long enough that the first pair is killed mid-run, well before its end
# Each phase takes ~30 s of CPU; the limit only catches hangs, on a machine shared with other jobs.
TIMEOUT_S = 240

# One process, 4 devices, reading the two processes' slices side by side.
REFERENCE = """
import jax
import numpy as np
from aigc_jax import data, train
from aigc_jax.data import pipeline
from aigc_jax.errors import run_main

def two_process_batches(config, mesh, *, start_step=0):
  streams = [data.local_batches(config.data, batch_size=config.train.batch_size // 2,
                                seed=config.seed, start_step=start_step, process_index=p,
                                process_count=2) for p in range(2)]
  batches = (jax.tree.map(lambda *xs: np.concatenate(xs), *b) for b in zip(*streams))
  return pipeline.MeshPrefetcher(batches, mesh, 2)

data.create_train_iterator = two_process_batches
train.define_flags()
run_main(train.main)
"""


def _flags(workdir, num_steps):
  return ["--config=configs/quickstart.py", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in {**STEPS, "train.num_steps": num_steps}.items()]]


def _start(args, devices):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable,
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {QUICK_COMPILE_FLAGS}",
         "DEVICES_PER_PROCESS": str(devices)}
  # A session of its own, so a timeout can kill the launcher and every process it started.
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)


def _finish(proc):
  try:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    pytest.fail(f"timed out after {TIMEOUT_S} s:\n{out[-3000:]}")
  assert proc.returncode == 0, out[-3000:]
  return out


def _launch_two(workdir, num_steps):
  return _start(["bash", "scripts/launch_local.sh", "2", *_flags(workdir, num_steps)], devices=2)


def _params(workdir, step):
  _, state, _ = runs.load_run(workdir, step)
  return state


def _assert_close(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)


def _kill_after_checkpoint(proc, workdir, step):
  """Waits until the run has committed checkpoint `step`, then SIGKILLs every process it started."""
  path = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.monotonic() + TIMEOUT_S
  while not os.path.isdir(path):
    if proc.poll() is not None:
      pytest.fail(f"ended before checkpoint {step}:\n{proc.communicate()[0][-3000:]}")
    if time.monotonic() > deadline:
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.communicate()
  assert os.path.isdir(path), f"no checkpoint {step} after {TIMEOUT_S} s"


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_being_killed(tmp_path):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  reference = _start([sys.executable, "-c", REFERENCE, "--nodistributed", *_flags(single, LAST)],
                     devices=4)
  _kill_after_checkpoint(_launch_two(multi, LAST), multi, 4)
  killed_at = max(int(d) for d in os.listdir(os.path.join(multi, "checkpoints")) if d.isdigit())
  assert killed_at < LAST, "the pair finished before it could be killed"
  _finish(reference)
  _assert_close(_params(multi, 4), _params(single, 4))

  out = _finish(_launch_two(multi, LAST))  # a fresh pair resumes from the shared checkpoint
  _assert_close(_params(multi, LAST), _params(single, LAST))
  # Only process 0 logs, writes TensorBoard events (one file per run) and images.
  assert out.count("samples written to") == 1
  assert len(glob.glob(os.path.join(multi, "events.out.tfevents.*"))) == 2
  assert f"step_{LAST:08d}.png" in os.listdir(os.path.join(multi, "samples"))


def test_distributed_without_a_cluster_is_one_line_and_exit_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.train", "--distributed",
                         *_flags(tmp_path / "w", 4)], cwd=ROOT, capture_output=True, text=True,
                        timeout=TIMEOUT_S, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot start jax.distributed")
  assert "Traceback" not in proc.stderr
