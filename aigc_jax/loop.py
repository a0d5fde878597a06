"""The training loop's control flow: where each dispatch ends, and stopping on a preemption notice.

A dispatch runs up to `train.steps_per_dispatch` steps in one jitted call; `dispatch_ends` cuts
them so that one ends on every step that logs, checkpoints, samples or evaluates, and on the last
step, wherever a resumed run starts. `preemption` turns SIGTERM (SLURM's time limit, a spot VM
being reclaimed) into a request to save at the next dispatch boundary and stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator, Sequence

import jax

# What a shell reports for a process ended by SIGTERM: the run stopped before its last step.
EXIT_PREEMPTED = 128 + signal.SIGTERM


def dispatch_ends(start: int, num_steps: int, steps_per_dispatch: int,
                  every: Sequence[int]) -> Iterator[int]:
  """The step each dispatch ends on, from `start`: at most `steps_per_dispatch` steps each, and an
  end on every multiple of each of `every` (positive) and on `num_steps`."""
  step = start
  while step < num_steps:
    step = min([step + steps_per_dispatch, num_steps] + [(step // e + 1) * e for e in every])
    yield step


@contextlib.contextmanager
def preemption() -> Iterator[Callable[[int], bool]]:
  """Yields `preempted(dispatch)`: True at the dispatch where all processes stop after a SIGTERM.

  One process: a SIGTERM handler that only takes note (the previous handler is back on exit).
  Several (jax.distributed): JAX's preemption service, which catches SIGTERM itself and agrees
  with the other processes on the dispatch at which all stop; it asks for consecutive counts,
  so `dispatch` numbers the dispatches of this run from 0.
  """
  if jax.distributed.is_initialized():
    from jax.experimental import multihost_utils

    def reached(dispatch: int) -> bool:
      try:
        return multihost_utils.reached_preemption_sync_point(dispatch)
      except RuntimeError:  # the service is off (jax_enable_preemption_service): SIGTERM ends the run
        return False

    yield reached
    return
  if threading.current_thread() is not threading.main_thread():
    yield lambda dispatch: False  # Python sets signal handlers from the main thread only.
    return
  noticed = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: noticed.set())
  try:
    yield lambda dispatch: noticed.is_set()
  finally:
    signal.signal(signal.SIGTERM, previous)
