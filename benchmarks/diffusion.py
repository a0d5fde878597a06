"""Diffusion throughput: the U-Net's EDM train step and EDM's Heun sampler, JAX vs PyTorch, side by side.

The JAX side is the real code: `trainers.init_sharded_state` + `trainers.compile_train_step` for the
train step (jitted, donated state), and the family's `generate` jitted with
`parallel.compiler_options` (as evaluation samples) for Heun at `--sample_steps` steps
(2 * steps - 1 network evaluations: 35 at EDM's 18). The PyTorch side builds the same U-Net
(layer for layer; the script checks the parameter counts are equal), the same EDM loss with its
log-normal noise levels, Adam with the config's betas, the EMA with the same decay, and Heun's
loop in Python under `torch.no_grad()` as NVlabs/edm's generate.py runs it. Each repeat times every
case's JAX and PyTorch runs back to back, so machine load hits both alike; medians are reported.

  python -m benchmarks.diffusion [--repeats=3] [--steps=3] [--width=32] [--batch_size=64]
      [--sample_batch=64] [--sample_steps=18] [--jax_only]

`--jax_only` skips PyTorch: the way to time candidate model configs (e.g. widths for a CPU-trained
MNIST model). On a machine shared with other work the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import config as config_lib, parallel, trainers
from aigc_jax.models import unet
from aigc_jax.trainers import diffusion


def mnist_config(width: int, batch_size: int, num_res_blocks: int, attn: tuple[int, ...],
                 channel_mult: tuple[int, ...]):
  """An EDM U-Net at 28x28x1 (MNIST), 10 classes with label dropout, EMA, Adam(0.9, 0.999)."""
  c = config_lib.base_config()
  c.diffusion = diffusion.defaults()
  c.model.family, c.model.name, c.model.width, c.model.num_classes = "diffusion", "unet", width, 10
  c.data.image_size, c.data.channels = 28, 1
  c.train.batch_size, c.train.learning_rate, c.train.b1 = batch_size, 1e-3, 0.9
  d = c.diffusion
  d.channel_mult, d.num_res_blocks, d.attn_resolutions = channel_mult, num_res_blocks, attn
  d.dropout, d.label_dropout = 0.1, 0.1
  diffusion.validate(c)
  return c


def _images(config) -> np.ndarray:
  size, channels = config.data.image_size, config.data.channels
  return np.random.default_rng(0).uniform(-1, 1, (config.train.batch_size, size, size, channels)).astype(np.float32)


# --- JAX ---------------------------------------------------------------------------------------

def jax_train_runner(config):
  """(run(steps), compile s, parameter count) for the real jitted, donated train step."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  keys = trainers.base_keys(0)
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  step = trainers.compile_train_step(config, mesh, sharding)
  images = _images(config)
  labels = np.arange(len(images), dtype=np.int32) % 10
  batches = [parallel.host_to_global({"image": images, "label": labels}, mesh)]
  start = time.perf_counter()
  compiled = step.lower(state, batches, keys["step"]).compile()
  compile_s = time.perf_counter() - start
  holder = [state]

  def run(steps: int) -> None:
    for _ in range(steps):
      holder[0], metrics = compiled(holder[0], batches, keys["step"])
    jax.block_until_ready((holder[0], metrics))

  run(1)
  return run, compile_s, sum(x.size for x in jax.tree.leaves(holder[0].params)), holder


def jax_sample_runner(config, state, num: int, steps: int):
  """(run(batches), compile s) for the family's Heun `generate` on `num` images."""
  options = {"sampler": "heun", "steps": steps}
  keys = jax.random.split(jax.random.key(2), num)  # Heun is deterministic: the keys go unused
  generate = jax.jit(lambda s, n, y: diffusion.generate(config, s, n, y, keys, options),
                     compiler_options=parallel.compiler_options(jax.devices()[0].platform))
  noise = diffusion.noise(config, jax.random.key(1), num)
  labels = jnp.arange(num, dtype=jnp.int32) % 10
  start = time.perf_counter()
  compiled = generate.lower(state, noise, labels).compile()
  compile_s = time.perf_counter() - start

  def run(batches: int) -> None:
    for _ in range(batches):
      out = compiled(state, noise, labels)
    jax.block_until_ready(out)

  run(1)
  return run, compile_s


