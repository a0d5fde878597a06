"""FID Inception: both resize rules, shapes with random weights, weight loading and the .pth converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from aigc_jax import images
from aigc_jax.errors import UserError
from aigc_jax.evaluation import convert_inception, features, inception
from aigc_jax.models.lenet import resize_bilinear, resize_matrix


def _resize_reference(image, out_h, out_w):
  """Per-pixel bilinear resize with half-pixel centres, written as loops (torch's rule)."""
  in_h, in_w = image.shape[:2]
  out = np.zeros((out_h, out_w) + image.shape[2:])
  for y in range(out_h):
    sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
    y0 = min(int(np.floor(sy)), in_h - 1)
    y1, fy = min(y0 + 1, in_h - 1), sy - y0
    for x in range(out_w):
      sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
      x0 = min(int(np.floor(sx)), in_w - 1)
      x1, fx = min(x0 + 1, in_w - 1), sx - x0
      out[y, x] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                   + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
  return out


@pytest.mark.parametrize("in_hw,out_hw", [((8, 8), (28, 28)), ((7, 5), (31, 12)), ((13, 9), (5, 4))])
def test_resize_matches_loop_reference(in_hw, out_hw):
  image = np.random.default_rng(0).uniform(-1, 1, size=in_hw + (2,))
  got = resize_bilinear(jnp.asarray(image[None], jnp.float32), *out_hw)[0]
  np.testing.assert_allclose(got, _resize_reference(image, *out_hw), atol=1e-5)


def test_pytorch_fid_mode_is_the_torch_rule():
  image = np.random.default_rng(3).uniform(-1, 1, size=(9, 6, 3))
  got = inception.resize(jnp.asarray(image[None], jnp.float32), "pytorch_fid", 13)[0]
  np.testing.assert_allclose(got, _resize_reference(image, 13, 13), atol=1e-5)


def _clean_fid_resize(image_uint8, out_h, out_w):
  """clean-fid's "clean" rule, written with PIL: each channel as a float32 "F" image, BICUBIC,
  clipped to 0..255. Also returns the unclipped result."""
  channels = [np.asarray(Image.fromarray(image_uint8[..., c].astype(np.float32), mode="F")
                         .resize((out_w, out_h), resample=Image.BICUBIC)) for c in range(image_uint8.shape[-1])]
  unclipped = np.stack(channels, axis=-1)
  return unclipped.clip(0, 255), unclipped


@pytest.mark.parametrize("in_hw,out_hw", [((32, 32), (299, 299)), ((600, 450), (299, 299)), ((7, 13), (5, 29))])
def test_clean_mode_matches_pil_bicubic(in_hw, out_hw):
  """Growing, shrinking (PIL widens the kernel: antialiasing) and mixed, against PIL itself."""
  image = np.random.default_rng(4).integers(0, 256, in_hw + (3,), dtype=np.uint8)
  image[:in_hw[0] // 2, :, 0] = np.where(np.arange(in_hw[1]) % 8 < 4, 0, 255)  # sharp edges overshoot
  expected, unclipped = _clean_fid_resize(image, *out_hw)
  assert unclipped.min() < 0 or unclipped.max() > 255  # the clip is exercised
  got = inception.resize_clean(jnp.asarray(images.to_float(image)[None]), *out_hw)[0]
  np.testing.assert_allclose((np.asarray(got) + 1) * 127.5, expected, atol=2e-3)
  if out_hw[0] == out_hw[1]:
    np.testing.assert_array_equal(inception.resize(jnp.asarray(images.to_float(image)[None]), "clean",
                                                   out_hw[0]), got[None])


def test_unknown_resize_mode_is_one_line():
  with pytest.raises(UserError, match="unknown resize mode 'lanczos'; choose one of pytorch_fid, clean"):
    inception.resize(jnp.zeros((1, 4, 4, 3)), "lanczos", 8)


def test_resize_halving_averages_pixel_pairs():
  w = resize_matrix(8, 4)
  np.testing.assert_allclose(w, np.kron(np.eye(4), [[0.5, 0.5]]), atol=1e-7)


def test_resize_matches_torch_interpolate():
  torch = pytest.importorskip("torch")
  image = np.random.default_rng(1).uniform(-1, 1, size=(2, 28, 20, 3)).astype(np.float32)
  for size in [(299, 299), (11, 7)]:
    expected = torch.nn.functional.interpolate(torch.from_numpy(image).permute(0, 3, 1, 2), size=size,
                                               mode="bilinear", align_corners=False)
    got = resize_bilinear(jnp.asarray(image), *size)
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def flat_variables():
  """Random FID-Inception variables: He-scaled kernels, positive BN scales and variances."""
  shapes = inception.expected_shapes()
  rng = np.random.default_rng(0)
  noise = rng.standard_normal(sum(int(np.prod(s)) for s in shapes.values()), dtype=np.float32)
  flat, offset = {}, 0
  for name, shape in shapes.items():
    size = int(np.prod(shape))
    value = noise[offset:offset + size].reshape(shape)
    offset += size
    if name.endswith("kernel"):
      value = value * np.float32(np.sqrt(2.0 / np.prod(shape[:-1])))
    elif name.endswith(("var", "scale")):
      value = 1.0 + 0.3 * np.tanh(value)
    else:
      value = 0.1 * value
    flat[name] = value
  return flat


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, flat_variables):
  path = tmp_path_factory.mktemp("inception") / "inception_fid.npz"
  np.savez(path, **flat_variables)
  return str(path)


def test_forward_shapes_with_random_weights(weights_file):
  variables = inception.load_variables(weights_file)
  model = inception.InceptionV3FID(resize_to=75)  # smallest input the architecture accepts
  gray = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), minval=-1, maxval=1)
  out = jax.jit(model.apply)(variables, gray)
  assert out["pool"].shape == (2, 2048)
  assert out["logits"].shape == (2, inception.NUM_LOGITS)
  assert out["mixed_6e"].shape == (2, 3, 3, 768)
  assert np.all(np.isfinite(out["pool"])) and np.all(np.asarray(out["pool"]) >= 0)
  assert not np.allclose(out["pool"][0], out["pool"][1])


