"""Reference sets: folders, statistics files and dataset splits; the content-keyed cache, shared by processes."""

import glob
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from aigc_jax import images
from aigc_jax.config import base_config
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, metrics, pipeline, references
from tests.conftest import QUICK_COMPILE_FLAGS
from tests.data.conftest import indexed_images, write_mnist_folder


@pytest.fixture(scope="module")
def digits_uint8():
  return images.to_uint8(load_digits().images[..., None] / 8.0 - 1.0)  # [1797, 8, 8, 1]


@pytest.fixture(scope="module")
def extractor():
  return features.digits_extractor(batch_size=128)


def _write_folder(folder, arrays):
  os.makedirs(folder, exist_ok=True)
  for i, a in enumerate(arrays):
    images.save_png(os.path.join(folder, f"{i:04d}.png"), a)
  return str(folder)


def _no_features(*args, **kwargs):
  pytest.fail("the reference was summarised again")


def test_parse_tells_files_folders_and_splits_apart(tmp_path):
  data = base_config().data
  assert references.parse(str(tmp_path / "s.npz"), data).kind == "stats"
  assert references.parse(str(tmp_path), data) == references.Reference("folder", str(tmp_path), path=str(tmp_path))
  ref = references.parse("mnist_idx:test", data, manual_dir="idx")
  assert (ref.kind, ref.label, ref.data_config.split) == ("dataset", "mnist_idx:test", "test")
  assert ref.data_config.manual_dir == os.path.abspath("idx")
  assert references.parse(None, data).label == f"{data.dataset}:{data.eval_split}"
  with pytest.raises(UserError, match="'nope' is not a folder, an .npz statistics file or DATASET:SPLIT"):
    references.parse("nope", data)


def test_statistics_file_round_trip_gives_the_same_fid(tmp_path, digits_uint8, extractor):
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:300])
  stats = str(tmp_path / "real.npz")
  real = references.load_reference(extractor, references.parse(real_dir, base_config().data), save_stats=stats)
  from_file = references.load_reference(extractor, references.parse(stats, base_config().data))
  np.testing.assert_array_equal(from_file.stats.mean, real.stats.mean)
  np.testing.assert_array_equal(from_file.stats.cov, real.stats.cov)
  fake = pipeline.summarize(extractor, [images.to_float(digits_uint8[600:800])])
  full = pipeline.compute_metrics(fake, real, kid_subsets=2)
  only_moments = pipeline.compute_metrics(fake, from_file, kid_subsets=2)
  assert only_moments["fid"] == pytest.approx(full["fid"], rel=1e-12)
  assert set(only_moments) == {"fid", "inception_score", "inception_score_std"}
  assert any("statistics file" in w for w in pipeline.sample_size_warnings(fake, from_file))
  with pytest.raises(UserError, match="no images to take 10 of"):
    references.load_reference(extractor, references.parse(stats, base_config().data), num=10)
  with pytest.raises(UserError, match="exists"):  # checked before any features are computed
    references.load_reference(extractor, references.parse(real_dir, base_config().data), save_stats=stats)


def test_folder_reference_equals_the_same_arrays_in_memory(tmp_path, digits_uint8, extractor):
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:300])
  from_folder = references.folder_summary(extractor, real_dir)
  in_memory = pipeline.summarize(extractor, [images.to_float(digits_uint8[:300])], keep_logits=False)
  np.testing.assert_array_equal(from_folder.features, in_memory.features)
  np.testing.assert_allclose(from_folder.stats.cov, in_memory.stats.cov, rtol=1e-10, atol=1e-14)
  assert references.folder_summary(extractor, real_dir, num=120).count == 120
  with pytest.raises(UserError, match="cannot take 301 images from .*it holds 300"):
    references.folder_summary(extractor, real_dir, num=301)