# --- PyTorch -----------------------------------------------------------------------------------

def torch_unet(config):
  """The U-Net of aigc_jax.models.unet in PyTorch, layer for layer."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  d = config.diffusion
  width, emb_dim = config.model.width, 4 * config.model.width
  norm = lambda c: nn.GroupNorm(unet.num_groups(c), c, eps=1e-5)

  class ResBlock(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
      self.emb = nn.Linear(emb_dim, cout)
      self.norm2, self.drop = norm(cout), nn.Dropout(d.dropout)
      self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
      self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
      h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(emb))[:, :, None, None]
      h = self.conv2(self.drop(F.silu(self.norm2(h))))
      return (x if self.skip is None else self.skip(x)) + h

  class Attention(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.heads = max(1, c // 64)
      self.norm, self.qkv, self.proj = norm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
      n, c, h, w = x.shape
      qkv = self.qkv(self.norm(x).flatten(2).transpose(1, 2))  # [n, hw, 3c]
      q, k, v = qkv.reshape(n, h * w, 3 * self.heads, c // self.heads).chunk(3, dim=2)
      logits = torch.einsum("nqhd,nkhd->nhqk", q, k).float() / math.sqrt(c // self.heads)
      out = torch.einsum("nhqk,nkhd->nqhd", logits.softmax(-1).to(v.dtype), v).reshape(n, h * w, c)
      return x + self.proj(out).transpose(1, 2).reshape(n, c, h, w)

  class UNet(nn.Module):
    def __init__(self):
      super().__init__()
      mult, nrb = list(d.channel_mult), d.num_res_blocks
      sizes = unet.resolutions(config.data.image_size, len(mult))
      attn = set(d.attn_resolutions)
      self.map0, self.map1 = nn.Linear(width, emb_dim), nn.Linear(emb_dim, emb_dim)
      self.label = nn.Embedding(config.model.num_classes + 1, emb_dim) if config.model.num_classes else None
      ch = width * mult[0]
      self.stem = nn.Conv2d(config.data.channels, ch, 3, padding=1)
      self.enc, skips = nn.ModuleList(), [ch]
      for level, m in enumerate(mult):
        for _ in range(nrb):
          self.enc.append(nn.ModuleList([ResBlock(ch, width * m)] + ([Attention(width * m)] if sizes[level] in attn else [])))
          ch = width * m
          skips.append(ch)
        if level < len(mult) - 1:
          self.enc.append(nn.AvgPool2d(2))
          skips.append(ch)
      self.mid = nn.ModuleList([ResBlock(ch, ch)] + ([Attention(ch)] if sizes[-1] in attn else []) + [ResBlock(ch, ch)])
      self.dec = nn.ModuleList()
      for level in reversed(range(len(mult))):
        for _ in range(nrb + 1):
          out = width * mult[level]
          self.dec.append(nn.ModuleList([ResBlock(ch + skips.pop(), out)] + ([Attention(out)] if sizes[level] in attn else [])))
          ch = out
        if level > 0:
          self.dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
      self.out_norm, self.out_conv = norm(ch), nn.Conv2d(ch, config.data.channels, 3, padding=1)
      nn.init.zeros_(self.out_conv.weight)
      nn.init.zeros_(self.out_conv.bias)

    def forward(self, x, noise_labels, labels):
      half = width // 2
      freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
      args = noise_labels.float()[:, None] * freqs[None]
      emb = self.map1(F.silu(self.map0(torch.cat([args.cos(), args.sin()], dim=1))))
      if self.label is not None:
        emb = emb + self.label(labels)
      h = self.stem(x)
      skips = [h]
      for layer in self.enc:
        if isinstance(layer, nn.AvgPool2d):
          h = layer(h)
        else:
          h = layer[0](h, emb)
          for extra in layer[1:]:
            h = extra(h)
        skips.append(h)
      h = self.mid[0](h, emb)
      for layer in self.mid[1:-1]:
        h = layer(h)
      h = self.mid[-1](h, emb)
      for layer in self.dec:
        if isinstance(layer, nn.Upsample):
          h = layer(h)
        else:
          h = layer[0](torch.cat([h, skips.pop()], dim=1), emb)
          for extra in layer[1:]:
            h = extra(h)
      return self.out_conv(F.silu(self.out_norm(h)))

  return UNet()


def _torch_denoiser(net, sigma_data: float):
  import torch  # pylint: disable=import-outside-toplevel

  def denoise(x, sigma, labels):
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = sigma_data ** 2 / (s ** 2 + sigma_data ** 2)
    c_out = s * sigma_data / (s ** 2 + sigma_data ** 2).sqrt()
    c_in = 1 / (s ** 2 + sigma_data ** 2).sqrt()
    return c_skip * x + c_out * net(c_in * x, torch.log(sigma) / 4, labels)

  return denoise


def torch_train_runner(config):
  """(run(steps), parameter count) for the EDM train step in PyTorch, eager."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  net = torch_unet(config).train()
  params = list(net.parameters())
  opt = torch.optim.Adam(params, lr=config.train.learning_rate, betas=(config.train.b1, config.train.b2))
  d = config.diffusion
  images = torch.from_numpy(_images(config).transpose(0, 3, 1, 2).copy())
  labels = torch.arange(len(images)) % 10
  denoise = _torch_denoiser(net, d.sigma_data)
  ema = [p.detach().clone() for p in params]
  steps_done = [0]

  def step() -> None:
    opt.zero_grad()
    n = images.shape[0]
    sigma = (torch.randn(n) * d.p_std + d.p_mean).exp()
    noisy = images + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(images)
    y = torch.where(torch.rand(n) < d.label_dropout, torch.full_like(labels, 10), labels)
    weight = (sigma ** 2 + d.sigma_data ** 2) / (sigma * d.sigma_data) ** 2
    loss = (weight * ((denoise(noisy, sigma, y) - images) ** 2).mean((1, 2, 3))).mean()
    loss.backward()
    opt.step()
    half_life = min(d.ema_half_life_images, steps_done[0] * n * d.ema_rampup) if d.ema_rampup else d.ema_half_life_images
    beta = 0.5 ** (n / max(half_life, 1e-8))
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - beta)  # pylint: disable=protected-access
    steps_done[0] += 1

  def run(steps: int) -> None:
    for _ in range(steps):
      step()

  run(1)
  return run, sum(p.numel() for p in params)


