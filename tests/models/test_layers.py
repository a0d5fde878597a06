"""ConvTranspose2x, ConvDown2x, ConvTransposeFromVector and ConvToVector against flax/lax convs,
numpy and PyTorch."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.models import layers

# (batch, height, width, in channels, out channels); out channels <= 4 take conv_transpose_2x's
# input-dilated forward, 5 its four phase convs; both share the adjoint conv's gradients.
SHAPES = [
    (2, 1, 1, 3, 2),
    (1, 5, 4, 3, 5),
    (3, 4, 6, 8, 1),
]


def _close(actual, expected, tol=1e-5):
  expected = np.asarray(expected, np.float64)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol,
                             atol=tol * max(1.0, np.abs(expected).max()))


def _numpy_conv_transpose(x, torch_weight, stride, padding):
  """PyTorch ConvTranspose2d by definition: each input pixel scatters weight * value, float64."""
  n, h, w, _ = x.shape
  _, cout, kh, kw = torch_weight.shape
  full = np.zeros((n, (h - 1) * stride + kh, (w - 1) * stride + kw, cout))
  for i in range(h):
    for j in range(w):
      full[:, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
          "nc,cokl->nklo", x[:, i, j], torch_weight)
  return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]


def _flax_to_torch_weight(kernel):
  """The documented layout mapping, inverted: kernel[kh, kw, in, out] -> w[in, out, kh, kw]."""
  return np.asarray(kernel, np.float64)[::-1, ::-1].transpose(2, 3, 0, 1)


def _normal(rng, *shape):
  return rng.normal(size=shape).astype(np.float32)


def _input_and_4x4_params(shape, seed=None):
  """Random input [n,h,w,cin] and 4x4 kernel/bias params for a (n, h, w, cin, cout) case."""
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(sum(shape) if seed is None else seed)
  x = _normal(rng, n, h, w, cin)
  return x, {"params": {"kernel": _normal(rng, 4, 4, cin, cout), "bias": _normal(rng, cout)}}, rng


def _assert_same_param_shapes(ours, reference, x, reference_x, params):
  shapes = lambda module, x: jax.tree.map(jnp.shape, jax.eval_shape(module.init, jax.random.key(0), x))
  assert shapes(ours, x) == shapes(reference, reference_x) == jax.tree.map(jnp.shape, params)


@jax.jit(static_argnums=0)
def _vjp(f, x, kernel, cotangent):
  y, vjp = jax.vjp(f, x, kernel)
  return (y, *vjp(cotangent))


@jax.jit(static_argnums=(0, 1))
def _outputs_and_gradients(apply, reference_apply, params, x, cotangent):
  """(output, d/dparams, d/dx) of both functions for the loss <f(params, x), cotangent>."""

  def both(f):
    y, vjp = jax.vjp(f, params, x)
    return (y, *vjp(cotangent))

  return both(apply), both(reference_apply)


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_transpose_2x_matches_flax_conv_transpose_forward_and_gradients(shape):
  n, h, w, cin, cout = shape
  x, params, rng = _input_and_4x4_params(shape)
  reference = nn.ConvTranspose(cout, (4, 4), strides=(2, 2), padding="SAME")
  ours = layers.ConvTranspose2x(cout)
  _assert_same_param_shapes(ours, reference, x, x, params)
  cotangent = _normal(rng, n, 2 * h, 2 * w, cout)

  got, want = _outputs_and_gradients(ours.apply, reference.apply, params, x, cotangent)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_conv_transpose_2x_matches_lax_conv_transpose_with_torch_padding(shape):
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(7)
  x, kernel = _normal(rng, n, h, w, cin), _normal(rng, 4, 4, cin, cout)
  # PyTorch padding p pads the dilated input by k - 1 - p = 2 on each side.
  expected = jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _close(layers.conv_transpose_2x(x, kernel), expected)
  numpy_ref = _numpy_conv_transpose(np.asarray(x, np.float64), _flax_to_torch_weight(kernel), 2, 1)
  _close(layers.conv_transpose_2x(x, kernel), numpy_ref)


def _assert_matches_torch(ours, torch_op, x, kernel, to_torch_weight, rng):
  """Our op vs a torch functional op (stride 2, padding 1): output and input/kernel gradients."""
  torch = pytest.importorskip("torch")
  tx = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
  tw = torch.tensor(to_torch_weight(kernel).astype(np.float32).copy(), requires_grad=True)
  ty = torch_op(tx, tw, stride=2, padding=1)
  cotangent = _normal(rng, *ty.shape)
  (ty * torch.tensor(cotangent)).sum().backward()

  y, dx, dkernel = _vjp(ours, x, kernel, cotangent.transpose(0, 2, 3, 1))
  _close(y, ty.detach().numpy().transpose(0, 2, 3, 1))
  _close(dx, tx.grad.numpy().transpose(0, 2, 3, 1))
  _close(to_torch_weight(dkernel), tw.grad.numpy())


def test_conv_transpose_2x_matches_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(3)
  x, kernel = _normal(rng, 2, 5, 6, 3), _normal(rng, 4, 4, 3, 4)
  _assert_matches_torch(layers.conv_transpose_2x, torch.nn.functional.conv_transpose2d, x, kernel,
                        _flax_to_torch_weight, rng)


def test_conv_transpose_2x_rejects_other_kernel_sizes():
  with pytest.raises(ValueError, match="4x4"):
    layers.conv_transpose_2x(jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 1)))


@pytest.mark.parametrize("kernel_size,cin,cout", [(4, 5, 3), (7, 2, 6)])
def test_conv_transpose_from_vector_matches_flax_valid_conv_transpose(kernel_size, cin, cout):
  rng = np.random.default_rng(kernel_size)
  z = _normal(rng, 3, cin)
  params = {"params": {"kernel": _normal(rng, kernel_size, kernel_size, cin, cout),
                       "bias": _normal(rng, cout)}}
  reference = nn.ConvTranspose(cout, (kernel_size, kernel_size), padding="VALID")
  ours = layers.ConvTransposeFromVector(cout, kernel_size)
  _assert_same_param_shapes(ours, reference, z, z[:, None, None, :], params)
  cotangent = _normal(rng, 3, kernel_size, kernel_size, cout)

  got, want = _outputs_and_gradients(
      ours.apply, lambda p, z: reference.apply(p, z[:, None, None, :]), params, z, cotangent)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b)


# (batch, height, width, in channels, out channels): with <= 4 input channels ConvDown2x's input
# gradient is XLA's input-dilated conv, from 5 on the phase-decomposed one; both must match.
DOWN_SHAPES = [(2, 4, 6, 3, 5), (3, 6, 4, 16, 2), (1, 2, 2, 20, 7)]


@pytest.mark.parametrize("shape", DOWN_SHAPES)
def test_conv_down_2x_matches_flax_strided_conv_forward_and_gradients(shape):
  n, h, w, cin, cout = shape
  x, params, rng = _input_and_4x4_params(shape)
  reference = nn.Conv(cout, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
  ours = layers.ConvDown2x(cout)
  _assert_same_param_shapes(ours, reference, x, x, params)
  cotangent = _normal(rng, n, h // 2, w // 2, cout)

  got, want = _outputs_and_gradients(ours.apply, reference.apply, params, x, cotangent)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b)


@jax.jit(static_argnums=0)
def _input_gradient_penalty_grad(apply, params, x):
  """d/dparams of ||d/dx sum(sin(f(params, x)))||^2: the second order R1 and WGAN-GP need."""

  def penalty(params):
    return jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(apply(params, x))))(x) ** 2)

  return jax.grad(penalty)(params)


@pytest.mark.parametrize("ours, reference, shape", [
    (layers.ConvDown2x, lambda c: nn.Conv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
     DOWN_SHAPES[1]),
    (layers.ConvTranspose2x, lambda c: nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME"),
     SHAPES[1]),
    (layers.ConvTranspose2x, lambda c: nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME"),
     SHAPES[2]),
], ids=["down", "transpose_phases", "transpose_dilated"])
def test_second_order_gradients_match_flax(ours, reference, shape):
  cout = shape[-1]
  x, params, _ = _input_and_4x4_params(shape, seed=11)
  got = _input_gradient_penalty_grad(ours(cout).apply, params, x)
  want = _input_gradient_penalty_grad(reference(cout).apply, params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b)


def test_conv_down_2x_matches_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(5)
  x, kernel = _normal(rng, 2, 6, 8, 16), _normal(rng, 4, 4, 16, 3)
  # Conv2d weight [out, in, kh, kw] applies as a correlation, like lax: no flip.
  _assert_matches_torch(layers.conv_down_2x, torch.nn.functional.conv2d, x, kernel,
                        lambda k: np.asarray(k).transpose(3, 2, 0, 1), rng)


def test_conv_down_2x_rejects_odd_sizes_and_other_kernels():
  with pytest.raises(ValueError, match="even"):
    layers.conv_down_2x(jnp.zeros((1, 5, 4, 16)), jnp.zeros((4, 4, 16, 1)))
  with pytest.raises(ValueError, match="4x4"):
    layers.conv_down_2x(jnp.zeros((1, 4, 4, 16)), jnp.zeros((3, 3, 16, 1)))


@pytest.mark.parametrize("kernel_size,cin,cout", [(4, 5, 1), (7, 3, 2)])
def test_conv_to_vector_matches_flax_valid_conv(kernel_size, cin, cout):
  rng = np.random.default_rng(kernel_size + 1)
  x = _normal(rng, 3, kernel_size, kernel_size, cin)
  params = {"params": {"kernel": _normal(rng, kernel_size, kernel_size, cin, cout),
                       "bias": _normal(rng, cout)}}
  reference = nn.Conv(cout, (kernel_size, kernel_size), padding="VALID")
  ours = layers.ConvToVector(cout, kernel_size)
  _assert_same_param_shapes(ours, reference, x, x, params)
  cotangent = _normal(rng, 3, cout)

  got, want = _outputs_and_gradients(
      ours.apply, lambda p, x: reference.apply(p, x)[:, 0, 0], params, x, cotangent)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _close(a, b)


def test_conv_to_vector_rejects_maps_of_another_size():
  with pytest.raises(ValueError, match="4x4"):
    layers.ConvToVector(1, 4).init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))


def test_bfloat16_layers_keep_float32_params():
  x = jnp.ones((1, 2, 2, 3))
  for module, inputs in [(layers.ConvTranspose2x(4, dtype=jnp.bfloat16), x),
                         (layers.ConvDown2x(4, dtype=jnp.bfloat16), x),
                         (layers.ConvToVector(4, 2, dtype=jnp.bfloat16), x),
                         (layers.ConvTransposeFromVector(4, 4, dtype=jnp.bfloat16), x[:, 0, 0])]:
    params = jax.eval_shape(module.init, jax.random.key(0), inputs)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(module.apply, params, inputs).dtype == jnp.bfloat16


def test_channel_sums_match_numpy_in_float64():
  rows = _normal(np.random.default_rng(0), 1000, 20) + 3.0
  _close(layers.channel_sums(jnp.asarray(rows)), rows.astype(np.float64).sum(axis=0))
  sums = layers.channel_sums(jnp.asarray(rows, jnp.bfloat16))
  assert sums.dtype == jnp.bfloat16
  _close(sums, rows.astype(np.float64).sum(axis=0), tol=1e-2)


def test_gradients_inside_a_loop_keep_the_conv_form_xla_cpu_runs_fast():
  # Inside a lax.scan or cond (k steps per dispatch, lazy R1) XLA:CPU leaves its own autodiff
  # convs in a layout it runs ~100x slower (jax-ml/jax#12868). A GAN step's convs must already be
  # in the canonical NHWC/HWIO form: G's and D's gradients, and R1's second order through D.
  rng = np.random.default_rng(0)
  z, real = _normal(rng, 2, 2, 2, 8), _normal(rng, 2, 8, 8, 3)
  params = {"g": (_normal(rng, 4, 4, 8, 16), _normal(rng, 4, 4, 16, 3)),
            "d": (_normal(rng, 4, 4, 3, 16), _normal(rng, 4, 4, 16, 8))}

  def generator(kernels, z):
    return layers.conv_transpose_2x(jnp.tanh(layers.conv_transpose_2x(z, kernels[0])), kernels[1])

  def discriminator(kernels, x):
    return jnp.sum(jnp.sin(layers.conv_down_2x(jnp.tanh(layers.conv_down_2x(x, kernels[0])), kernels[1])))

  def loss(params):
    r1 = jnp.sum(jax.grad(lambda x: discriminator(params["d"], x))(real) ** 2)
    return discriminator(params["d"], generator(params["g"], z)) + r1

  def step(params, _):
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, jax.grad(loss)(params)), None

  compiled = jax.jit(lambda p: jax.lax.scan(step, p, None, length=2)[0]).lower(params).compile()
  forms = re.findall(r"dim_labels=([^,\s]+)", compiled.as_text())
  assert forms and set(forms) == {"b01f_01io->b01f"}, forms
