"""Full train-step throughput: the project's DCGAN and conv VAE vs PyTorch references, side by side.

Cases: the pytorch/examples DCGAN at 64x64 (configs/dcgan_celeba64.py at batch 64), the conv VAE
at 64x64 (configs/vae_cifar10.py at 64 px, batch 64), and the 28x28 MNIST configs
(configs/dcgan_mnist.py as shipped, with an un-normalised D and lazy R1, and with the batch-norm
D of pytorch/examples; configs/vae_mnist.py; at their own batch sizes; a case with lazy R1 times
whole R1 periods). The JAX side is the real training code:
`trainers.init_sharded_state` + `trainers.compile_train_step` (jitted, donated state, the config's
`steps_per_dispatch`). The PyTorch side builds the same architecture (layer for layer, same
parameter count, which the script checks), the same batch, optimiser and loss (and generator EMA
when the config has one), and the same update order (D on real and detached fake, then G through
one shared G forward, as in pytorch/examples). Each repeat times every case's JAX and PyTorch steps
back to back, so machine load hits both alike; medians after warm-up are reported. On a CPU, peak
RSS is measured per case and framework in a fresh subprocess: the peak over the RSS after imports,
through compile and a few steps. Input-pipeline img/s (`benchmarks/input_pipeline.py`'s host
batches, 28x28 and 64x64) is compared with the train step when TensorFlow is installed.

When JAX's default backend is a GPU, PyTorch runs on CUDA too, channels-last with cuDNN autotuning,
and `--compute_dtype=bfloat16` means bf16 compute with float32 params and optimiser state on both
sides (PyTorch: autocast). The table then adds model FLOP utilisation: FLOPs per step from XLA's
cost model of the step before optimisation (the same count for both frameworks) over the card's
datasheet dense bf16 peak; memory is XLA's buffers vs PyTorch's peak allocation.

  python -m benchmarks.train_step [--quick] [--repeats=5] [--steps=4]
      [--compute_dtype=bfloat16] [--batch_size=N] [--cases=DCGAN,VAE 64]

On a machine shared with other work, `taskset -c 0 python -m benchmarks.train_step` gives both
frameworks one core: multi-threaded PyTorch collapses when its OpenMP threads are preempted, which
would flatter JAX.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from aigc_jax import parallel, trainers
from configs import dcgan_celeba64, dcgan_mnist, vae_cifar10, vae_mnist


def step_configs(compute_dtype: str, batch_size: int = 0) -> dict:
  """The benchmarked configs by case name, at `compute_dtype` (and `batch_size` if non-zero)."""
  dcgan64 = dcgan_celeba64.get_config()
  dcgan64.train.batch_size = 64
  vae64 = vae_cifar10.get_config()
  vae64.data.image_size = 64
  vae64.train.batch_size = 64
  # dcgan_mnist as shipped (an un-normalised D with lazy R1), and with pytorch/examples's batch-norm D.
  dcgan28_bn = dcgan_mnist.get_config()
  dcgan28_bn.model.d_norm, dcgan28_bn.gan.r1_gamma = "batch", 0.0
  cases = {"DCGAN 64x64": dcgan64, "VAE 64x64": vae64,
           "DCGAN 28x28 (MNIST, R1 D)": dcgan_mnist.get_config(),
           "DCGAN 28x28 (MNIST, batch-norm D)": dcgan28_bn, "VAE 28x28 (MNIST)": vae_mnist.get_config()}
  for config in cases.values():
    config.train.compute_dtype = compute_dtype
    config.train.batch_size = batch_size or config.train.batch_size
  return cases


def pseudo_images(config) -> np.ndarray:
  """One batch of uniform [-1, 1] images at the config's size, seeded."""
  size, channels = config.data.image_size, config.data.channels
  rng = np.random.default_rng(0)
  return rng.uniform(-1, 1, (config.train.batch_size, size, size, channels)).astype(np.float32)


# --- JAX ---------------------------------------------------------------------------------------