def torch_sample_runner(config, num: int, steps: int):
  """run(batches) for EDM's deterministic Heun sampler in PyTorch (Algorithm 1, as edm's generate.py)."""
  import torch  # pylint: disable=import-outside-toplevel
  d = config.diffusion
  net = torch_unet(config).eval()
  denoise = _torch_denoiser(net, d.sigma_data)
  i = torch.arange(steps, dtype=torch.float64)
  t = (d.sigma_max ** (1 / d.rho) + i / (steps - 1) * (d.sigma_min ** (1 / d.rho) - d.sigma_max ** (1 / d.rho))) ** d.rho
  t = torch.cat([t, torch.zeros(1, dtype=torch.float64)])
  noise = torch.randn(num, config.data.channels, config.data.image_size, config.data.image_size)
  labels = torch.arange(num) % 10

  @torch.no_grad()
  def sample():
    x = noise * t[0]
    for k in range(steps):
      t_cur, t_next = t[k], t[k + 1]
      d_cur = (x - denoise(x, t_cur.float().expand(num), labels)) / t_cur
      x_next = x + (t_next - t_cur) * d_cur
      if k < steps - 1:
        d_prime = (x_next - denoise(x_next, t_next.float().expand(num), labels)) / t_next
        x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
      x = x_next.float()
    return x.clamp(-1, 1)

  def run(batches: int) -> None:
    for _ in range(batches):
      sample()

  run(1)
  return run


