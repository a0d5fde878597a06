"""Sampling: image grids from a trained model, and rule-based or noise images without one.

Library: `generate_grid`, `interpolation`, `trajectory`, `reconstructions` (each one task, from a
loaded `(config, state)`; see `aigc_jax.runs`), and `run`, which the CLI calls:

    python -m aigc_jax.sample --workdir=DIR --seeds=0-63 --out=grid.png
    python -m aigc_jax.sample --model=dcgan_mnist --seeds=0-63 --out=grid.png   # a shipped model
    python -m aigc_jax.sample --workdir=DIR --seeds=0-49999 --outdir=fakes/  # one PNG per seed
    python -m aigc_jax.sample --mode=interpolate --workdir=DIR --seeds=3,7 --out=walk.gif
    python -m aigc_jax.sample --mode=rule --input=photo.png --transform='rotate(-15,15)' --out=r.png
    python -m aigc_jax.sample --mode=noise --transform='fbm(octaves=5)' --size=64 --out=n.png

A seed names one image in any grid. Sampling options (`--trunc`, and whatever else the model's family
takes) come from the families; a flag that does not apply to the mode or the model is refused in one
line rather than ignored. Interpolation walks between two seeds' noise (spherically), or, for
families that encode, between the encodings of two evaluation images (indices from --seeds).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import generation, images, runs, trainers
from aigc_jax.errors import MAX_SEED, UserError, check_seed

MODEL_MODES = ("generate", "reconstruct", "interpolate", "trajectory")
MODES = MODEL_MODES + ("rule", "noise")
# The arguments each mode reads besides `out`; any other that is given is refused.
_MODEL_SOURCE = ("workdir", "model", "step")
MODE_ARGUMENTS = {
    "generate": _MODEL_SOURCE + ("seeds", "class_idx", "options", "outdir"),
    "interpolate": _MODEL_SOURCE + ("seeds", "class_idx", "frames", "options"),
    "trajectory": _MODEL_SOURCE + ("seeds", "class_idx", "frames", "options"),
    "reconstruct": _MODEL_SOURCE + ("num",),
    "rule": ("input_path", "transform", "seed", "num"),
    "noise": ("transform", "seed", "num", "size", "channels"),
}
DEFAULTS = {"seeds": "0-63", "num": 16, "frames": 10, "seed": 0, "size": 64, "channels": 3,
            "transform": ""}
FLAG_NAMES = {"class_idx": "class", "input_path": "input"}
SEED_FILE = "seed{:06d}.png"  # one image per seed in --outdir (stylegan2-ada's naming, 6 digits)


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


def _labels(config: ml_collections.ConfigDict, class_idx: int | None, seeds: Sequence[int]) -> jax.Array | None:
  """--class for every image; without it a conditional model draws class seed % K per seed."""
  given = generation.class_labels(config, class_idx, len(seeds))
  return generation.cycled_labels(config, seeds) if given is None else given


def generate_grid(config: ml_collections.ConfigDict, state: Any, seeds: Sequence[int],
                  class_idx: int | None = None, options: Mapping[str, Any] | None = None) -> jax.Array:
  """One image per seed."""
  return generation.from_seeds(config, state, seeds, _labels(config, class_idx, seeds), options)


def write_seed_images(config: ml_collections.ConfigDict, state: Any, seeds: Sequence[int], outdir: str,
                      class_idx: int | None = None, options: Mapping[str, Any] | None = None,
                      batch_size: int = 64, progress: bool = True) -> tuple[int, int]:
  """Writes one PNG per seed (`SEED_FILE`, at the model's resolution) into `outdir`.

  Seeds whose file exists are skipped, so an interrupted run resumes; each file is written
  atomically. Returns (written, skipped).
  """
  os.makedirs(outdir, exist_ok=True)
  todo = [s for s in seeds if not os.path.exists(os.path.join(outdir, SEED_FILE.format(s)))]
  generate = generation.make_generate(config, options)
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), unit=" images", file=sys.stderr,
               mininterval=1.0)
  for start in range(0, len(todo), batch_size):
    chunk = todo[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))  # one compiled batch size
    labels = _labels(config, class_idx, padded)
    pictures = images.to_uint8(np.asarray(generate(state, generation.seed_noise(config, padded), labels,
                                                   generation.seed_sampler_keys(padded))))
    for seed, picture in zip(chunk, pictures):
      images.save_png(os.path.join(outdir, SEED_FILE.format(seed)), picture)
    if bar is not None:
      bar.update(len(chunk))
  if bar is not None:
    bar.close()
  return len(todo), len(seeds) - len(todo)


def _interpolate_encoded(config: ml_collections.ConfigDict, state: Any, indices: Sequence[int],
                         frames: int, class_idx: int | None) -> jax.Array:
  """Decodes the line between the encodings of two evaluation images."""
  from aigc_jax import data
  family = trainers.get_family(config)
  pictures, classes = data.load_examples(config.data, config.data.eval_split, max(indices[:2]) + 1)
  index = np.asarray(indices[:2])
  own = jnp.asarray(classes[index]) if config.model.num_classes else None
  ends = family.encode(config, state, jnp.asarray(pictures[index]), own)
  labels = generation.class_labels(config, class_idx, frames)
  if own is not None and labels is None:
    labels = jnp.full((frames,), own[0])  # the first image's class unless --class says
  path = generation.lerp(ends[0], ends[1], jnp.linspace(0.0, 1.0, frames))
  keys = jax.random.split(jax.random.key(0), frames)
  return generation.make_generate(config)(state, path, labels, keys)


def interpolation(config: ml_collections.ConfigDict, state: Any, seeds: Sequence[int], frames: int,
                  class_idx: int | None = None, options: Mapping[str, Any] | None = None) -> jax.Array:
  """`frames` images along the walk between the first two seeds (one class along the walk)."""
  if len(seeds) < 2:
    raise UserError("--mode=interpolate needs two seeds, e.g. --seeds=3,7")
  family = trainers.get_family(config)
  if family.can("encode"):
    if options:
      raise UserError(f"--{', --'.join(options)} does not apply to walks between {family.name} encodings")
    return _interpolate_encoded(config, state, seeds, frames, class_idx)
  ends = generation.seed_noise(config, seeds[:2])
  path = generation.slerp(ends[0], ends[1], jnp.linspace(0.0, 1.0, frames))
  keys = jnp.broadcast_to(generation.seed_sampler_keys(seeds[:1]), (frames,))
  labels = _labels(config, class_idx, [seeds[0]] * frames)
  return generation.make_generate(config, options)(state, path, labels, keys)


def trajectory(config: ml_collections.ConfigDict, state: Any, seeds: Sequence[int], frames: int,
               class_idx: int | None = None, options: Mapping[str, Any] | None = None) -> jax.Array:
  """[frames, N, H, W, C]: each seed's image as sampling takes it from noise to the end."""
  labels = _labels(config, class_idx, seeds)
  run = generation.make_generate(config, options, what="trajectory")
  return run(state, generation.seed_noise(config, seeds), labels, generation.seed_sampler_keys(seeds), frames)


def reconstructions(config: ml_collections.ConfigDict, state: Any, num: int) -> np.ndarray:
  """The first `num` evaluation images and their reconstructions, interleaved ([2 num, H, W, C])."""
  from aigc_jax import data
  family = trainers.get_family(config)
  trainers.require(family, "encode", "reconstruct")
  pictures, classes = data.load_examples(config.data, config.data.eval_split, num)
  originals = jnp.asarray(pictures)
  labels = jnp.asarray(classes) if config.model.num_classes else None
  codes = family.encode(config, state, originals, labels)
  recon = generation.make_generate(config)(state, codes, labels, jax.random.split(jax.random.key(0), num))
  return np.stack([np.asarray(originals), np.asarray(recon)], axis=1).reshape(-1, *originals.shape[1:])


def write_images(out: str, frames: np.ndarray, ncols: int | None = None) -> None:
  """Writes images in [-1,1] as a PNG grid, or as an animated GIF when `out` ends in .gif."""
  if out.lower().endswith(".gif"):
    images.save_gif(out, [images.upscale_for_display(f, 128) for f in images.to_uint8(frames)])
  else:
    images.save_png(out, images.upscale_for_display(images.make_grid(frames, ncols)))


def _check_arguments(mode: str, given: Mapping[str, Any]) -> dict[str, Any]:
  """Refuses arguments the mode does not read; returns the mode's arguments with defaults filled."""
  if mode not in MODES:
    raise UserError(f"--mode={mode!r} is not valid: choose one of {', '.join(MODES)}")
  allowed = MODE_ARGUMENTS[mode]
  for name, value in given.items():
    if value is not None and value != {} and name not in allowed:
      flag = ("--" + ", --".join(value) if name == "options" else "--" + FLAG_NAMES.get(name, name))
      raise UserError(f"{flag} does not apply to --mode={mode} (it takes: "
                      f"{', '.join('--' + FLAG_NAMES.get(a, a) for a in allowed if a != 'options')})")
  args = {name: given.get(name) if given.get(name) is not None else DEFAULTS.get(name) for name in allowed}
  for name in ("num", "frames", "size"):
    if name in args and args[name] < 1:
      raise UserError(f"--{name}={args[name]} is not valid: need at least 1")
  if "seed" in args:
    check_seed("--seed", args["seed"])
  return args


def run(mode: str, out: str | None, *, workdir: str | None = None, model: str | None = None,
        step: int | None = None, seeds: str | None = None, class_idx: int | None = None,
        num: int | None = None, frames: int | None = None, input_path: str | None = None,
        transform: str | None = None, seed: int | None = None, size: int | None = None,
        channels: int | None = None, outdir: str | None = None, **options: Any) -> str:
  """Runs one sampling mode and writes `out` (or, for generate, one PNG per seed into `outdir`);
  returns the path written.

  Arguments left None take the mode's defaults; one given that the mode does not read is a
  UserError. `options` are the model family's sampling options (e.g. trunc=0.7).
  """
  args = _check_arguments(mode, dict(
      workdir=workdir, model=model, step=step, seeds=seeds, class_idx=class_idx, num=num,
      frames=frames, input_path=input_path, transform=transform, seed=seed, size=size,
      channels=channels, outdir=outdir, options={k: v for k, v in options.items() if v is not None}))
  if outdir is not None:
    if out is not None:
      raise UserError("give --out (one grid) or --outdir (one PNG per seed), not both")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
      raise UserError(f"--outdir={outdir!r} is a file, not a folder")
  else:
    out = "samples.png" if out is None else out
    images.check_writable(out)
    if not out.lower().endswith((".png", ".gif")):
      raise UserError(f"--out={out!r} is not valid: write a .png grid or a .gif animation")
  if mode == "rule":
    from aigc_jax import transforms
    if not args["input_path"]:
      raise UserError("--mode=rule needs --input=IMAGE")
    picture = images.load_image(args["input_path"])
    result = transforms.rule_images(jax.random.key(args["seed"]), jnp.asarray(picture),
                                    args["transform"], args["num"])
    write_images(out, np.asarray(result))
    return out
  if mode == "noise":
    from aigc_jax import transforms
    if not 1 <= args["channels"] <= 4:
      raise UserError(f"--channels={args['channels']} is not valid: write 1 (grey), 2 (grey + alpha), "
                      "3 (RGB) or 4 (RGBA)")
    result = transforms.noise_images(jax.random.key(args["seed"]), args["num"], args["size"],
                                     args["channels"], args["transform"])
    write_images(out, np.asarray(result))
    return out

  seed_list = parse_seeds(args["seeds"]) if "seeds" in args else []
  config, state, _ = runs.load(args["workdir"], args["model"], args["step"])
  family = trainers.get_family(config)
  trainers.require(family, "generate", "generate images")
  opts = args.get("options") or {}
  names = config.data.get("class_names") or []
  if args.get("class_idx") is not None and 0 <= args["class_idx"] < len(names):
    print(f"class {args['class_idx']}: {names[args['class_idx']]}", file=sys.stderr)
  if outdir is not None:
    written, skipped = write_seed_images(config, state, seed_list, outdir, args["class_idx"], opts)
    print(f"{written} images written, {skipped} already there", file=sys.stderr)
    return outdir
  if mode == "generate":
    write_images(out, np.asarray(generate_grid(config, state, seed_list, args["class_idx"], opts)))
  elif mode == "reconstruct":
    write_images(out, reconstructions(config, state, args["num"]), ncols=2 * int(np.ceil(np.sqrt(args["num"]))))
  elif mode == "interpolate":
    result = interpolation(config, state, seed_list, args["frames"], args["class_idx"], opts)
    write_images(out, np.asarray(result), ncols=args["frames"])
  else:  # trajectory: a GIF whose frames are grids of the seeds' images along the way
    steps = np.asarray(trajectory(config, state, seed_list, args["frames"], args["class_idx"], opts))
    if out.lower().endswith(".gif"):
      images.save_gif(out, [images.upscale_for_display(images.to_uint8(images.make_grid(f)), 128)
                            for f in steps])
    else:
      write_images(out, steps.transpose(1, 0, 2, 3, 4).reshape(-1, *steps.shape[2:]), ncols=args["frames"])
  return out


def option_flags() -> dict[str, trainers.SampleOption]:
  """Every family's sampling options by name (the first family to declare a name gives its help)."""
  options: dict[str, trainers.SampleOption] = {}
  for family in trainers.families().values():
    for option in family.sample_options:
      options.setdefault(option.name, option)
  return options


def define_option_flags() -> None:
  """Defines a flag for each family's sampling option (sample and evaluate share them)."""
  from absl import flags
  definers = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string}
  for name, option in option_flags().items():
    takers = [f.name for f in trainers.families().values() if any(o.name == name for o in f.sample_options)]
    definers[option.flag_type](name, option.default, f"{option.help} (families: {', '.join(takers)})")