def _jax_runner(config):
  """Returns (run(steps), compile s, XLA temp bytes, parameter count, FLOPs per step, device bytes)."""
  mesh = parallel.create_mesh()
  key = jax.random.key(0)
  state, sharding = trainers.init_sharded_state(config, mesh, key)
  step = trainers.compile_train_step(config, mesh, sharding)
  images = pseudo_images(config)
  batch = parallel.host_to_global({"image": images, "label": np.zeros(len(images), np.int32)}, mesh)
  k = config.train.steps_per_dispatch
  batches = [batch] * k
  start = time.perf_counter()
  compiled = step.lower(state, batches, key).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  holder = [state]

  def run(steps: int) -> None:
    for _ in range(steps // k):
      holder[0], metrics = compiled(holder[0], batches, key)
    jax.block_until_ready((holder[0], metrics))

  run(k)
  num_params = sum(x.size for x in jax.tree.leaves(
      (holder[0].g_params, holder[0].d_params) if hasattr(holder[0], "g_params") else holder[0].params))
  device_bytes = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
  return (run, compile_seconds, memory.temp_size_in_bytes, num_params, _model_flops(config, batches),
          device_bytes)


def _model_flops(config, batches) -> float:
  """FLOPs of one train step: XLA's cost model of the step lowered for the CPU, before optimisation.

  The CPU lowering gives one count for every backend: GPU backends report no cost for an
  unoptimised module, and their optimised one hands convolutions to uncounted cuDNN calls.
  """
  mesh = parallel.create_mesh(jax.devices("cpu")[:1])
  key = jax.eval_shape(lambda: jax.random.key(0))  # abstract: nothing lands on the GPU
  abstract_state = jax.eval_shape(
      functools.partial(trainers.get_family(config).init_state, config), key)
  sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract_state)
  step = trainers.compile_train_step(config, mesh, sharding)
  abstract_batches = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batches)
  lowered = step.lower(abstract_state, abstract_batches, key)
  return lowered.cost_analysis()["flops"] / config.train.steps_per_dispatch


# --- PyTorch -----------------------------------------------------------------------------------

def _stages(image_size: int) -> tuple[int, int]:
  return (7, 2) if image_size == 28 else (4, image_size.bit_length() - 3)


