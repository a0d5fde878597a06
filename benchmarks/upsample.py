"""Micro benchmark: one stride-2 4x4 transposed convolution, forward and forward+backward.

The DCGAN generator's 16 -> 32 px, 256 -> 128 channel layer at batch 64:
flax `nn.ConvTranspose` (XLA's strided transposed conv) vs `layers.ConvTranspose2x`
(phase-decomposed, plain convs) vs PyTorch `ConvTranspose2d` when torch is installed.
Backward = gradients w.r.t. the input and the kernel. Implementations are timed
round-robin in each repeat so machine noise hits them alike; medians are printed.

  python benchmarks/upsample.py [--repeats=5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.models import layers

BATCH, SIZE, CIN, COUT = 64, 16, 256, 128


def _jax_fns(module: nn.Module, params, x, cotangent):
  forward = jax.jit(module.apply)

  @jax.jit
  def forward_backward(params, x):
    y, vjp = jax.vjp(module.apply, params, x)
    return y, vjp(cotangent)

  return (lambda: jax.block_until_ready(forward(params, x)),
          lambda: jax.block_until_ready(forward_backward(params, x)))


def _torch_fns(kernel: np.ndarray, x: np.ndarray, cotangent: np.ndarray):
  import torch  # pylint: disable=import-outside-toplevel
  layer = torch.nn.ConvTranspose2d(CIN, COUT, 4, stride=2, padding=1)
  with torch.no_grad():  # Same weights; layout mapping documented in aigc_jax/models/layers.py.
    layer.weight.copy_(torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy()))
    layer.bias.zero_()
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
  tg = torch.from_numpy(cotangent.transpose(0, 3, 1, 2).copy())

  def forward():
    with torch.no_grad():
      return layer(tx).numpy().transpose(0, 2, 3, 1)

  def forward_backward():
    layer.zero_grad()
    tx.grad = None
    layer(tx).backward(tg)

  return forward, forward_backward


def _time(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  """Times every implementation and prints a table of medians in ms."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, SIZE, SIZE, CIN)).astype(np.float32)
  kernel = (rng.normal(size=(4, 4, CIN, COUT)) * 0.02).astype(np.float32)
  cotangent = rng.normal(size=(BATCH, 2 * SIZE, 2 * SIZE, COUT)).astype(np.float32)
  params = {"params": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(COUT)}}
  impls = {
      "flax nn.ConvTranspose": _jax_fns(
          nn.ConvTranspose(COUT, (4, 4), strides=(2, 2), padding="SAME"), params, x, cotangent),
      "ConvTranspose2x (ours)": _jax_fns(layers.ConvTranspose2x(COUT), params, x, cotangent),
  }
  try:
    import torch
    impls[f"torch {torch.__version__} ConvTranspose2d"] = _torch_fns(kernel, x, cotangent)
  except ImportError:
    print("torch not installed: PyTorch column skipped")

  outputs = [np.asarray(fwd()) for fwd, _ in impls.values()]
  for name, out in list(zip(impls, outputs))[1:]:
    print(f"max |{name} - flax nn.ConvTranspose| = {np.abs(out - outputs[0]).max():.2e}")

  times = {name: ([], []) for name in impls}
  for fwd, fwd_bwd in impls.values():  # Warm-up: compiles, allocator pools.
    fwd_bwd()
  for _ in range(args.repeats):
    for name, (fwd, fwd_bwd) in impls.items():
      times[name][0].append(_time(fwd))
      times[name][1].append(_time(fwd_bwd))

  print(f"\nstride-2 4x4 transposed conv, {SIZE}->{2 * SIZE} px, {CIN}->{COUT} channels, "
        f"batch {BATCH}; median of {args.repeats}, ms")
  print(f"{'implementation':<34}{'forward':>10}{'fwd+bwd':>10}")
  for name, (fwd, fwd_bwd) in times.items():
    print(f"{name:<34}{statistics.median(fwd) * 1e3:>10.1f}{statistics.median(fwd_bwd) * 1e3:>10.1f}")


if __name__ == "__main__":
  main()