# --- driver ------------------------------------------------------------------------------------

def _seconds(fn, n: int) -> float:
  start = time.perf_counter()
  fn(n)
  return time.perf_counter() - start


def main() -> None:
  """Prints img/s of the train step and the Heun sampler, JAX and PyTorch, and their ratios."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="train steps per timed repeat")
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--num_res_blocks", type=int, default=2)
  parser.add_argument("--channel_mult", default="1,2,2")
  parser.add_argument("--attn", default="7", help="comma-separated attention resolutions")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--sample_batch", type=int, default=64)
  parser.add_argument("--sample_steps", type=int, default=18, help="Heun steps (2 * steps - 1 evaluations)")
  parser.add_argument("--jax_only", action="store_true")
  args = parser.parse_args()
  ints = lambda s: tuple(int(v) for v in s.split(",") if v)
  config = mnist_config(args.width, args.batch_size, args.num_res_blocks, ints(args.attn), ints(args.channel_mult))
  frameworks = ["JAX"] if args.jax_only else ["JAX", "PyTorch"]
  header = (f"jax {jax.__version__} ({jax.devices()[0].device_kind})"
            f"{'' if args.jax_only else ', torch ' + __import__('torch').__version__}, "
            f"{len(os.sched_getaffinity(0))} CPU cores; load average before: {os.getloadavg()[0]:.2f}")
  if not args.jax_only:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  print(header)
  print(f"U-Net 28x28x1: width {args.width}, channel_mult {args.channel_mult}, {args.num_res_blocks} res "
        f"blocks, attention at {args.attn or 'none'}; train batch {args.batch_size}; Heun {args.sample_steps} "
        f"steps ({2 * args.sample_steps - 1} evaluations) on {args.sample_batch} images", flush=True)

  runners = {}
  train_run, train_compile, jax_params, holder = jax_train_runner(config)
  runners["train", "JAX"] = train_run
  # A copy: the train step donates the state it is given.
  sample_state = jax.tree.map(jnp.copy, holder[0])
  sample_run, sample_compile = jax_sample_runner(config, sample_state, args.sample_batch, args.sample_steps)
  runners["sample", "JAX"] = sample_run
  print(f"JAX: {jax_params:,} parameters; compile train step {train_compile:.1f} s, sampler "
        f"{sample_compile:.1f} s", flush=True)
  if "PyTorch" in frameworks:
    runners["train", "PyTorch"], torch_params = torch_train_runner(config)
    if torch_params != jax_params:
      raise AssertionError(f"PyTorch U-Net has {torch_params} parameters, JAX {jax_params}")
    runners["sample", "PyTorch"] = torch_sample_runner(config, args.sample_batch, args.sample_steps)

  counts = {"train": args.steps, "sample": 1}
  times = {key: [] for key in runners}
  for _ in range(args.repeats):
    for (case, framework), run in runners.items():
      times[case, framework].append(_seconds(run, counts[case]) / counts[case])
  print(f"\nmedian of {args.repeats} repeats; load average after: {os.getloadavg()[0]:.2f}")
  print("| case | " + " | ".join(f"{f} img/s" for f in frameworks)
        + (" | JAX/PyTorch |" if len(frameworks) > 1 else " | s per step/batch |"))
  print("|---" * (len(frameworks) + 2) + "|")
  for case, images in (("train", args.batch_size), ("sample", args.sample_batch)):
    rates = {f: images / statistics.median(times[case, f]) for f in frameworks}
    label = "train step" if case == "train" else f"Heun sampler ({args.sample_steps} steps)"
    last = (f"{rates['JAX'] / rates['PyTorch']:.2f}x" if len(frameworks) > 1
            else f"{statistics.median(times[case, 'JAX']):.3f}")
    print(f"| {label} | " + " | ".join(f"{rates[f]:,.1f}" for f in frameworks) + f" | {last} |")


if __name__ == "__main__":
  main()
