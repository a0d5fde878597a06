"""Device memory of a train step against `train.grad_accum_steps` and `train.fsdp_devices`.

XLA's own accounting of the compiled step (`memory_analysis()`, per device): temporaries (the
activations a step keeps for its backward pass, which accumulation divides among micro-batches)
and arguments (the train state and the batch, which FSDP divides among the fsdp devices). Nothing
runs: each case is compiled only, so the figures hold for the device the step is compiled for.

  python -m benchmarks.memory_scaling [--config=dcgan_celeba64] [--batch_size=256]
      [--accum=1,2,4,8] [--fsdp=1,2,4,8] [--devices=8]

`--devices` fakes that many CPU devices for the FSDP cases (set before JAX starts).
"""

from __future__ import annotations

import argparse
import importlib
import os


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="dcgan_celeba64", help="a module of configs/")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--accum", default="1,2,4,8", help="train.grad_accum_steps values")
  parser.add_argument("--fsdp", default="1,2,4,8", help="train.fsdp_devices values")
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (CPU only)")
  return parser.parse_args()


def main() -> None:
  args = _parse()
  os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aigc_jax import config as config_lib, parallel, trainers  # pylint: disable=import-outside-toplevel

  def measure(grad_accum_steps: int, fsdp_devices: int, devices) -> tuple[float, float]:
    config = importlib.import_module(f"configs.{args.config}").get_config()
    config.train.batch_size = args.batch_size
    config.train.grad_accum_steps = grad_accum_steps
    config.train.fsdp_devices = fsdp_devices
    config_lib.validate(config, len(devices))
    mesh = parallel.create_mesh(devices, fsdp_devices)
    key = jax.random.key(0)
    abstract = jax.eval_shape(lambda k: trainers.get_family(config).init_state(config, k), key)
    sharding = parallel.state_shardings(abstract, mesh, int(config.train.fsdp_min_kib * 1024))
    size, channels = config.data.image_size, config.data.channels
    batch = {"image": jax.ShapeDtypeStruct((args.batch_size, size, size, channels), np.float32),
             "label": jax.ShapeDtypeStruct((args.batch_size,), np.int32)}
    step = trainers.compile_train_step(config, mesh, sharding)
    memory = step.lower(abstract, [batch], key).compile().memory_analysis()
    return memory.temp_size_in_bytes / 2**20, memory.argument_size_in_bytes / 2**20

  print(f"{args.config}, global batch {args.batch_size}, jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind}; MiB per device")
  print("| devices | train.grad_accum_steps | train.fsdp_devices | temporaries | arguments (state + batch) |")
  print("|---|---|---|---|---|")
  one = jax.devices()[:1]
  for k in map(int, args.accum.split(",")):
    temp, arguments = measure(k, 1, one)
    print(f"| 1 | {k} | 1 | {temp:,.1f} | {arguments:,.1f} |", flush=True)
  for f in map(int, args.fsdp.split(",")):
    temp, arguments = measure(1, f, jax.devices())
    print(f"| {len(jax.devices())} | 1 | {f} | {temp:,.1f} | {arguments:,.1f} |", flush=True)


if __name__ == "__main__":
  main()
