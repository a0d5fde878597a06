"""Training: the loop around a family's pure train step, checkpoints, logs and sample grids.

`train_and_evaluate(config, workdir)` is the library entry point (usable from
Colab); `python -m aigc_jax.train --config=configs/NAME.py --workdir=DIR` is the CLI.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import checkpoints, config as config_lib, data, images, parallel, trainers
from aigc_jax.errors import UserError


class TrainingDiverged(UserError):
  """A loss became NaN or infinite."""


def _keys(seed: int) -> dict[str, jax.Array]:
  """The run's base keys: init, per-step (folded with the step), and the fixed sample-grid key."""
  init_key, step_key, sample_key = jax.random.split(jax.random.key(seed), 3)
  return {"init": init_key, "step": step_key, "sample": sample_key}


def make_multi_step(step_fn: Callable, steps_per_dispatch: int) -> Callable:
  """Wraps `step_fn` to run `steps_per_dispatch` steps per call, each with fold_in(key, step)."""

  def one(state, batch, base_key):
    return step_fn(state, batch, jax.random.fold_in(base_key, state.step))

  if steps_per_dispatch == 1:
    return lambda state, batches, base_key: one(state, batches[0], base_key)

  def multi(state, batches, base_key):
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    state, metrics = jax.lax.scan(lambda s, b: one(s, b, base_key), state, stacked)
    return state, jax.tree.map(jnp.mean, metrics)

  return multi


def compile_train_step(config: ml_collections.ConfigDict, mesh, state_sharding) -> Callable:
  """Jits the (multi-)step with explicit shardings: state replicated and donated, batch split."""
  step_fn = trainers.get_trainer(config).make_train_step(config)
  multi = make_multi_step(step_fn, config.train.steps_per_dispatch)
  return jax.jit(multi,
                 in_shardings=(state_sharding, parallel.batch_sharded(mesh), parallel.replicated(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)),
                 donate_argnums=(0,))


def init_state(config: ml_collections.ConfigDict, mesh, key: jax.Array) -> tuple[Any, Any]:
  """Initialises the train state directly onto its (replicated) shardings."""
  trainer = trainers.get_trainer(config)
  init = functools.partial(trainer.init_state, config)
  abstract = jax.eval_shape(init, key)
  sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
  return jax.jit(init, out_shardings=sharding)(key), sharding


def _check_finite(metrics: dict[str, float], step: int, last_good: int | None) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    kept = f"the last good checkpoint (step {last_good}) is kept" if last_good else "no checkpoint was written"
    raise TrainingDiverged(f"training diverged at step {step}: {', '.join(bad)} is "
                           f"{metrics[bad[0]]}; {kept}")


def _write_samples(config, trainer, state, keys, workdir, step, writer) -> str | None:
  if not hasattr(trainer, "generate"):
    return None
  samples = jax.device_get(trainer.generate(config, state, keys["sample"], config.train.num_sample_images))
  grid = images.make_grid(np.asarray(samples))
  writer.write_images(step, {"samples": grid[None]})
  if jax.process_index() != 0:
    return None
  path = os.path.join(workdir, "samples", f"step_{step:08d}.png")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  images.save_png(path, images.upscale_for_display(grid))
  return path


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final state."""
  from clu import metric_writers, periodic_actions  # Heavy imports kept off library import.

  config_lib.validate(config, jax.device_count())
  trainer = trainers.get_trainer(config)
  mesh = parallel.create_mesh()
  keys = _keys(config.seed)
  state, state_sharding = init_state(config, mesh, keys["init"])

  manager = checkpoints.create_manager(workdir, config)
  last_good = manager.latest_step()
  if last_good is not None:
    state, keys["step"] = checkpoints.restore(manager, last_good, state, keys["step"])
  start_step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
  train_step = compile_train_step(config, mesh, state_sharding)
  batches = data.create_train_iterator(config, mesh, start_step=start_step)
  k = config.train.steps_per_dispatch
  num_steps = config.train.num_steps
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=config.train.log_every)]
  pending: list[dict] = []  # device metrics since the last log: fetched together, no per-step sync

  def flush(step: int) -> None:
    if not pending:
      return
    means = {k_: float(v) for k_, v in jax.device_get(
        jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *pending)).items()}
    pending.clear()
    _check_finite(means, step, last_good)
    writer.write_scalars(step, means)

  sample_path = None
  with batches:
    for step in range(start_step + k, num_steps + 1, k):
      state, metrics = train_step(state, [next(batches) for _ in range(k)], keys["step"])
      pending.append(metrics)
      for hook in hooks:
        hook(step)
      if step % config.train.log_every == 0 or step % config.train.checkpoint_every == 0 or step == num_steps:
        flush(step)
      if step % config.train.checkpoint_every == 0 or step == num_steps:
        checkpoints.save(manager, step, state, keys["step"])
        last_good = step
      if step % config.train.sample_every == 0 or step == num_steps:
        sample_path = _write_samples(config, trainer, state, keys, workdir, step, writer)
      if config.train.eval_every and (step % config.train.eval_every == 0 or step == num_steps):
        from aigc_jax import evaluate  # Evaluation pulls in feature extractors: load only when asked.
        writer.write_scalars(step, evaluate.evaluate_during_training(config, state, workdir, step))

  writer.flush()
  manager.close()
  if sample_path:
    print(f"samples written to {sample_path}", file=sys.stderr)
  return state


def main(argv) -> None:
  """CLI: parse flags and call train_and_evaluate."""
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
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
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and sample grids.")


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  _define_flags()
  run_main(main)
