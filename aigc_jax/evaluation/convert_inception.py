"""Converts pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth) to .npz.

    python -m aigc_jax.evaluation.convert_inception --input=pt_inception-2015-12-05-6726825d.pth \
        --output=~/.cache/aigc_jax/inception_fid.npz

The .pth is read with `torch.load(weights_only=True)`: tensors and plain
containers only, never arbitrary pickled objects. Needs PyTorch (CPU is enough).
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import numpy as np

from aigc_jax import images
from aigc_jax.errors import UserError
from aigc_jax.evaluation import inception

_BN_NAMES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Maps PyTorch names and layouts (OIHW convs, [out,in] linear) to flat Flax variables."""
  flat = {}
  for name, value in state_dict.items():
    value = np.asarray(value, np.float32)
    *module, leaf = name.split(".")
    if leaf == "num_batches_tracked":
      continue
    path = "/".join(module)
    if module[-1] == "conv" and leaf == "weight":
      flat[f"params/{path}/kernel"] = value.transpose(2, 3, 1, 0)
    elif module[-1] == "bn" and leaf in _BN_NAMES:
      collection, new_leaf = _BN_NAMES[leaf]
      flat[f"{collection}/{path}/{new_leaf}"] = value
    elif module == ["fc"] and leaf in ("weight", "bias"):
      flat[f"params/fc/{'kernel' if leaf == 'weight' else 'bias'}"] = value.T if leaf == "weight" else value
    else:
      raise UserError(f"unexpected tensor {name!r}: not a pytorch-fid Inception state dict")
  inception.check_variables(flat)
  return flat


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state dict weights-only (no code runs from the pickle) as numpy arrays."""
  try:
    import torch
  except ImportError:
    raise UserError("converting the .pth needs PyTorch: pip install torch (the CPU wheel is enough)") from None
  if not os.path.isfile(path):
    raise UserError(f"{path!r} not found (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)")
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or non-weights files.
    raise UserError(f"cannot read {path!r} as a weights-only state dict: {e.__class__.__name__}") from None
  return {k: v.detach().numpy() for k, v in state_dict.items()}


def convert_file(input_path: str, output_path: str) -> None:
  """Converts the .pth at `input_path` into an .npz at `output_path`, written atomically."""
  flat = convert_state_dict(read_torch_state_dict(input_path))
  output_path = os.path.expanduser(output_path)
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **flat)
  images.write_bytes_atomic(output_path, buf.getvalue())


def main(argv: Sequence[str]) -> None:
  """CLI: convert --input to --output."""
  del argv
  from absl import flags
  convert_file(flags.FLAGS.input, flags.FLAGS.output)
  print(f"wrote {flags.FLAGS.output}")


if __name__ == "__main__":
  from absl import flags
  from aigc_jax.errors import run_main
  flags.DEFINE_string("input", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth", required=True)
  flags.DEFINE_string("output", "~/.cache/aigc_jax/inception_fid.npz", "where to write the .npz")
  run_main(main)