def _torch_dcgan(config, place, amp):
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  if config.model.d_norm not in ("batch", "none") or config.gan.loss != "non_saturating":
    raise ValueError("the PyTorch DCGAN reference has a batch-norm or un-normalised D and the "
                     "non-saturating loss")
  start, num_stages = _stages(config.data.image_size)
  width, channels, nz = config.model.width, config.data.channels, config.model.latent_dim
  g_layers = [nn.ConvTranspose2d(nz, width * 2 ** (num_stages - 1), start, 1, 0, bias=False)]
  for i in reversed(range(num_stages - 1)):
    g_layers += [nn.BatchNorm2d(width * 2 ** (i + 1)), nn.ReLU(True),
                 nn.ConvTranspose2d(width * 2 ** (i + 1), width * 2 ** i, 4, 2, 1, bias=False)]
  g_layers += [nn.BatchNorm2d(width), nn.ReLU(True),
               nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
  d_layers, cin = [], channels
  d_bias = config.model.d_norm == "none"  # As the JAX D: biases only where no batch norm follows anywhere.
  for i in range(num_stages):
    d_layers.append(nn.Conv2d(cin, width * 2 ** i, 4, 2, 1, bias=d_bias))
    if i > 0 and config.model.d_norm == "batch":
      d_layers.append(nn.BatchNorm2d(width * 2 ** i))
    d_layers.append(nn.LeakyReLU(0.2, inplace=True))
    cin = width * 2 ** i
  d_layers.append(nn.Conv2d(cin, 1, start, 1, 0, bias=d_bias))
  g, d = place(nn.Sequential(*g_layers)), place(nn.Sequential(*d_layers))
  betas = (config.train.b1, config.train.b2)
  g_opt = torch.optim.Adam(g.parameters(), lr=config.train.learning_rate, betas=betas)
  d_opt = torch.optim.Adam(d.parameters(), lr=config.gan.d_learning_rate, betas=betas)
  loss = nn.BCEWithLogitsLoss()
  real = place(torch.from_numpy(pseudo_images(config).transpose(0, 3, 1, 2).copy()))
  n = real.shape[0]
  ones, zeros = place(torch.ones(n)), place(torch.zeros(n))
  g_params = list(g.parameters())
  ema = [p.detach().clone() for p in g_params] if config.gan.ema_half_life_images > 0 else None
  ema_beta = 0.5 ** (n / config.gan.ema_half_life_images) if ema else 0.0

  gamma, r1_every = config.gan.r1_gamma, config.gan.r1_every
  steps_done = [0]

  def step() -> None:
    d.zero_grad()
    with amp():
      fake = g(torch.randn(n, nz, 1, 1, device=real.device))
      d_loss = loss(d(real).view(-1), ones) + loss(d(fake.detach()).view(-1), zeros)
    d_loss.backward()
    if gamma and steps_done[0] % r1_every == 0:  # lazy R1, as the JAX step: its own pass over the reals
      real_in = real.detach().requires_grad_(True)
      with amp():
        (grad,) = torch.autograd.grad(d(real_in).sum(), real_in, create_graph=True)
      (0.5 * gamma * r1_every * grad.float().square().sum(dim=(1, 2, 3)).mean()).backward()
    d_opt.step()
    steps_done[0] += 1
    g.zero_grad()
    with amp():
      g_loss = loss(d(fake).view(-1), ones)
    g_loss.backward()
    g_opt.step()
    if ema:
      with torch.no_grad():
        torch._foreach_lerp_(ema, g_params, 1.0 - ema_beta)

  return step, sum(p.numel() for p in (*g.parameters(), *d.parameters()))


def _torch_vae(config, place, amp):
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  start, num_stages = _stages(config.data.image_size)
  widths = [config.model.width * 2 ** i for i in range(num_stages)]
  channels, latent = config.data.channels, config.model.latent_dim
  enc, cin = [], channels
  for c in widths:
    enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.ReLU(True)]
    cin = c
  enc += [nn.Flatten(), nn.Linear(widths[-1] * start * start, 2 * latent)]
  dec = [nn.Unflatten(1, (latent, 1, 1)), nn.ConvTranspose2d(latent, widths[-1], start), nn.ReLU(True)]
  for c in reversed(widths[:-1]):
    dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1), nn.ReLU(True)]
    cin = c
  dec.append(nn.ConvTranspose2d(cin, channels, 4, 2, 1))
  encoder, decoder = place(nn.Sequential(*enc)), place(nn.Sequential(*dec))
  params = [*encoder.parameters(), *decoder.parameters()]
  opt = torch.optim.Adam(params, lr=config.train.learning_rate, betas=(config.train.b1, config.train.b2))
  images = place(torch.from_numpy(pseudo_images(config).transpose(0, 3, 1, 2).copy()))
  var = config.vae.decoder_std ** 2

  def step() -> None:
    opt.zero_grad()
    with amp():
      mean, logvar = encoder(images).chunk(2, dim=1)
      z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
      out = decoder(z)
      if config.vae.likelihood == "bernoulli":
        nll = nn.functional.binary_cross_entropy_with_logits(out, (images + 1) / 2, reduction="none")
      else:
        nll = 0.5 * (images - out) ** 2 / var + 0.5 * np.log(2 * np.pi * var)
      kl = 0.5 * (logvar.exp() + mean ** 2 - 1 - logvar).sum(1)
      loss = (nll.sum((1, 2, 3)) + config.vae.beta * kl).mean()
    loss.backward()
    opt.step()

  return step, sum(p.numel() for p in params)


def _torch_runner(config):
  """Returns (run(steps), parameter count, peak GPU bytes or None) for the PyTorch reference.

  When JAX runs on a GPU, PyTorch runs on CUDA with channels-last tensors (its fast layout for
  convolutions) and cuDNN autotuning; with compute_dtype bfloat16 the forward passes run under
  bf16 autocast (params and optimiser state float32, as in the JAX step).
  """
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  cuda = jax.default_backend() == "gpu"
  device = torch.device("cuda" if cuda else "cpu")
  layout = torch.channels_last if cuda else torch.contiguous_format
  torch.backends.cudnn.benchmark = cuda

  def place(x):  # a module, or a tensor (only 4-D ones have a layout)
    if isinstance(x, torch.Tensor) and x.dim() != 4:
      return x.to(device)
    return x.to(device, memory_format=layout)

  def amp():
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=config.train.compute_dtype == "bfloat16")

  if cuda:
    torch.cuda.reset_peak_memory_stats()
  step, num_params = (_torch_dcgan if config.model.family == "gan" else _torch_vae)(config, place, amp)

  def run(steps: int) -> None:
    for _ in range(steps):
      step()
    if cuda:
      torch.cuda.synchronize()

  run(2)
  return run, num_params, torch.cuda.max_memory_allocated() if cuda else None


