"""DCGAN generator and discriminator: shapes, ranges, parameter counts, PyTorch equivalence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.config import IMAGE_SIZES
from aigc_jax.models import dcgan


def _count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def random_variables(module, *args, **kwargs):
  """Variables shaped as module.init makes them, drawn with numpy.

  Compiling a jitted init costs seconds per model (threefry); shapes come from
  eval_shape and values from numpy instead, which keeps these tests fast.
  """
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *args)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    base = {"scale": 1.0, "var": 1.0}.get(name, 0.0)
    scale = 0.0 if path[0].key == "batch_stats" else 0.3
    return jnp.asarray(base + scale * rng.normal(size=leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(generator, discriminator, g_vars, d_vars, z, labels):
  """Returns (images, D logits on those images), both nets in training mode."""
  images, _ = generator.apply(g_vars, z, labels, train=True, mutable=["batch_stats"])
  logits, _ = discriminator.apply(d_vars, images, labels, train=True, mutable=["batch_stats"])
  return images, logits


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, x, labels):
  return module.apply(variables, x, labels, train=True, mutable=["batch_stats"])


def _init_and_run(generator, discriminator, z, labels):
  """Returns (images, logits, G variables, D variables) with random variables."""
  g_vars = random_variables(generator, z, labels, train=False)
  images = jax.eval_shape(functools.partial(generator.apply, train=False), g_vars, z, labels)
  d_vars = random_variables(discriminator, images, labels, train=False)
  return (*_run(generator, discriminator, g_vars, d_vars, z, labels), g_vars, d_vars)


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_every_size_gives_images_in_range_and_one_logit_each(size):
  g = dcgan.Generator(image_size=size, channels=3, latent_dim=5, width=2)
  d = dcgan.Discriminator(image_size=size, width=2)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
  images, logits, _, _ = _init_and_run(g, d, z, None)
  assert images.shape == (3, size, size, 3) and images.dtype == jnp.float32
  assert float(jnp.abs(images).max()) <= 1.0 and float(images.std()) > 0
  assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_stages_double_from_4x4_for_powers_of_two_and_from_7x7_for_28():
  for size in (8, 16, 32, 64, 128, 256):
    start, num = dcgan.stages(size)
    assert start * 2 ** num == size and start == 4
  assert dcgan.stages(28) == (7, 2)
  for size in (4, 48, 96, 512):
    with pytest.raises(ValueError, match="28 or a power of two from 8 to 256"):
      dcgan.stages(size)


def test_128px_adds_a_wider_stage_to_64px():
  z = jnp.zeros((2, 100))

  def kernels(size):
    """[(in, out) of the 4x4 latent projection, then of each upsampling stage in order]."""
    params = jax.eval_shape(functools.partial(dcgan.Generator(image_size=size).init, train=False),
                            jax.random.key(0), z)["params"]
    ups = sorted((k for k in params if k.startswith("ConvTranspose2x_")), key=lambda k: int(k.split("_")[1]))
    return [params[k]["kernel"].shape[2:] for k in ["ConvTransposeFromVector_0", *ups]]

  # 100 -> 4x4x1024 -> 512 -> 256 -> 128 -> 64 -> 3: the 64 px stages after one more, wider one.
  assert kernels(64) == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
  assert kernels(128) == [(100, 1024), (1024, 512), *kernels(64)[1:]]


def test_64px_param_counts_are_the_pytorch_examples_dcgan():
  z, images = jnp.zeros((2, 100)), jnp.zeros((2, 64, 64, 3))
  g_vars = jax.eval_shape(functools.partial(dcgan.Generator().init, train=False),
                          jax.random.key(0), z)
  d_vars = jax.eval_shape(functools.partial(dcgan.Discriminator().init, train=False),
                          jax.random.key(0), images)
  assert _count(g_vars["params"]) == 3_576_704
  assert _count(d_vars["params"]) == 2_765_568


def test_unnormalised_discriminator_has_biases_and_no_batch_stats():
  g = dcgan.Generator(image_size=28, channels=1, latent_dim=4, width=2)
  d = dcgan.Discriminator(image_size=28, width=2, norm="none")
  _, logits, _, d_vars = _init_and_run(g, d, jnp.ones((2, 4)), None)
  assert "batch_stats" not in d_vars
  assert all("bias" in layer for layer in d_vars["params"].values())
  assert logits.shape == (2,)


def test_conditional_models_use_labels():
  g = dcgan.Generator(image_size=16, channels=1, latent_dim=4, width=2, num_classes=3)
  d = dcgan.Discriminator(image_size=16, width=2, num_classes=3)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
  images0, logits0, g_vars, d_vars = _init_and_run(g, d, z, jnp.array([0, 0]))
  images1, _ = _apply(g, g_vars, z, jnp.array([1, 2]))
  logits1, _ = _apply(d, d_vars, images0, jnp.array([1, 2]))
  assert images0.shape == (2, 16, 16, 1) and logits0.shape == (2,)
  assert float(jnp.abs(images1 - images0).max()) > 1e-4
  assert float(jnp.abs(logits1 - logits0).max()) > 1e-4
  with pytest.raises(ValueError, match="needs labels"):
    g.apply(g_vars, z, train=False)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  g = dcgan.Generator(image_size=8, channels=1, latent_dim=4, width=4, dtype=jnp.bfloat16)
  d = dcgan.Discriminator(image_size=8, width=4, dtype=jnp.bfloat16)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(4, 4)), jnp.float32)
  images, logits, g_vars, d_vars = _init_and_run(g, d, z, None)
  assert {p.dtype for p in jax.tree.leaves((g_vars, d_vars))} == {jnp.dtype(jnp.float32)}
  assert images.dtype == logits.dtype == jnp.float32
  g32 = dcgan.Generator(image_size=8, channels=1, latent_dim=4, width=4)
  images32, _ = _apply(g32, g_vars, z, None)
  assert float(jnp.abs(images - images32).max()) < 0.1


# --- PyTorch reference: the pytorch/examples DCGAN, generalised to the start size and depth.


def _torch_dcgan(torch, size, nz, width, nc):
  nn = torch.nn
  start, stages = dcgan.stages(size)
  widths = [width * 2 ** i for i in range(stages)]
  g = [nn.ConvTranspose2d(nz, widths[-1], start, 1, 0, bias=False), nn.BatchNorm2d(widths[-1]),
       nn.ReLU()]
  for cin, cout in zip(widths[:0:-1], widths[-2::-1]):
    g += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
  g += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
  d = [nn.Conv2d(nc, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
  for cin, cout in zip(widths, widths[1:]):
    d += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
  d += [nn.Conv2d(widths[-1], 1, start, 1, 0, bias=False)]
  return nn.Sequential(*g), nn.Sequential(*d)


def _to_flax(torch, model):
  """Flax variables from a torch Sequential, named as flax auto-names the DCGAN's submodules."""
  params, stats, counts = {}, {}, {}

  def name(kind):
    counts[kind] = counts.get(kind, -1) + 1
    return f"{kind}_{counts[kind]}"

  for layer in model:
    if isinstance(layer, torch.nn.BatchNorm2d):
      key = name("BatchNorm")
      params[key] = {"scale": layer.weight.detach().numpy(), "bias": layer.bias.detach().numpy()}
      stats[key] = {"mean": layer.running_mean.numpy(), "var": layer.running_var.numpy()}
    elif isinstance(layer, torch.nn.ConvTranspose2d):
      kind = "ConvTransposeFromVector" if layer.stride == (1, 1) else "ConvTranspose2x"
      # w[in, out, kh, kw] -> kernel[kh, kw, in, out], spatially flipped (see layers.py).
      params[name(kind)] = {"kernel": layer.weight.detach().numpy().transpose(2, 3, 0, 1)[::-1, ::-1]}
    elif isinstance(layer, torch.nn.Conv2d):
      params[name("Conv")] = {"kernel": layer.weight.detach().numpy().transpose(2, 3, 1, 0)}
  return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("size", [28, 64])
