"""Training: the loop around a family's pure train step, checkpoints, logs and sample grids.

`train_and_evaluate(config, workdir)` is the library entry point (usable from
Colab); `python -m aigc_jax.train --config=configs/NAME.py --workdir=DIR` is the CLI.
With several processes (`--distributed`, or detected on a TPU pod or under SLURM) every
process runs this same loop on its slice of the data; checkpoints are written by all of them
together, while only process 0 writes logs, TensorBoard events, config.json and sample grids.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import checkpoints, config as config_lib, data, generation, images, parallel, trainers
from aigc_jax.errors import UserError


class TrainingDiverged(UserError):
  """A loss became NaN or infinite."""


def _check_finite(metrics: dict[str, float], step: int, last_good: int | None) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    kept = f"the last good checkpoint (step {last_good}) is kept" if last_good else "no checkpoint was written"
    raise TrainingDiverged(f"training diverged at step {step}: {', '.join(bad)} is "
                           f"{metrics[bad[0]]}; {kept}")


def _due(step: int, every: int, num_steps: int) -> bool:
  """Whether a periodic action runs after `step`: every `every` steps, and at the end."""
  return step % every == 0 or step == num_steps


def _write_samples(config, family, state, keys, workdir, step, writer) -> str | None:
  if not family.can("generate"):
    return None
  # Every process takes part in generating (the state spans all of them); only process 0 writes.
  samples = jax.device_get(generation.from_key(config, state, keys["sample"], config.train.num_sample_images))
  if jax.process_index() != 0:
    return None
  grid = images.make_grid(np.asarray(samples))
  writer.write_images(step, {"samples": grid[None]})
  path = checkpoints.join(workdir, "samples", f"step_{step:08d}.png")
  checkpoints.write_file(path, images.encode_png(images.upscale_for_display(grid)))
  return path


def _create_writer(workdir: str, config: ml_collections.ConfigDict, start_step: int):
  """TensorBoard + log writer on process 0 (with the config as text); a silent one elsewhere."""
  from clu import metric_writers  # Heavy import kept off library import.
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  writer = metric_writers.create_default_writer(workdir)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
  # Markdown code block: TensorBoard's text tab would otherwise reflow the JSON.
  writer.write_texts(start_step, {"config": "```\n" + config.to_json(indent=2) + "\n```"})
  return writer


def _progress_bar(num_steps: int, start_step: int):
  """A tqdm bar on process 0 (a widget in notebooks, text in a terminal); None elsewhere."""
  if jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=num_steps, initial=start_step, unit=" steps", file=sys.stderr,
              mininterval=1.0, dynamic_ncols=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final state."""
  from clu import periodic_actions  # Heavy import kept off library import.

  config_lib.validate(config, jax.device_count())
  if config.data.dataset != "synthetic":
    data.dataset_size(config.data, config.data.split)  # missing data fails before the workdir is touched
  family = trainers.get_family(config)
  mesh = parallel.create_mesh(fsdp_devices=config.train.fsdp_devices)
  keys = trainers.base_keys(config.seed)
  state, state_sharding = trainers.init_sharded_state(config, mesh, keys["init"])

  manager = checkpoints.create_manager(workdir, config)
  last_good = manager.latest_step()
  if last_good is not None:
    state, keys["step"] = checkpoints.restore(manager, last_good, state, keys["step"])
  start_step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)

  writer = _create_writer(workdir, config, start_step)
  train_step = trainers.compile_train_step(config, mesh, state_sharding)
  batches = data.create_train_iterator(config, mesh, start_step=start_step)
  k = config.train.steps_per_dispatch
  num_steps = config.train.num_steps
  # on_steps, not every_steps: clu insists on a call after every single step for the latter,
  # and with steps_per_dispatch = k the loop sees every k-th step only.
  hooks = [periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=None, every_secs=None,
      on_steps=range(config.train.log_every, num_steps + 1, config.train.log_every))
           ] if jax.process_index() == 0 else []
  bar = _progress_bar(num_steps, start_step)
  pending: list[dict] = []  # device metrics since the last log: fetched together, no per-step sync

  def flush(step: int) -> None:
    if not pending:
      return
    means = {k_: float(v) for k_, v in jax.device_get(
        jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *pending)).items()}
    pending.clear()
    _check_finite(means, step, last_good)
    writer.write_scalars(step, means)
    if bar is not None:
      bar.set_postfix({k_: f"{v:.4g}" for k_, v in means.items()}, refresh=False)

  sample_path = None
  with batches:
    for step in range(start_step + k, num_steps + 1, k):
      state, metrics = train_step(state, [next(batches) for _ in range(k)], keys["step"])
      pending.append(metrics)
      for hook in hooks:
        hook(step)
      if bar is not None:
        bar.update(k)
      checkpoint_now = _due(step, config.train.checkpoint_every, num_steps)
      if checkpoint_now or _due(step, config.train.log_every, num_steps):
        flush(step)
      if checkpoint_now:
        checkpoints.save(manager, step, state, keys["step"])
        last_good = step
      if _due(step, config.train.sample_every, num_steps):
        sample_path = _write_samples(config, family, state, keys, workdir, step, writer)
      if config.train.eval_every and _due(step, config.train.eval_every, num_steps):
        # Evaluation pulls in feature extractors: loaded only when asked for.
        from aigc_jax.evaluation import scoring
        writer.write_scalars(step, scoring.evaluate_during_training(config, state, workdir))

  if bar is not None:
    bar.close()
  writer.flush()
  manager.close()
  if sample_path:
    print(f"samples written to {sample_path}", file=sys.stderr)
  return state


def main(argv) -> None:
  """CLI: start the multi-controller runtime if asked or detected, then train_and_evaluate."""
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  parallel.initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address,
                                  FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.config is None:
    raise UserError("--config is required (e.g. --config=configs/quickstart.py)")
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


def _define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/NAME.py); "
                                  "override keys with --config.section.key=value.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints, logs and "
                      "sample grids; an existing run there is resumed.")
  flags.DEFINE_bool("distributed", None, "Start jax.distributed (multi-host): --distributed "
                    "always, --nodistributed never; unset, when --coordinator_address is given "
                    "or JAX detects a cluster (TPU pod, SLURM, Open MPI).")
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0's "
                      "coordinator (default: detected by JAX).")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (default: "
                       "detected by JAX).")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0 .. "
                       "num_processes-1 (default: detected by JAX).")


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  _define_flags()
  run_main(main)
