"""Sampling: image grids from a trained checkpoint, and rule-based images without one.

Library: `load_run(workdir, step)`, `latents_from_seeds`, `truncate`, `slerp`, `run`.
CLI: `python -m aigc_jax.sample --workdir=DIR --seeds=0-63 --out=grid.png`, or
`--model=dcgan_mnist` (also `cgan_mnist`, `vae_mnist`) for a shipped pretrained model
(`--mode=generate|reconstruct|interpolate|rule|noise`, `--class`, `--trunc`; see --help).
For a VAE, `--mode=interpolate --seeds=3,7` encodes images 3 and 7 of the run's evaluation
split and decodes the straight line between their posterior means.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import checkpoints, config as config_lib, images, trainers
from aigc_jax.errors import UserError

MODES = ("generate", "reconstruct", "interpolate", "rule", "noise")
# jax.random.key keeps 32 bits of a seed (without x64): larger seeds would alias smaller ones.
MAX_SEED = 2 ** 32 - 1


def parse_seeds(spec: str) -> list[int]:
  """Parses '0-63', '1,5,9' or '0-3,10' into a list of non-negative seeds."""
  seeds: list[int] = []
  for part in spec.split(","):
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
    if not m:
      raise UserError(f"--seeds={spec!r} is not valid: use a list and ranges such as 0-63 or 1,5,9")
    lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
    if hi > MAX_SEED:
      raise UserError(f"--seeds={spec!r} is not valid: seeds go up to {MAX_SEED}")
    if hi < lo:
      raise UserError(f"--seeds={spec!r} is not valid: range {lo}-{hi} is empty")
    seeds.extend(range(lo, hi + 1))
  return seeds


def load_run(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any, int]:
  """Loads (config, state, step) from a run's checkpoint: the newest usable one, or `step`.

  A damaged or non-finite checkpoint is refused in one line (skipped, with a warning, if newer
  ones were asked for by default).
  """
  config = config_lib.complete(checkpoints.read_config(workdir))
  manager = checkpoints.create_manager(workdir, read_only=True)
  steps = sorted(manager.all_steps())
  if not steps:
    raise UserError(f"no checkpoint in {workdir!r}")
  if step is not None and step not in steps:
    raise UserError(f"--step={step} has no checkpoint in {workdir!r}; available: "
                    f"{', '.join(map(str, steps))}")
  trainer = trainers.get_trainer(config)
  key = jax.random.key(0)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(lambda k: trainer.init_state(config, k), key))
  state, _ = checkpoints.restore(manager, step, abstract, key)  # step None: the newest usable one
  manager.close()
  return config, state, int(state.step)


def latents_from_seeds(seeds: Sequence[int], latent_dim: int) -> jax.Array:
  """One standard-normal latent per seed, so a seed names the same image in any grid."""
  return jnp.stack([jax.random.normal(jax.random.key(s), (latent_dim,)) for s in seeds])


def truncate(z: jax.Array, psi: float) -> jax.Array:
  """The truncation trick for a N(0, I) prior: z moved towards its mean 0, z' = psi * z."""
  return psi * z


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between latents a and b at fractions t ([T]) -> [T, D]."""
  a_n, b_n = a / jnp.linalg.norm(a), b / jnp.linalg.norm(b)
  omega = jnp.arccos(jnp.clip(jnp.dot(a_n, b_n), -1.0, 1.0))
  t = t[:, None]
  so = jnp.sin(omega)
  safe = jnp.where(so < 1e-6, 1.0, so)
  out = (jnp.sin((1 - t) * omega) * a + jnp.sin(t * omega) * b) / safe
  return jnp.where(so < 1e-6, (1 - t) * a + t * b, out)


def _write(out: str, frames: np.ndarray, ncols: int | None = None) -> None:
  """Writes images in [-1,1] as a PNG grid, or as an animated GIF when `out` ends in .gif."""
  if out.lower().endswith(".gif"):
    images.save_gif(out, [images.upscale_for_display(f, 128) for f in images.to_uint8(frames)])
  else:
    images.save_png(out, images.upscale_for_display(images.make_grid(frames, ncols)))


def _labels(config, class_idx: int | None, seed_list: Sequence[int]) -> jax.Array | None:
  """--class for every image; without it a conditional model draws class seed % num_classes per seed."""
  if class_idx is None:
    if not config.model.num_classes:
      return None
    return jnp.asarray(np.asarray(seed_list, np.int64) % config.model.num_classes, jnp.int32)
  if not config.model.num_classes:
    raise UserError("--class needs a class-conditional model (this one has model.num_classes=0)")
  if not 0 <= class_idx < config.model.num_classes:
    raise UserError(f"--class={class_idx} is out of range: 0..{config.model.num_classes - 1}")
  return jnp.full((len(seed_list),), class_idx, jnp.int32)


def _load(workdir: str | None, model: str | None, step: int | None, mode: str):
  if workdir and model:
    raise UserError("give --workdir (a training run) or --model (a shipped model), not both")
  if model:
    if step is not None:
      raise UserError("--step picks a checkpoint of a run; a shipped --model has one")
    from aigc_jax import pretrained
    return pretrained.load(model)
  if not workdir:
    raise UserError(f"--mode={mode} needs --workdir=DIR of a training run or --model=NAME")
  config, state, _ = load_run(workdir, step)
  return config, state


def _interpolate_encoded(config, state, trainer, seed_list: list[int], frames: int,
                         labels: jax.Array | None) -> jax.Array:
  """Decodes the line between the posterior means of two evaluation images (indices from --seeds)."""
  from aigc_jax import data
  pictures, classes = data.load_examples(config.data, config.data.eval_split, max(seed_list[:2]) + 1)
  index = np.asarray(seed_list[:2])
  own = jnp.asarray(classes[index]) if config.model.num_classes else None
  ends = trainer.encode(config, state, jnp.asarray(pictures[index]), own)
  if own is not None and labels is None:
    labels = jnp.full((frames,), own[0])  # Decode with the first image's class unless --class says.
  t = jnp.linspace(0.0, 1.0, frames)[:, None]
  return trainer.generate(config, state, None, frames, labels, z=(1 - t) * ends[0] + t * ends[1])


def run(mode: str, out: str, *, workdir: str | None = None, model: str | None = None,
        step: int | None = None, seeds: str = "0-63", class_idx: int | None = None, num: int = 16,
        frames: int = 10, trunc: float = 1.0, input_path: str | None = None, transform: str = "",
        seed: int = 0, size: int = 64, channels: int = 3) -> str:
  """Runs one sampling mode and writes `out`; returns the path written."""
  if mode not in MODES:
    raise UserError(f"--mode={mode!r} is not valid: choose one of {', '.join(MODES)}")
  if not 0 <= trunc <= 1:
    raise UserError(f"--trunc={trunc} is not valid: the truncation psi must be in [0, 1] (1: off)")
  for name, value in (("num", num), ("frames", frames), ("size", size)):
    if value < 1:
      raise UserError(f"--{name}={value} is not valid: need at least 1")
  images.check_writable(out)
  if not out.lower().endswith((".png", ".gif")):
    raise UserError(f"--out={out!r} is not valid: write a .png grid or a .gif animation")
  if mode == "rule":
    from aigc_jax import transforms
    if not input_path:
      raise UserError("--mode=rule needs --input=IMAGE")
    picture = images.load_image(input_path)
    result = transforms.rule_images(jax.random.key(seed), jnp.asarray(picture), transform, num)
    _write(out, np.asarray(result))
    return out
  if mode == "noise":
    from aigc_jax import transforms
    if not 1 <= channels <= 4:
      raise UserError(f"--channels={channels} is not valid: write 1 (grey), 2 (grey + alpha), 3 (RGB) "
                      "or 4 (RGBA)")
    result = transforms.noise_images(jax.random.key(seed), num, size, channels, transform)
    _write(out, np.asarray(result))
    return out

  seed_list = parse_seeds(seeds)
  config, state = _load(workdir, model, step, mode)
  trainer = trainers.get_trainer(config)
  if not hasattr(trainer, "generate"):
    raise UserError(f"{workdir or model!r} is a {config.model.family}, which does not generate images")
  if mode == "generate":
    z = truncate(latents_from_seeds(seed_list, config.model.latent_dim), trunc)
    result = trainer.generate(config, state, None, len(seed_list), _labels(config, class_idx, seed_list), z=z)
    _write(out, np.asarray(result))
  elif mode == "reconstruct":
    if config.model.family != "vae":
      raise UserError("--mode=reconstruct needs a VAE run")
    from aigc_jax import data
    pictures, classes = data.load_examples(config.data, config.data.eval_split, num)
    originals = jnp.asarray(pictures)
    recon = trainer.reconstruct(config, state, originals,
                                jnp.asarray(classes) if config.model.num_classes else None)
    pairs = np.stack([np.asarray(originals), np.asarray(recon)], axis=1).reshape(-1, *originals.shape[1:])
    _write(out, pairs, ncols=2 * int(np.ceil(np.sqrt(num))))
  else:  # interpolate
    if len(seed_list) < 2:
      raise UserError("--mode=interpolate needs two seeds, e.g. --seeds=3,7")
    # One class along the walk: --class, else the first seed's (GAN) or first image's (VAE).
    labels = _labels(config, class_idx, [seed_list[0]] * frames)
    if config.model.family == "vae":
      result = _interpolate_encoded(config, state, trainer, seed_list, frames,
                                    None if class_idx is None else labels)
    else:
      z = truncate(latents_from_seeds(seed_list[:2], config.model.latent_dim), trunc)
      path = slerp(z[0], z[1], jnp.linspace(0.0, 1.0, frames))
      result = trainer.generate(config, state, None, frames, labels, z=path)
    _write(out, np.asarray(result), ncols=frames)
  return out


def main(argv) -> None:
  """CLI: parse flags and call run."""
  del argv
  from absl import flags
  F = flags.FLAGS
  path = run(F.mode, F.out, workdir=F.workdir, model=F.model, step=F.step, seeds=F.seeds,
             class_idx=getattr(F, "class"), num=F.num, frames=F.frames, trunc=F.trunc, input_path=F.input,
             transform=F.transform, seed=F.seed, size=F.size, channels=F.channels)
  print(f"wrote {path}", file=sys.stderr)


def _define_flags() -> None:
  from absl import flags
  flags.DEFINE_enum("mode", "generate", MODES, "What to write: samples, VAE reconstructions, a "
                    "latent interpolation, rule-based variants of --input, or procedural noise images.")
  flags.DEFINE_string("workdir", None, "Training run directory (generate, reconstruct, interpolate).")
  flags.DEFINE_string("model", None, "A shipped pretrained model instead of --workdir: dcgan_mnist, "
                      "cgan_mnist or vae_mnist.")
  flags.DEFINE_float("trunc", 1.0, "Truncation psi in [0, 1]: latents are scaled by psi (1: off).")
  flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the latest).")
  flags.DEFINE_string("seeds", "0-63", "Seeds, one image each: ranges and lists, e.g. 0-63 or 1,5,9.")
  flags.DEFINE_integer("class", None, "Class to sample from a class-conditional model (default: "
                       "seed % num_classes for each seed).")
  flags.DEFINE_string("out", "samples.png", "Output file: .png grid, or .gif for --mode=interpolate.")
  flags.DEFINE_integer("num", 16, "Number of images (reconstruct, rule, noise).")
  flags.DEFINE_integer("frames", 10, "Interpolation steps between the two seeds.")
  flags.DEFINE_string("input", None, "Input image for --mode=rule.")
  flags.DEFINE_string("transform", "", "Transform spec, e.g. 'rotate(-15,15)|gaussian_noise(0.05)'.")
  flags.DEFINE_integer("seed", 0, "PRNG seed for --mode=rule and --mode=noise.")
  flags.DEFINE_integer("size", 64, "Image size for --mode=noise.")
  flags.DEFINE_integer("channels", 3, "Channels for --mode=noise.")


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  _define_flags()
  run_main(main)