# --- driver ------------------------------------------------------------------------------------

def _peak_rss_mib(framework: str, case: str, compute_dtype: str, batch_size: int) -> float:
  """Peak RSS of a fresh process that builds, compiles and runs 3 steps of one case."""
  out = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--rss_of", framework, case,
                        "--compute_dtype", compute_dtype, "--batch_size", str(batch_size)],
                       capture_output=True, text=True,
                       check=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
  return float(out.stdout.split()[-1])


def _proc_status_mib(field: str) -> float:
  with open("/proc/self/status", encoding="ascii") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _rss_child(framework: str, case: str, compute_dtype: str, batch_size: int) -> None:
  """Prints peak RSS minus the RSS after imports (which TensorFlow and torch dominate)."""
  if framework == "torch":
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  config = step_configs(compute_dtype, batch_size)[case]
  baseline = _proc_status_mib("VmRSS")
  run = (_jax_runner if framework == "jax" else _torch_runner)(config)[0]
  run(3 * config.train.steps_per_dispatch)
  # VmHWM, not ru_maxrss: the latter survives exec, so it would include the parent's peak.
  print(_proc_status_mib("VmHWM") - baseline)


def _seconds(fn, steps: int) -> float:
  start = time.perf_counter()
  fn(steps)
  return time.perf_counter() - start


