"""Loading what sampling and evaluation start from: a training run's checkpoint, or a shipped model.

`load_run(workdir, step)` reads a run's config.json and restores its checkpoint onto one local device;
`load(workdir=..., model=..., step=...)` is the choice the CLIs offer between a run and a shipped
pretrained model (`aigc_jax.pretrained`).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from aigc_jax import checkpoints, config as config_lib, trainers
from aigc_jax.errors import UserError


def load_run(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any, int]:
  """Loads (config, state, step) from a run's checkpoint: the newest usable one, or `step`.

  A damaged or non-finite checkpoint is refused in one line (skipped, with a warning line, when
  the newest was asked for and an older one is usable).
  """
  config = config_lib.complete(checkpoints.read_config(workdir))
  manager = checkpoints.create_manager(workdir, read_only=True)
  steps = sorted(manager.all_steps())
  if not steps:
    raise UserError(f"no checkpoint in {workdir!r}")
  if step is not None and step not in steps:
    raise UserError(f"--step={step} has no checkpoint in {workdir!r}; available: "
                    f"{', '.join(map(str, steps))}")
  family = trainers.get_family(config)
  key = jax.random.key(0)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(lambda k: family.init_state(config, k), key))
  state, _ = checkpoints.restore(manager, step, abstract, key)  # step None: the newest usable one
  manager.close()
  return config, state, int(state.step)


def load(workdir: str | None = None, model: str | None = None,
         step: int | None = None) -> tuple[ml_collections.ConfigDict, Any, int]:
  """(config, state, step) of the run in `workdir` or of the shipped `model` (exactly one of them)."""
  if workdir and model:
    raise UserError("give --workdir (a training run) or --model (a shipped model), not both")
  if model:
    if step is not None:
      raise UserError("--step picks a checkpoint of a run; a shipped --model has one")
    from aigc_jax import pretrained
    config, state = pretrained.load(model)
    return config, state, config.train.num_steps
  if not workdir:
    raise UserError("give --workdir=DIR of a training run or --model=NAME of a shipped model")
  return load_run(workdir, step)
