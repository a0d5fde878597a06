"""Micro benchmark: one stride-2 4x4 transposed convolution, forward and forward+backward.

The DCGAN generator's 16 -> 32 px, 256 -> 128 channel layer (batch 64 by default):
flax `nn.ConvTranspose` (XLA's strided transposed conv) vs `layers.ConvTranspose2x`
(phase-decomposed, plain convs) vs PyTorch `ConvTranspose2d` when torch is installed.
Backward = gradients w.r.t. the input and the kernel. Implementations are timed
round-robin in each repeat so machine noise hits them alike; medians are printed.
When JAX runs on a GPU, PyTorch runs on CUDA with channels-last tensors and cuDNN autotuning.

  python benchmarks/upsample.py [--repeats=5] [--batch=64] [--dtype=bfloat16] [--iters=1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import parallel
from aigc_jax.models import layers

SIZE, CIN, COUT = 16, 256, 128


def _jax_fns(module: nn.Module, params, x, cotangent):
  # Compiled as the project's train steps are (on a CPU: XLA's Eigen convolutions).
  options = parallel.compiler_options(jax.default_backend())
  forward = jax.jit(module.apply, compiler_options=options)

  @jax.jit(compiler_options=options)
  def forward_backward(params, x):
    y, vjp = jax.vjp(module.apply, params, x)
    return y, vjp(cotangent)

  return (lambda: jax.block_until_ready(forward(params, x)),
          lambda: jax.block_until_ready(forward_backward(params, x)),
          lambda out: np.asarray(out, np.float32))


def _torch_fns(kernel: np.ndarray, x: np.ndarray, cotangent: np.ndarray, dtype: str):
  import torch  # pylint: disable=import-outside-toplevel
  cuda = jax.default_backend() == "gpu"
  device = torch.device("cuda" if cuda else "cpu")
  layout = torch.channels_last if cuda else torch.contiguous_format
  torch.backends.cudnn.benchmark = cuda
  torch_dtype = getattr(torch, dtype)
  layer = torch.nn.ConvTranspose2d(CIN, COUT, 4, stride=2, padding=1)
  with torch.no_grad():  # Same weights; layout mapping documented in aigc_jax/models/layers.py.
    layer.weight.copy_(torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy()))
    layer.bias.zero_()
  layer.to(device, torch_dtype, memory_format=layout)

  def tensor(a: np.ndarray):
    return torch.from_numpy(a.transpose(0, 3, 1, 2).copy()).to(device, torch_dtype, memory_format=layout)

  tx, tg = tensor(x).requires_grad_(), tensor(cotangent)

  def sync(out):
    if cuda:
      torch.cuda.synchronize()
    return out

  def forward():
    with torch.no_grad():
      return sync(layer(tx))

  def forward_backward():
    layer.zero_grad()
    tx.grad = None
    layer(tx).backward(tg)
    sync(None)

  def host(out) -> np.ndarray:
    return out.float().cpu().numpy().transpose(0, 2, 3, 1)

  return forward, forward_backward, host


def _time(fn, iters: int) -> float:
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


def main() -> None:
  """Times every implementation and prints a table of medians in ms."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--iters", type=int, default=1, help="calls per timed repeat (GPUs: many)")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.batch, SIZE, SIZE, CIN)).astype(np.float32)
  kernel = (rng.normal(size=(4, 4, CIN, COUT)) * 0.02).astype(np.float32)
  cotangent = rng.normal(size=(args.batch, 2 * SIZE, 2 * SIZE, COUT)).astype(np.float32)
  params = {"params": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(COUT)}}
  params, jx, jcot = jax.tree.map(lambda a: jnp.asarray(a, args.dtype), (params, x, cotangent))
  impls = {
      "flax nn.ConvTranspose": _jax_fns(
          nn.ConvTranspose(COUT, (4, 4), strides=(2, 2), padding="SAME"), params, jx, jcot),
      "ConvTranspose2x (ours)": _jax_fns(layers.ConvTranspose2x(COUT), params, jx, jcot),
  }
  try:
    import torch
    impls[f"torch {torch.__version__} ConvTranspose2d"] = _torch_fns(kernel, x, cotangent, args.dtype)
  except ImportError:
    print("torch not installed: PyTorch column skipped")

  outputs = [host(fwd()) for fwd, _, host in impls.values()]
  for name, out in list(zip(impls, outputs))[1:]:
    print(f"max |{name} - flax nn.ConvTranspose| = {np.abs(out - outputs[0]).max():.2e}")

  times = {name: ([], []) for name in impls}
  for _, fwd_bwd, _ in impls.values():  # Warm-up: compiles, allocator pools, autotuning.
    fwd_bwd()
  for _ in range(args.repeats):
    for name, (fwd, fwd_bwd, _) in impls.items():
      times[name][0].append(_time(fwd, args.iters))
      times[name][1].append(_time(fwd_bwd, args.iters))

  print(f"\nstride-2 4x4 transposed conv, {SIZE}->{2 * SIZE} px, {CIN}->{COUT} channels, "
        f"batch {args.batch}, {args.dtype}, {jax.devices()[0].device_kind}; "
        f"median of {args.repeats} x {args.iters}, ms")
  print(f"{'implementation':<34}{'forward':>10}{'fwd+bwd':>10}")
  for name, (fwd, fwd_bwd) in times.items():
    print(f"{name:<34}{statistics.median(fwd) * 1e3:>10.1f}{statistics.median(fwd_bwd) * 1e3:>10.1f}")


if __name__ == "__main__":
  main()