def test_changed_folder_file_invalidates_the_cache(tmp_path, digits_uint8, extractor, monkeypatch):
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:200])
  cache = str(tmp_path / "cache")
  os.makedirs(cache)
  first = references.folder_summary(extractor, real_dir, cache_dir=cache)
  assert len(glob.glob(os.path.join(cache, "reference_digits_folder_real_all_*.npz"))) == 1
  with monkeypatch.context() as m:
    m.setattr(references, "summarize", _no_features)
    again = references.folder_summary(extractor, real_dir, cache_dir=cache)  # unchanged: read back
  np.testing.assert_array_equal(again.stats.cov, first.stats.cov)
  images.save_png(os.path.join(real_dir, "0007.png"), digits_uint8[1000])  # one file replaced
  changed = references.folder_summary(extractor, real_dir, cache_dir=cache)
  assert len(glob.glob(os.path.join(cache, "reference_*.npz"))) == 2
  assert not np.array_equal(changed.stats.mean, first.stats.mean)
  expected = pipeline.summarize(extractor, [images.to_float(np.concatenate(
      [digits_uint8[:7], digits_uint8[1000:1001], digits_uint8[8:200]]))])
  np.testing.assert_allclose(changed.stats.mean, expected.stats.mean, rtol=1e-12)


def test_changed_idx_file_invalidates_the_dataset_cache(tmp_path, extractor, monkeypatch):
  folder = str(tmp_path / "idx")
  write_mnist_folder(folder, {"test": (indexed_images(40), np.arange(40) % 10)}, gz=False)
  data = base_config().data
  data.dataset, data.image_size, data.data_dir = "mnist_idx", 28, str(tmp_path / "tfds")
  data.manual_dir, data.split = folder, "test"
  cache = str(tmp_path)
  first = references.reference_summary(extractor, data, cache_dir=cache)
  assert first.count == 40 and first.logits is None
  from aigc_jax import data as data_lib
  with monkeypatch.context() as m:
    m.setattr(data_lib, "reference_batches", _no_features)
    references.reference_summary(extractor, data, cache_dir=cache)
  # The same folder, other images of the same size (MNIST swapped for Fashion-MNIST, say).
  write_mnist_folder(folder, {"test": (255 - indexed_images(40), np.arange(40) % 10)}, gz=False)
  changed = references.reference_summary(extractor, data, cache_dir=cache)
  assert len(glob.glob(os.path.join(cache, "reference_digits_mnist_idx_test_28px_all_*.npz"))) == 2
  assert not np.allclose(changed.stats.mean, first.stats.mean)


def test_cache_key_names_the_extractor_weights_and_count(digits_uint8, extractor):
  other_weights = features.load_lenet_params()
  other_weights["fc1"]["bias"] = other_weights["fc1"]["bias"] + 1e-3
  other = features.digits_extractor(other_weights)
  names = {references.cache_name(ex, "label", n, "digest") for ex in (extractor, other) for n in (None, 5)}
  assert len(names) == 4
  assert references.cache_name(extractor, "label", 5, "other digest") not in names


class _Processes:
  """Stands in for a two-process run: which process this is, and what process 0 broadcasts."""

  def __init__(self, monkeypatch, index, name_from_process_0=None):
    self.sent = []
    monkeypatch.setattr(references.jax, "process_count", lambda: 2)
    monkeypatch.setattr(references.jax, "process_index", lambda: index)

    def broadcast(buf):
      self.sent.append(bytes(buf).rstrip(b"\0").decode())
      if index == 0:
        return buf
      out = np.zeros_like(buf)
      raw = name_from_process_0.encode()
      out[:len(raw)] = np.frombuffer(raw, np.uint8)
      return out

    monkeypatch.setattr(references.multihost_utils, "broadcast_one_to_all", broadcast)