def test_matches_pytorch_dcgan_forward(size):
  torch = pytest.importorskip("torch")
  torch.manual_seed(size)
  nz, width, nc = 6, 3, 3
  tg, td = _torch_dcgan(torch, size, nz, width, nc)
  for m in (*tg, *td):  # Non-trivial batch-norm affine parameters.
    if isinstance(m, torch.nn.BatchNorm2d):
      torch.nn.init.normal_(m.weight, 1.0, 0.3)
      torch.nn.init.normal_(m.bias, 0.0, 0.3)
  z = torch.randn(4, nz)
  with torch.no_grad():
    t_images = tg(z[:, :, None, None])
    t_logits = td(t_images).reshape(-1)
  g = dcgan.Generator(image_size=size, channels=nc, latent_dim=nz, width=width)
  d = dcgan.Discriminator(image_size=size, width=width)
  images, _ = _apply(g, _to_flax(torch, tg), jnp.asarray(z.numpy()), None)
  logits, _ = _apply(d, _to_flax(torch, td), jnp.asarray(t_images.numpy().transpose(0, 2, 3, 1)),
                     None)
  np.testing.assert_allclose(images, t_images.numpy().transpose(0, 2, 3, 1), atol=1e-4)
  np.testing.assert_allclose(logits, t_logits.numpy(), rtol=1e-4, atol=1e-4)


