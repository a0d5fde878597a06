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
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import (checkpoints, config as config_lib, generation, images, loop, parallel, run_log,
                      trainers)
from aigc_jax.errors import UserError


class TrainingDiverged(UserError):
  """A loss became NaN or infinite."""


def _kept(last_good: int | None) -> str:
  return f"the last good checkpoint (step {last_good}) is kept" if last_good else "no checkpoint was written"


def _check_finite(metrics: dict[str, float], step: int, last_good: int | None) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise TrainingDiverged(f"training diverged at step {step}: {', '.join(bad)} is "
                           f"{metrics[bad[0]]}; {_kept(last_good)}")


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
  """Trains `config` in `workdir`, resuming from its newest usable checkpoint; returns the final state.

  On SIGTERM it saves at the next dispatch boundary and returns that state, short of num_steps.
  """
  config_lib.validate(config, jax.device_count())
  from aigc_jax import data  # TensorFlow loads once the config is good: bad input fails in seconds.
  if config.data.dataset != "synthetic":
    data.dataset_size(config.data, config.data.split)  # missing data fails before the workdir is touched
  manager = checkpoints.create_manager(workdir, config)
  weights = None
  if config.train.init_from and not manager.all_steps():  # a resumed run needs only its checkpoint
    from aigc_jax import pretrained
    weights = pretrained.initial_weights(config)
  with run_log.log_file(workdir):
    return _train(config, workdir, manager, weights)


def _train(config: ml_collections.ConfigDict, workdir: str, manager, weights: dict | None) -> Any:
  from clu import periodic_actions  # Heavy import kept off library import.
  from aigc_jax import data

  family = trainers.get_family(config)
  mesh = parallel.create_mesh(fsdp_devices=config.train.fsdp_devices)
  keys = trainers.base_keys(config.seed)
  state, state_sharding = trainers.init_sharded_state(config, mesh, keys["init"])

  last_good = None
  if manager.all_steps():
    changes = checkpoints.check_resume(workdir, config)
    state, keys["step"] = checkpoints.restore(manager, None, state, keys["step"])
    last_good = int(jax.device_get(state.step))
    run_log.line(f"resuming from step {last_good}" + (f" with {', '.join(changes)}" if changes else ""))
  elif weights is not None:
    state = jax.device_put(family.with_sampling_fields(config, state, weights), state_sharding)
    run_log.line(f"starting from the weights of {config.train.init_from}")
  start_step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)

  writer = _create_writer(workdir, config, start_step)
  train_step = trainers.compile_train_step(config, mesh, state_sharding)
  batches = data.create_train_iterator(config, mesh, start_step=start_step)
  t = config.train
  num_steps = t.num_steps
  # on_steps, not every_steps: clu insists on a call after every single step for the latter,
  # and with steps_per_dispatch = k the loop sees every k-th step only.
  hooks = [periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=None, every_secs=None,
      on_steps=range(t.log_every, num_steps + 1, t.log_every))
           ] if jax.process_index() == 0 else []
  bar = _progress_bar(num_steps, start_step)
  pending: list[tuple[dict, int]] = []  # (device metrics, steps) since the last log: one fetch, no per-step sync
  last_line = (start_step, time.monotonic())  # step and time of the last terminal line

  def flush(step: int) -> None:
    nonlocal last_line
    if not pending:
      return
    weights = jnp.asarray([n for _, n in pending], jnp.float32)
    means = {k_: float(v) for k_, v in jax.device_get(jax.tree.map(
        lambda *xs: jnp.average(jnp.stack(xs), weights=weights), *[m for m, _ in pending])).items()}
    pending.clear()
    _check_finite(means, step, last_good)
    writer.write_scalars(step, means)
    if bar is not None:
      bar.set_postfix({k_: f"{v:.4g}" for k_, v in means.items()}, refresh=False)
    if _due(step, t.log_every, num_steps):
      rate = (step - last_line[0]) / max(time.monotonic() - last_line[1], 1e-9)
      run_log.line(f"step {step}/{num_steps}: " + ", ".join(f"{k_} {v:.4g}" for k_, v in means.items())
                   + f" ({rate:.3g} steps/s)", bar)
      last_line = (step, time.monotonic())

  sample_path, step, stop = None, start_step, False
  every = [e for e in (t.log_every, t.checkpoint_every, t.sample_every, t.eval_every) if e]
  with batches, loop.preemption() as preempted:
    for dispatch, end in enumerate(loop.dispatch_ends(start_step, num_steps, t.steps_per_dispatch, every)):
      size, step = end - step, end
      state, metrics = train_step(state, [next(batches) for _ in range(size)], keys["step"])
      pending.append((metrics, size))
      for hook in hooks:
        hook(step)
      if bar is not None:
        bar.update(size)
      stop = preempted(dispatch)
      checkpoint_now = _due(step, t.checkpoint_every, num_steps) or stop
      if checkpoint_now or _due(step, t.log_every, num_steps):
        flush(step)
      if checkpoint_now:
        try:
          checkpoints.save(manager, step, state, keys["step"])
        except checkpoints.NonFiniteState as e:
          raise TrainingDiverged(f"training diverged at step {step}: {e}; {_kept(last_good)}") from e
        last_good = step
      if stop:
        break
      if _due(step, t.sample_every, num_steps):
        sample_path = _write_samples(config, family, state, keys, workdir, step, writer)
      if t.eval_every and _due(step, t.eval_every, num_steps):
        # Evaluation pulls in feature extractors: loaded only when asked for.
        from aigc_jax.evaluation import scoring
        writer.write_scalars(step, scoring.evaluate_during_training(config, state, workdir))

  if bar is not None:
    bar.close()
  writer.flush()
  manager.close()
  if stop:
    run_log.line(f"stopped at step {step} on SIGTERM, with a checkpoint there: run the same "
                 "command again to resume")
  elif sample_path:
    run_log.line(f"samples written to {sample_path}")
  return state


def main(argv) -> None:
  """CLI: start the multi-controller runtime if asked or detected, then train_and_evaluate.

  Library INFO records go to the workdir's train.log only, unless --verbosity is given; a run
  stopped by SIGTERM exits with loop.EXIT_PREEMPTED (143) once its checkpoint is saved.
  """
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  run_log.quiet_terminal(FLAGS["verbosity"].present)
  parallel.initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address,
                                  FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.config is None:
    raise UserError("--config is required (e.g. --config=configs/quickstart.py)")
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  state = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if int(jax.device_get(state.step)) < FLAGS.config.train.num_steps:
    sys.exit(loop.EXIT_PREEMPTED)


def define_flags() -> None:
  """Defines train's flags on absl's global FLAGS."""
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
  define_flags()
  run_main(main)