def given_options() -> dict[str, Any]:
  """The sampling options set on the command line."""
  from absl import flags
  return {name: flags.FLAGS[name].value for name in option_flags() if flags.FLAGS[name].present}


def main(argv) -> None:
  """CLI: pass the flags given to `run` (the ones not given keep their defaults)."""
  del argv
  from absl import flags
  F = flags.FLAGS

  def given(name):
    return F[name].value if F[name].present else None

  options = given_options()
  path = run(F.mode, given("out"), outdir=given("outdir"), workdir=given("workdir"), model=given("model"), step=given("step"),
             seeds=given("seeds"), class_idx=given("class"), num=given("num"), frames=given("frames"),
             input_path=given("input"), transform=given("transform"), seed=given("seed"),
             size=given("size"), channels=given("channels"), **options)
  print(f"wrote {path}", file=sys.stderr)


def define_flags() -> None:
  """Defines sample's flags on absl's global FLAGS."""
  from absl import flags
  flags.DEFINE_enum("mode", "generate", MODES, "What to write: samples, reconstructions (families that "
                    "encode), a walk between two seeds, a sampling trajectory (.gif), rule-based variants "
                    "of --input, or procedural noise images.")
  flags.DEFINE_string("workdir", None, "Training run directory (model modes).")
  flags.DEFINE_string("model", None, "A shipped pretrained model instead of --workdir (model modes).")
  flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the latest).")
  flags.DEFINE_string("seeds", DEFAULTS["seeds"], "Seeds, one image each: ranges and lists, e.g. 0-63 or 1,5,9.")
  flags.DEFINE_integer("class", None, "Class to sample from a class-conditional model (default: "
                       "seed % num_classes for each seed).")
  flags.DEFINE_string("out", "samples.png", "Output file: .png grid, or .gif for interpolate and trajectory.")
  flags.DEFINE_string("outdir", None, "Instead of --out (generate): one PNG per seed in this folder, "
                      f"named {SEED_FILE.format(0)} ...; files already there are kept (resumable).")
  flags.DEFINE_integer("num", DEFAULTS["num"], "Number of images (reconstruct, rule, noise).")
  flags.DEFINE_integer("frames", DEFAULTS["frames"], "Frames of an interpolation or trajectory.")
  flags.DEFINE_string("input", None, "Input image for --mode=rule.")
  flags.DEFINE_string("transform", DEFAULTS["transform"], "Transform spec (rule, noise), e.g. "
                      "'rotate(-15,15)|gaussian_noise(0.05)'.")
  flags.DEFINE_integer("seed", DEFAULTS["seed"], "PRNG seed for --mode=rule and --mode=noise.")
  flags.DEFINE_integer("size", DEFAULTS["size"], "Image size for --mode=noise.")
  flags.DEFINE_integer("channels", DEFAULTS["channels"], "Channels for --mode=noise.")
  define_option_flags()


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  define_flags()
  run_main(main)