def test_process_0_alone_computes_and_writes_the_cache(tmp_path, digits_uint8, extractor, monkeypatch):
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:150])
  cache = str(tmp_path / "cache")
  os.makedirs(cache)
  zero = _Processes(monkeypatch, 0)
  summary = references.folder_summary(extractor, real_dir, cache_dir=cache)
  [written] = os.listdir(cache)
  assert zero.sent == [written]  # the name goes out once the file is there

  monkeypatch.undo()
  other = _Processes(monkeypatch, 1, name_from_process_0=written)
  monkeypatch.setattr(references.image_folder, "files_digest", _no_features)  # never hashes or reads images
  monkeypatch.setattr(references, "summarize", _no_features)
  read = references.folder_summary(extractor, real_dir, cache_dir=cache)
  np.testing.assert_array_equal(read.stats.cov, summary.stats.cov)
  np.testing.assert_array_equal(read.features, summary.features)
  assert other.sent == [""]
  os.remove(os.path.join(cache, written))
  with pytest.raises(UserError, match="process 1 cannot read .* written by process 0: the workdir must be shared"):
    references.folder_summary(extractor, real_dir, cache_dir=cache)


_WORKER = """
import os, sys
import jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from aigc_jax.evaluation import features, references
folder, cache = sys.argv[3], sys.argv[4]
if jax.process_index() == 1:
  references.summarize = lambda *a, **k: sys.exit("process 1 summarised the reference")
  references.image_folder.files_digest = lambda *a, **k: sys.exit("process 1 hashed the reference")
summary = references.folder_summary(features.digits_extractor(batch_size=64), folder, cache_dir=cache)
print("summary", jax.process_index(), summary.count, repr(float(summary.stats.cov.sum())), os.listdir(cache))
"""


def test_two_real_processes_share_one_cache_file(tmp_path, digits_uint8):
  """jax.distributed over 127.0.0.1 (gloo): process 1 reads what process 0 wrote, never the images."""
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:150])
  cache = tmp_path / "cache"
  cache.mkdir()
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count=1 {QUICK_COMPILE_FLAGS}",
         "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, f"127.0.0.1:{port}", str(i), real_dir, str(cache)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  lines = []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail("the two processes hung")
    assert proc.returncode == 0, out[-2000:]
    lines.append([line for line in out.splitlines() if line.startswith("summary")][-1].split(" ", 2))
  [written] = os.listdir(cache)
  assert [line[:2] for line in lines] == [["summary", "0"], ["summary", "1"]]
  assert lines[0][2] == lines[1][2] and written in lines[1][2] and lines[0][2].startswith("150 ")


def test_a_failure_on_process_0_reaches_every_process(tmp_path, extractor, monkeypatch):
  data = base_config().data
  data.dataset, data.split, data.data_dir = "digits", "validation", str(tmp_path / "tfds")
  zero = _Processes(monkeypatch, 0)
  with pytest.raises(UserError, match="split 'validation' is not in dataset 'digits'"):
    references.reference_summary(extractor, data, cache_dir=str(tmp_path))
  # The others are told, not left waiting (the data's prepare-once broadcast may come first).
  assert zero.sent and zero.sent[-1] == ""
  monkeypatch.undo()
  _Processes(monkeypatch, 1, name_from_process_0="")
  with pytest.raises(UserError, match="process 0 could not compute the reference statistics"):
    references.reference_summary(extractor, data, cache_dir=str(tmp_path))


def test_save_stats_alone_reads_a_folder_not_a_split(tmp_path, digits_uint8, extractor):
  real_dir = _write_folder(tmp_path / "real", digits_uint8[:200])
  out = str(tmp_path / "s.npz")
  summary = references.save_reference_stats(extractor, real_dir, out, num=150)
  with np.load(out) as f:
    np.testing.assert_array_equal(f["mu"], summary.stats.mean)
  assert summary.count == 150
  with pytest.raises(UserError, match="a DATASET:SPLIT reference takes its image size from a run"):
    references.save_reference_stats(extractor, "digits:train", str(tmp_path / "t.npz"))
  assert isinstance(summary.stats, metrics.FeatureStats)
