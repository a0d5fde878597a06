"""Feature statistics files: the `.npz` with `mu` and `sigma` that pytorch-fid, EDM and clean-fid share.

pytorch-fid writes `np.savez_compressed(path, mu=..., sigma=...)` (`--save-stats`); EDM's
reference files (`fid.py ref`) and clean-fid's (`make_custom_stats`, its downloaded
statistics) hold the same two arrays. Files are read without unpickling anything.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from aigc_jax import images
from aigc_jax.errors import UserError


def read_stats(path: str, feature_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(mu [D], sigma [D,D]) as float64 from a statistics .npz; UserError if it is not one.

  `feature_dim` (when given) must be D: statistics of other features cannot be compared.
  """
  if not os.path.isfile(path):
    raise UserError(f"statistics file {path!r} not found")
  try:
    with np.load(path, allow_pickle=False) as data:
      if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"{path!r} is a single array, not an .npz with 'mu' and 'sigma'")
      missing = [k for k in ("mu", "sigma") if k not in data.files]
      if missing:
        raise UserError(f"{path!r} has no {' or '.join(repr(k) for k in missing)} array (it holds "
                        f"{', '.join(data.files) or 'nothing'}); expected pytorch-fid's, EDM's or "
                        "clean-fid's statistics")
      mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f"cannot read statistics file {path!r}: {e.__class__.__name__}: {e}") from None
  dim = mu.shape[0] if mu.ndim == 1 else None
  if dim is None or sigma.shape != (dim, dim):
    raise UserError(f"{path!r}: mu has shape {mu.shape} and sigma {sigma.shape}; expected [D] and [D, D]")
  if feature_dim is not None and dim != feature_dim:
    raise UserError(f"{path!r} holds statistics of {dim}-d features; these features are {feature_dim}-d")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise UserError(f"{path!r}: mu or sigma is not finite")
  return mu, sigma


def check_new(path: str) -> None:
  """Raises UserError unless `path` is an .npz that does not exist yet and can be written."""
  if not path.endswith(".npz"):
    raise UserError(f"statistics file {path!r} must end in .npz (how --reference tells it from a folder)")
  if os.path.exists(path):
    raise UserError(f"statistics file {path!r} exists; remove it or give another path")
  images.check_writable(path)


def write_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes pytorch-fid's format (compressed .npz of float64 `mu` and `sigma`) atomically.

  Like pytorch-fid's `--save-stats`, an existing file is never replaced.
  """
  check_new(path)
  buf = io.BytesIO()
  np.savez_compressed(buf, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
  images.write_bytes_atomic(path, buf.getvalue())
