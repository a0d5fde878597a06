"""The loop's control flow: where dispatches end (against a step-by-step walk), SIGTERM noticed."""

import os
import random
import signal
import threading

from aigc_jax import loop


def _walk(start, num_steps, k, every):
  """Dispatch ends found one step at a time: cut at a boundary, or when a dispatch holds k steps."""
  ends, begin = [], start
  for step in range(start + 1, num_steps + 1):
    if step == num_steps or any(step % e == 0 for e in every) or step - begin == k:
      ends.append(step)
      begin = step
  return ends


def test_dispatches_end_on_every_boundary_whatever_the_start():
  # The resume: from 10 to 20 with k=4, checkpoints every 8 and logs every 4.
  assert list(loop.dispatch_ends(10, 20, 4, [4, 8, 20])) == [12, 16, 20]
  assert list(loop.dispatch_ends(0, 20, 5, [5, 10])) == [5, 10, 15, 20]
  assert list(loop.dispatch_ends(20, 20, 4, [4])) == [] and list(loop.dispatch_ends(25, 20, 4, [4])) == []
  rng = random.Random(0)
  for _ in range(500):
    k, num_steps = rng.randint(1, 9), rng.randint(1, 120)
    every = [rng.randint(1, 40) for _ in range(rng.randint(0, 4))]
    start = rng.randint(0, num_steps)
    assert list(loop.dispatch_ends(start, num_steps, k, every)) == _walk(start, num_steps, k, every)


def test_sigterm_is_noticed_and_the_previous_handler_comes_back():
  before = signal.getsignal(signal.SIGTERM)
  with loop.preemption() as preempted:
    assert not preempted(0)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
    assert preempted(1) and preempted(2)
  assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_no_handler_is_set():
  seen = []

  def run():
    with loop.preemption() as preempted:
      seen.append((preempted(0), signal.getsignal(signal.SIGTERM)))

  before = signal.getsignal(signal.SIGTERM)
  thread = threading.Thread(target=run)
  thread.start()
  thread.join()
  assert seen == [(False, before)]