def test_pytorch_dcgan_64px_param_counts():
  torch = pytest.importorskip("torch")
  tg, td = _torch_dcgan(torch, 64, 100, 64, 3)
  assert sum(p.numel() for p in tg.parameters()) == 3_576_704
  assert sum(p.numel() for p in td.parameters()) == 2_765_568


def test_power_iteration_converges_to_the_largest_singular_value():
  from aigc_jax.models import normalization
  w = np.random.default_rng(0).normal(size=(12, 5))
  u = jnp.asarray(np.random.default_rng(1).normal(size=5), jnp.float32)
  sigma, _ = normalization.spectral_norm(jnp.asarray(w, jnp.float32), u, num_steps=100)
  np.testing.assert_allclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-4)


def test_spectral_discriminator_kernels_reach_unit_norm_and_u_lives_in_its_collection():
  from aigc_jax.models import normalization
  valid_conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  conv = normalization.SpectralConv(6, (3, 3), valid_conv)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 5, 4)), jnp.float32)
  variables = conv.init(jax.random.key(0), x, train=False)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  top = np.linalg.svd(kernel.reshape(-1, 6), compute_uv=False)[0]
  _, unchanged = conv.apply(variables, x, train=False, mutable=["spectral"])
  np.testing.assert_array_equal(unchanged["spectral"]["u"], variables["spectral"]["u"])
  step = jax.jit(lambda v: conv.apply(v, x, train=True, mutable=["spectral"]))
  for _ in range(30):  # One power-iteration step per training call, carried in the collection.
    y, updated = step(variables)
    variables = {**variables, **updated}
  # The layer equals a plain convolution with kernel / sigma_max(kernel).
  expected = jax.lax.conv_general_dilated(x, jnp.asarray(kernel / top, jnp.float32), (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-4)
  d = dcgan.Discriminator(image_size=16, width=4, norm="spectral")
  dv = d.init(jax.random.key(1), jnp.zeros((1, 16, 16, 1)), train=False)
  assert set(dv) == {"params", "spectral"} and len(dv["spectral"]) == 3


def _minibatch_stddev_reference(x: np.ndarray, group: int) -> np.ndarray:
  """StyleGAN's minibatch std in float64 loops: example i is in group i % (n / group)."""
  n, h, w, _ = x.shape
  num_groups = n // group
  out = np.empty((n, h, w, 1))
  for g in range(num_groups):
    members = x[g::num_groups].astype(np.float64)
    out[g::num_groups] = np.sqrt(members.var(axis=0) + 1e-8).mean()
  return np.concatenate([x, out], axis=-1)


@pytest.mark.parametrize("n, group", [(8, 4), (6, 2), (3, 4)])
def test_minibatch_stddev_matches_numpy(n, group):
  x = np.random.default_rng(n).normal(size=(n, 3, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(dcgan.minibatch_stddev(jnp.asarray(x), group),
                             _minibatch_stddev_reference(x, min(group, n)), rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_needs_groups_that_divide_the_batch():
  with pytest.raises(ValueError, match="do not divide"):
    dcgan.minibatch_stddev(jnp.zeros((6, 2, 2, 1)), 4)


def test_minibatch_std_discriminator_scores_a_batch_by_its_variety():
  d = dcgan.Discriminator(image_size=16, width=4, minibatch_std=4)
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 1)), jnp.float32)
  variables = random_variables(d, images, None, train=False)
  # The last conv reads width*2 features plus the std map.
  assert variables["params"]["Conv_2"]["kernel"].shape[-2] == 4 * 2 + 1
  varied = _apply(d, variables, images, None)[0]
  # The same image four times has zero std: every logit moves, though each image is unchanged.
  copies = _apply(d, variables, jnp.repeat(images[:1], 4, axis=0), None)[0]
  assert not np.allclose(varied[0], copies[0], atol=1e-4)
