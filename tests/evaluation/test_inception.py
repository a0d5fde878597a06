"""FID Inception: resize rule, shapes with random weights, weight loading and the .pth converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.errors import UserError
from aigc_jax.evaluation import convert_inception, inception
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
  variables = inception.unflatten_variables(flat)  # equal to the converted file, checked above
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
