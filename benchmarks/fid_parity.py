"""The project's FID, KID, precision/recall and density/coverage beside the field's tools, on the same folders.

    pip install -e .[parity]    # torch (CPU), torchvision, pytorch-fid, clean-fid, torch-fidelity, prdc
    python -m benchmarks.fid_parity [--num=200] [--out=DIR]

The real Inception weights cannot be fetched here, so both sides get the same random ones:
pytorch-fid's FID-Inception (its own modules, loaded by its own `fid_inception_v3` with the
download replaced) with random weights whose batch-norm statistics are calibrated on random
smooth images (so activations stay finite and spread out), saved as a .pth and converted with
`aigc_jax.evaluation.convert_inception`.

Folders `real` and `fake`: `--num` 32 px colour digits each (scikit-learn's 8 px digits, grown
and tinted; the fake ones noisier), a tenth of the files greyscale PNG, a tenth RGBA PNG and a
tenth JPEG, which every tool converts with PIL's `.convert("RGB")`.

Compared, per resize mode: FID against the tool whose rule the mode follows (pytorch-fid for
`pytorch_fid`; clean-fid's "clean" mode, with its feature extractor replaced by the same network,
for `clean`); KID on one subset holding all images (so no tool's random subsets enter) against
torch-fidelity's and clean-fid's; precision/recall (k=3) against torch-fidelity's and prdc's;
density/coverage (k=5) against prdc's. The metric rows feed the tools our features (in float64),
which isolates the metric code; the "own features" rows give each side its own pipeline's features
(FID: only those, each tool's `scipy.linalg.sqrtm` of a 2048-d product takes minutes on a CPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from aigc_jax.evaluation import convert_inception, features, metrics, pipeline, references

_TORCHVISION_OPS = []  # keeps the torch.library registrations alive


def import_torch():
  """torch, with torchvision importable on the CPU wheel.

  The registry's torchvision is built for CUDA torch: with the CPU wheel its C ops fail to load
  at import ("operator torchvision::nms does not exist"). Its Python models need none of them,
  so the two it looks up at import are declared first.
  """
  import torch
  try:
    torch.ops.torchvision.nms
  except (AttributeError, RuntimeError):
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.append(lib)
  import torchvision  # noqa: F401
  return torch


def make_folders(out: str, num: int, seed: int) -> tuple[str, str]:
  """Writes `real` and `fake` folders of `num` 32 px tinted digits each, in mixed file modes."""
  digits = load_digits().images / 16.0
  if 2 * num > len(digits):
    raise SystemExit(f"--num={num}: at most {len(digits) // 2}")
  rng = np.random.default_rng(seed)
  folders = []
  for name, offset, noise in (("real", 0, 0.0), ("fake", num, 0.12)):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    for i in range(num):
      ink = Image.fromarray((digits[offset + i] * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC)
      ink = np.asarray(ink, np.float32)[..., None] / 255
      fg, bg = rng.uniform(0.3, 1.0, 3), rng.uniform(0.0, 0.3, 3)
      rgb = bg + ink * (fg - bg) + noise * rng.normal(size=(32, 32, 3))
      rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
      path = os.path.join(folder, f"{i:04d}")
      kind = i % 10
      if kind == 0:
        Image.fromarray(rgb).convert("L").save(path + ".png")
      elif kind == 1:
        alpha = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(path + ".png")
      elif kind == 2:
        Image.fromarray(rgb).save(path + ".jpg", quality=90)
      else:
        Image.fromarray(rgb).save(path + ".png")
    folders.append(folder)
  return folders[0], folders[1]


def random_fid_inception(torch, seed: int, calibration_images: int = 64):
  """pytorch-fid's FID-Inception modules with random weights, batch norm calibrated on random images."""
  from pytorch_fid import inception as pfi
  torch.manual_seed(seed)
  # The structure fid_inception_v3 builds; loading its state dict there (strictly) checks it.
  net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=True)
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.reset_running_stats()
      m.momentum = None  # a plain average over the calibration batches
  net.train()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _ in range(calibration_images // 16):
      # Smooth random images: uniform noise at 4..64 px grown to 299, in the network's [-1, 1].
      side = int(torch.randint(4, 65, (1,), generator=gen))
      noise = torch.rand(16, 3, side, side, generator=gen) * 2 - 1
      net(torch.nn.functional.interpolate(noise, size=(299, 299), mode="bilinear", align_corners=False))
  return net.eval()


def pytorch_fid_model(torch, pth: str):
  """pytorch-fid's own InceptionV3 (pool3), its weights read from `pth` instead of the download."""
  from pytorch_fid import inception as pfi
  pfi.load_state_dict_from_url = lambda *args, **kwargs: torch.load(pth, weights_only=True)
  return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def torch_features(torch, model, real: str, fake: str, mode: str, batch_size: int) -> dict[str, np.ndarray]:
  """Each folder's pool3 features through the tool whose pipeline `mode` names."""
  out = {}
  for name, folder in (("real", real), ("fake", fake)):
    if mode == "pytorch_fid":
      import pathlib
      from pytorch_fid import fid_score
      path = pathlib.Path(folder)  # pytorch-fid's own listing (compute_statistics_of_path)
      files = sorted(f for ext in fid_score.IMAGE_EXTENSIONS for f in path.glob(f"*.{ext}"))
      out[name] = fid_score.get_activations(files, model, batch_size, 2048, "cpu", num_workers=0)
    else:
      from cleanfid import fid as cleanfid

      class Pool3(torch.nn.Module):  # clean-fid hands 299 px images in 0..255
        def forward(self, x):
          return model(x / 255.0)[0][:, :, 0, 0]

      out[name] = cleanfid.get_folder_features(folder, Pool3(), num_workers=0, batch_size=batch_size,
                                               device=torch.device("cpu"), mode="clean", verbose=False)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def tool_fid(mode: str, real: np.ndarray, fake: np.ndarray) -> float:
  """FID by the tool's own code from its features (pytorch-fid's, or clean-fid's fid_from_feats)."""
  if mode == "pytorch_fid":
    from pytorch_fid import fid_score
    return float(fid_score.calculate_frechet_distance(fake.mean(0), np.cov(fake, rowvar=False),
                                                      real.mean(0), np.cov(real, rowvar=False)))
  from cleanfid import fid as cleanfid
  return float(cleanfid.fid_from_feats(fake, real))


def tool_metrics(torch, real: np.ndarray, fake: np.ndarray) -> dict[str, tuple[float, str]]:
  """KID (one subset of all images), precision/recall (k=3), density/coverage (k=5) by the tools."""
  import prdc
  from cleanfid import fid as cleanfid
  from torch_fidelity import metric_kid, metric_prc
  n = min(len(real), len(fake))
  real64, fake64 = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  kid = metric_kid.kid_features_to_metric(torch.from_numpy(fake64), torch.from_numpy(real64), kid_subsets=1,
                                          kid_subset_size=n, verbose=False)
  prc = metric_prc.prc_features_to_metric(torch.from_numpy(fake64), torch.from_numpy(real64),
                                          prc_neighborhood=3, verbose=False)
  p3 = prdc.compute_prdc(real_features=real64, fake_features=fake64, nearest_k=3)
  p5 = prdc.compute_prdc(real_features=real64, fake_features=fake64, nearest_k=5)
  return {"kid": [(kid[metric_kid.KEY_METRIC_KID_MEAN], "torch-fidelity"),
                  (cleanfid.kernel_distance(real64, fake64, num_subsets=1, max_subset_size=n), "clean-fid")],
          "precision": [(prc["precision"], "torch-fidelity"), (p3["precision"], "prdc")],
          "recall": [(prc["recall"], "torch-fidelity"), (p3["recall"], "prdc")],
          "density": [(p5["density"], "prdc")], "coverage": [(p5["coverage"], "prdc")]}


def our_metrics(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
  """The project's KID (one subset of all images) and PR (k=3) / DC (k=5) on feature arrays."""
  n = min(len(real), len(fake))
  out = metrics.precision_recall_density_coverage(real, fake, k_pr=3, k_dc=5)
  return {"kid": metrics.kernel_inception_distance(real, fake, subsets=1, subset_size=n)["kid"], **out}


def compare(mode: str, npz: str, real_dir: str, fake_dir: str, torch, model,
            batch_size: int) -> tuple[list[dict], float]:
  """Rows of (metric, ours, tool's, tool) for one resize mode, and how far the features differ."""
  ex = features.inception_extractor(npz, batch_size=batch_size, resize=mode)
  start = time.perf_counter()
  real = references.folder_summary(ex, real_dir)
  fake = pipeline.summarize_folder(ex, fake_dir)
  ours_s = time.perf_counter() - start
  ours_fid = pipeline.compute_metrics(fake, real)["fid"]
  start = time.perf_counter()
  theirs = torch_features(torch, model, real_dir, fake_dir, mode, batch_size)
  theirs_s = time.perf_counter() - start
  tool = "pytorch-fid" if mode == "pytorch_fid" else "clean-fid (clean)"
  feature_diff = max(float(np.abs(ours.features - theirs[k]).max() / np.abs(theirs[k]).max())
                     for k, ours in (("real", real), ("fake", fake)))
  try:
    their_fid = tool_fid(mode, theirs["real"], theirs["fake"])
  except ValueError as e:  # scipy's sqrtm of a singular product can come out complex
    their_fid, tool = float("nan"), f"{tool}: {e}"
  rows = [{"mode": mode, "metric": "fid", "features": "own", "ours": ours_fid, "theirs": their_fid, "tool": tool}]
  mine = our_metrics(real.features, fake.features)
  for features_used, (r, f) in (("ours", (real.features, fake.features)),
                                ("own", (theirs["real"], theirs["fake"]))):
    for name, values in tool_metrics(torch, r, f).items():
      for value, tool_name in values:
        rows.append({"mode": mode, "metric": name, "features": features_used, "ours": mine[name],
                     "theirs": float(value), "tool": tool_name})
  for row in rows:
    row["rel_diff"] = abs(row["ours"] - row["theirs"]) / max(abs(row["theirs"]), 1e-300)
  print(f"{mode}: features {ours_s:.0f} s here, {theirs_s:.0f} s in torch; pool3 features differ by "
        f"{feature_diff:.1e} of their largest value", flush=True)
  return rows, feature_diff


def markdown(rows: list[dict]) -> str:
  """The comparison as a Markdown table."""
  lines = ["| resize | metric | features | aigc_jax | tool | tool's value | relative difference |",
           "|---|---|---|---:|---|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['mode']} | {r['metric']} | {r['features']} | {r['ours']:.7g} | {r['tool']} | "
                 f"{r['theirs']:.7g} | {r['rel_diff']:.1e} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=200, help="images per folder")
  parser.add_argument("--batch_size", type=int, default=25)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="folder for the images, weights and parity.json")
  args = parser.parse_args()
  out = args.out or tempfile.mkdtemp(prefix="fid_parity_")
  torch = import_torch()
  start = time.perf_counter()
  real_dir, fake_dir = make_folders(out, args.num, args.seed)
  pth, npz = os.path.join(out, "random_fid_inception.pth"), os.path.join(out, "random_fid_inception.npz")
  torch.save(random_fid_inception(torch, args.seed).state_dict(), pth)
  convert_inception.convert_file(pth, npz)
  model = pytorch_fid_model(torch, pth)
  rows, feature_diffs = [], {}
  for mode in ("pytorch_fid", "clean"):
    mode_rows, feature_diffs[mode] = compare(mode, npz, real_dir, fake_dir, torch, model, args.batch_size)
    rows += mode_rows
  table = markdown(rows)
  print(table)
  info = {"date": datetime.date.today().isoformat(), "num": args.num, "machine": platform.platform(),
          "cpus": os.cpu_count(), "torch": torch.__version__, "seconds": time.perf_counter() - start,
          "feature_max_rel_diff": feature_diffs, "rows": rows}
  with open(os.path.join(out, "parity.json"), "w") as f:
    json.dump(info, f, indent=2)
  print(f"wrote {os.path.join(out, 'parity.json')} ({info['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