def _steps_per_repeat(config, dispatches: int) -> int:
  """Train steps in `dispatches` jitted calls, rounded up with lazy R1 to whole R1 periods (one R1
  step each, so every repeat does the same work)."""
  k = config.train.steps_per_dispatch
  if config.model.family != "gan" or config.gan.r1_gamma == 0:
    return dispatches * k
  period = math.lcm(k, config.gan.r1_every)
  return -(-dispatches * k // period) * period


def _input_rates(quick: bool) -> dict[int, float]:
  """Host input-pipeline img/s at 28 and 64 px, batch 64 (benchmarks/input_pipeline.py's setup)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  from aigc_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from benchmarks import input_pipeline  # pylint: disable=import-outside-toplevel
  rates = {}
  with tempfile.TemporaryDirectory(prefix="aigc_jax_bench_") as data_dir:
    for size in (28, 64):
      config = input_pipeline.mnist_config(size, data_dir, 64, False)
      batches = pipeline.local_batches(config.data, batch_size=64, seed=0)
      rates[size] = input_pipeline.images_per_second(
          batches, 64, 20 if quick else 100, 3, sync=lambda b: b)
  return rates


# Dense bf16 tensor-core peak from the vendor's datasheets (SXM parts), for model FLOP utilisation.
_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _bf16_peak_tflops(device_kind: str) -> float | None:
  return next((v for k, v in _BF16_PEAK_TFLOPS.items() if k in device_kind), None)


def main() -> None:
  """Prints a markdown table: img/s JAX vs PyTorch per case, compile time, memory, input rates."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smoke run: 28x28 cases, 1 repeat")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=4,
                      help="jitted calls per timed repeat (with lazy R1: rounded up to whole R1 periods)")
  parser.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batch_size", type=int, default=0, help="every case's batch (0: its config's)")
  parser.add_argument("--cases", default="", help="comma-separated case-name prefixes to run")
  parser.add_argument("--rss_of", nargs=2, metavar=("FRAMEWORK", "CASE"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.rss_of:
    _rss_child(*args.rss_of, args.compute_dtype, args.batch_size)
    return
  import torch  # pylint: disable=import-outside-toplevel
  # torch would start a thread per core of the machine even under `taskset`: oversubscribed
  # OpenMP threads collapse, so both frameworks get the CPUs this process may run on.
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  gpu = jax.default_backend() == "gpu"
  cases = step_configs(args.compute_dtype, args.batch_size)
  if args.quick:
    cases = {name: c for name, c in cases.items() if "28x28" in name}
    args.repeats, args.steps = min(args.repeats, 1), 2
  if args.cases:
    cases = {n: c for n, c in cases.items() if any(n.startswith(p) for p in args.cases.split(","))}
  device_kind = jax.devices()[0].device_kind
  torch_device = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
  print(f"jax {jax.__version__} ({device_kind}, {jax.device_count()} device), "
        f"torch {torch.__version__} ({torch_device}), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPU cores, "
        f"compute_dtype {args.compute_dtype}; load average before: {os.getloadavg()[0]:.2f}")

  frameworks = ["JAX", "PyTorch"]
  runners, compile_s, temp_mib, flops, device_mib, param_counts = {}, {}, {}, {}, {}, {}
  for name, config in cases.items():
    for framework in frameworks:
      if framework == "PyTorch":
        run, num_params, peak_bytes = _torch_runner(config)
      else:
        run, compile_s[name], temp_bytes, num_params, flops[name], peak_bytes = _jax_runner(config)
        temp_mib[name] = temp_bytes / 2**20
      device_mib[name, framework] = (peak_bytes or 0) / 2**20
      if num_params != param_counts.setdefault(name, num_params):
        raise AssertionError(f"{name}: {framework} has {num_params} parameters, "
                             f"not {param_counts[name]}")
      run(config.train.steps_per_dispatch)  # Warm-up beyond the first step: allocator pools, caches.
      runners[name, framework] = run

  times = {key: [] for key in runners}
  for _ in range(args.repeats):
    for (name, framework), run in runners.items():
      steps = _steps_per_repeat(cases[name], args.steps)
      times[name, framework].append(_seconds(run, steps) / steps)
  load = os.getloadavg()[0]

  peak = _bf16_peak_tflops(device_kind) if gpu and args.compute_dtype == "bfloat16" else None
  memory_header = ("device MiB, JAX (XLA buffers) / PyTorch (peak allocated)" if gpu
                   else "peak RSS over imports, MiB, JAX / PyTorch")
  print(f"\nmedian of {args.repeats} repeats x {args.steps} steps (lazy R1: whole R1 periods); "
        f"load average after: {load:.2f}"
        + (f"; MFU against {peak:.0f} TFLOP/s (datasheet dense bf16)" if peak else ""))
  print("| case | batch | JAX img/s | PyTorch img/s | JAX/PyTorch | model GFLOP/step | MFU JAX / PyTorch "
        f"| JAX compile s | XLA temp MiB | {memory_header} |")
  print("|---" * 10 + "|")
  rates = {}
  for name, config in cases.items():
    batch = config.train.batch_size
    seconds = {f: statistics.median(times[name, f]) for f in frameworks}
    rate = {f: batch / seconds[f] for f in frameworks}
    rates[name] = rate["JAX"]
    mfu = " / ".join(f"{flops[name] / seconds[f] / (peak * 1e12):.1%}" for f in frameworks) if peak else "-"
    if gpu:
      memory = " / ".join(f"{device_mib[name, f]:,.0f}" for f in frameworks)
    else:
      memory = "-" if args.quick else " / ".join(
          f"{_peak_rss_mib(f, name, args.compute_dtype, args.batch_size):,.0f}" for f in ("jax", "torch"))
    print(f"| {name} | {batch} | {rate['JAX']:,.1f} | {rate['PyTorch']:,.1f} | "
          f"{rate['JAX'] / rate['PyTorch']:.2f}x | {flops[name] / 1e9:,.2f} | {mfu} | "
          f"{compile_s[name]:.1f} | {temp_mib[name]:,.0f} | {memory} |", flush=True)

  try:
    input_rates = _input_rates(args.quick)
  except ImportError as e:  # the GPU machines' images carry no TensorFlow
    print(f"\ninput pipeline not measured: {e}")
    return
  print("\n| input pipeline (host batches of 64) | img/s | fastest train step at that size | ratio |")
  print("|---|---|---|---|")
  for size, rate in input_rates.items():
    step_rate = max((r for n, r in rates.items() if f"{size}x{size}" in n), default=None)
    if step_rate is None:
      print(f"| {size}x{size} | {rate:,.0f} | - | - |")
      continue
    verdict = "ok" if rate >= 5 * step_rate else "BELOW 5x"
    print(f"| {size}x{size} | {rate:,.0f} | {step_rate:,.1f} | {rate / step_rate:,.0f}x ({verdict}) |")


if __name__ == "__main__":
  main()