def test_model_resizes_by_its_mode(weights_file, monkeypatch):
  """The network's input goes through `resize` with the model's mode (traced, not compiled)."""
  variables = inception.load_variables(weights_file)
  resize, calls = inception.resize, []
  monkeypatch.setattr(inception, "resize",
                      lambda x, mode, size: calls.append((mode, size)) or resize(x, mode, size))
  for mode in inception.RESIZE_MODES:
    jax.eval_shape(inception.InceptionV3FID(75, mode).apply, variables, jnp.zeros((1, 8, 8, 1)))
  assert calls == [("pytorch_fid", 75), ("clean", 75)]


def test_extractor_fingerprint_names_resize_and_weights(tmp_path, weights_file, flat_variables):
  a = features.inception_extractor(weights_file, resize="pytorch_fid")
  b = features.inception_extractor(weights_file, resize="clean")
  changed = dict(flat_variables)
  changed["params/fc/bias"] = changed["params/fc/bias"] + np.float32(1e-3)
  other = tmp_path / "other.npz"
  np.savez(other, **changed)
  c = features.inception_extractor(str(other), resize="pytorch_fid")
  assert (a.resize, b.resize, a.feature_dim, a.channels) == ("pytorch_fid", "clean", 2048, 3)
  assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
  assert features.inception_extractor(weights_file).fingerprint == a.fingerprint
  with pytest.raises(UserError, match="--resize='bilinear': choose one of pytorch_fid, clean"):
    features.inception_extractor(weights_file, resize="bilinear")
  with pytest.raises(UserError, match="--resize='clean' applies to the inception features"):
    features.get_extractor("digits", resize="clean")


def test_missing_weights_name_file_and_converter(tmp_path):
  path = str(tmp_path / "nope.npz")
  with pytest.raises(UserError, match="nope.npz.*convert_inception"):
    inception.load_variables(path)


def test_wrong_weights_file_is_rejected(tmp_path):
  path = tmp_path / "bad.npz"
  np.savez(path, **{"params/fc/kernel": np.zeros((3, 3), np.float32)})
  with pytest.raises(UserError, match="missing"):
    inception.load_variables(str(path))


def _to_torch_state_dict(flat):
  """The pytorch-fid names and layouts for flat Flax variables (the converter's inverse)."""
  names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  state = {}
  for name, value in flat.items():
    _, *module, leaf = name.split("/")
    prefix = ".".join(module)
    if prefix == "fc":
      state[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = value.T if leaf == "kernel" else value
    elif leaf == "kernel":
      state[f"{prefix}.weight"] = value.transpose(3, 2, 0, 1)
    else:
      state[f"{prefix}.{names[leaf]}"] = value
  return state


@pytest.mark.parametrize("zipfile", [True, False])
def test_converter_round_trips_a_synthetic_state_dict(tmp_path, zipfile, flat_variables):
  torch = pytest.importorskip("torch")
  flat = flat_variables
  state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _to_torch_state_dict(flat).items()}
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
  pth, out = tmp_path / "pt_inception.pth", tmp_path / "inception_fid.npz"
  torch.save(state, pth, _use_new_zipfile_serialization=zipfile)
  convert_inception.convert_file(str(pth), str(out))
  with np.load(out) as converted:
    assert sorted(converted.files) == sorted(flat)
    for name, value in flat.items():
      np.testing.assert_array_equal(converted[name], value, err_msg=name)

  # The first block with converted weights equals PyTorch's conv -> batch norm -> ReLU.
  variables = traverse_util.unflatten_dict(flat, sep="/")  # equal to the converted file, checked above
  block = {c: variables[c]["Conv2d_1a_3x3"] for c in ("params", "batch_stats")}
  x = np.random.default_rng(2).normal(size=(1, 9, 9, 3)).astype(np.float32)
  got = inception.BasicConv(32, (3, 3), strides=2).apply(block, jnp.asarray(x))
  p = "Conv2d_1a_3x3"
  ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), state[f"{p}.conv.weight"], stride=2)
  ref = torch.nn.functional.batch_norm(ref, state[f"{p}.bn.running_mean"], state[f"{p}.bn.running_var"],
                                       state[f"{p}.bn.weight"], state[f"{p}.bn.bias"], eps=1e-3)
  np.testing.assert_allclose(got, torch.relu(ref).permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_converter_rejects_foreign_state_dicts():
  with pytest.raises(UserError, match="unexpected tensor"):
    convert_inception.convert_state_dict({"encoder.layer.weight": np.zeros(3)})
