"""Stride-2 (transposed) and whole-map convolution layers in the forms XLA:CPU runs fast.

`ConvTranspose2x` has the parameters and computes the function of
`flax.linen.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`
(= PyTorch `ConvTranspose2d(in, out, 4, stride=2, padding=1)`, doubling H and W),
but never asks XLA for a strided transposed convolution: XLA:CPU differentiates
those far slower than PyTorch. It uses the sub-pixel (phase) decomposition
instead: output pixel (2r+a, 2c+b) only ever sees input rows {r-1+a, r+a} and
columns {c-1+b, c+b}, through kernel taps {a, a+2} x {b, b+2}. So four stride-1
2x2 convolutions (one per phase (a, b)) interleaved by depth-to-space give the
same result with exactly the transposed convolution's multiply-adds. With at
most 4 output channels (a to-pixels layer) the forward is XLA's own, faster
there. Both gradients are those of the adjoint stride-2 convolution (the
transposed convolution's input gradient is that convolution, and its kernel
gradient that convolution's kernel gradient), one XLA conv each.

`ConvDown2x` has the parameters and computes the function of
`flax.linen.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))`
(= PyTorch `Conv2d(in, out, 4, stride=2, padding=1)`, halving H and W). Its
forward is XLA's, but the input gradient, which is a stride-2 transposed
convolution of the output gradient and which XLA computes as a slow
input-dilated convolution, goes through `conv_transpose_2x`. All kernel
gradients are written in the form XLA:CPU runs fast even inside a `lax.scan`
or `lax.cond`, where XLA's own form takes a slow generic path.

`ConvTransposeFromVector` is `flax.linen.ConvTranspose(features, (k, k),
padding="VALID")` applied to a 1x1 map (a latent vector): a single matmul.
`ConvToVector`, its mirror, is `flax.linen.Conv(features, (k, k),
padding="VALID")` applied to a kxk map, squeezed to [N, features]: also a single
matmul, whose input gradient is an outer product where XLA would run a
(2k-1)-padded convolution.

Kernel layout (the transposed layers, as in `flax.linen.ConvTranspose` with the
default `transpose_kernel=False`): `kernel[kh, kw, in, out]`. A PyTorch
`ConvTranspose2d` weight `w[in, out, kh, kw]` maps to
`kernel = w.permute(2, 3, 0, 1)[::-1, ::-1]` (spatially flipped), because
flax/lax applies the kernel as a correlation over the dilated input whereas
PyTorch scatters each input pixel through the kernel. `ConvDown2x` and
`ConvToVector` use nn.Conv's `kernel[kh, kw, in, out]`; a PyTorch `Conv2d`
weight `w[out, in, kh, kw]` maps to `w.permute(2, 3, 1, 0)` (no flip).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


# Up to this many output channels (the to-pixels layers) XLA's own transposed conv (an
# input-dilated conv) runs the forward faster than the four phase convs; from 8 channels up
# it is slower (benchmarks/RESULTS.md, "Train step"). Only the forward: the gradients are
# always the adjoint conv's (`_conv_2x_bwd`).
_MAX_CHANNELS_FOR_DILATED_FORWARD = 4


def _conv_transpose_2x_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  n, h, w, _ = x.shape
  cout = kernel.shape[3]
  if cout <= _MAX_CHANNELS_FOR_DILATED_FORWARD:
    return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # Phase (a, b) correlates input rows r-1+a, r+a (cols likewise) with taps
  # kernel[a::2, b::2]; its padding keeps the output aligned with the input.
  rows = []
  for a in (0, 1):
    phases = [
        jax.lax.conv_general_dilated(
            x, kernel[a::2, b::2], window_strides=(1, 1), padding=((1 - a, a), (1 - b, b)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for b in (0, 1)]
    rows.append(jnp.stack(phases, axis=3))  # [n, h, w, 2 (b), cout]
  out = jnp.stack(rows, axis=2)  # [n, h, 2 (a), w, 2 (b), cout]
  return out.reshape(n, 2 * h, 2 * w, cout)


def _strided_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """The kernel whose stride-2 conv is the adjoint (in x) of the transposed conv by `kernel`, and vice versa."""
  return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


def _kernel_gradient(x: jax.Array, g: jax.Array) -> jax.Array:
  """d<_strided_conv(x, K), g>/dK for even-sized x: [4, 4, C_in, C_out].

  Written as the convolution XLA:CPU hands to Eigen (C_in as the batch, N as the features, g as a
  2x-dilated HWIO kernel). Outside loops XLA rewrites its own autodiff form of this gradient into
  exactly this; inside a lax.scan or cond (k steps per dispatch, lazy R1) it does not, and the
  un-rewritten form takes a slow generic path (jax-ml/jax#12868; benchmarks/RESULTS.md, "Train step").
  """
  lhs = jnp.transpose(x, (3, 1, 2, 0))  # [C_in, H, W, N]
  rhs = jnp.transpose(g, (1, 2, 0, 3))  # [H/2, W/2, N, C_out]
  dk = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), ((1, 1), (1, 1)), rhs_dilation=(2, 2),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))  # [C_in, 4, 4, C_out]
  return jnp.transpose(dk, (1, 2, 0, 3))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_2x(x: jax.Array, kernel: jax.Array, transposed: bool) -> jax.Array:
  return _conv_transpose_2x_forward(x, kernel) if transposed else _strided_conv(x, kernel)


def _conv_2x_fwd(x, kernel, transposed):
  # Through the custom-VJP function, not its raw body: under a second differentiation (R1) JAX
  # differentiates this rule, and the raw body's autodiff convs are the slow form in loops.
  return _conv_2x(x, kernel, transposed), (x, kernel)


def _conv_2x_bwd(transposed, residuals, g):
  x, kernel = residuals
  # The stride-2 conv by K and the transposed conv by K' = _adjoint_kernel(K) are adjoints in x:
  # <strided(x, K), g> = <x, transposed(g, K')>. So each one's input gradient is the other one
  # applied to g, and both kernel gradients are one stride-2 conv's (for the transposed conv: of
  # g, by K', against x), never the slower gradients of the four phase convs or of XLA's
  # input-dilated conv. Every conv here, and so in a second-order gradient (R1) through it, is
  # one of these custom-VJP layers or `_kernel_gradient`: all in the form XLA:CPU runs fast.
  adjoint = _adjoint_kernel(kernel)
  if transposed:
    return conv_down_2x(g, adjoint), _adjoint_kernel(_kernel_gradient(g, x))
  return conv_transpose_2x(g, adjoint), _kernel_gradient(x, g)


_conv_2x.defvjp(_conv_2x_fwd, _conv_2x_bwd)


def conv_transpose_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Returns `lax.conv_transpose(x, kernel, (2, 2), "SAME")` for a 4x4 HWIO kernel.

  Computed as four 2x2 phase convs (XLA's own with <= 4 output channels); its gradients are those
  of the adjoint stride-2 convolution (see `_conv_2x_bwd`)."""
  if kernel.shape[:2] != (4, 4):
    raise ValueError(f"conv_transpose_2x needs a 4x4 kernel, got {kernel.shape[0]}x{kernel.shape[1]}")
  return _conv_2x(x, kernel, True)


def conv_down_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Returns the 4x4 stride-2 padding-1 conv of even-sized NHWC `x` (gradients: see `_conv_2x_bwd`)."""
  _, h, w, _ = x.shape
  if kernel.shape[:2] != (4, 4):
    raise ValueError(f"conv_down_2x needs a 4x4 kernel, got {kernel.shape[0]}x{kernel.shape[1]}")
  if h % 2 or w % 2:
    raise ValueError(f"conv_down_2x needs even height and width, got {h}x{w}")
  return _conv_2x(x, kernel, False)


def conv_to_vector(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The VALID conv of [N, k, k, C] maps by a [k, k, C, F] kernel, squeezed to [N, F]: one matmul."""
  k = kernel.shape[0]
  if x.shape[1:3] != kernel.shape[:2]:
    raise ValueError(f"ConvToVector({k}) needs {k}x{k} maps, got {x.shape}")
  return jnp.einsum("nhwc,hwco->no", x, kernel)


def channel_sums(rows: jax.Array) -> jax.Array:
  """Sums [M, C] over M as a product with a vector of ones.

  XLA:CPU rewrites large sums into tree reductions (reduce-window) that run slower than this
  matrix-vector product (benchmarks/RESULTS.md, "Train step").
  """
  return jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows,
                 preferred_element_type=jnp.promote_types(rows.dtype, jnp.float32)).astype(rows.dtype)


def _kernel_and_bias(layer: nn.Module, x: jax.Array, k: int):
  """Declares `layer`'s [k, k, C_in, features] kernel and optional bias as flax's convs name
  them (so parameters and checkpoints match), and promotes x, kernel, bias to its dtype."""
  kernel = layer.param("kernel", layer.kernel_init, (k, k, x.shape[-1], layer.features),
                       layer.param_dtype)
  bias = (layer.param("bias", layer.bias_init, (layer.features,), layer.param_dtype)
          if layer.use_bias else None)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=layer.dtype)


class _Conv4x4(nn.Module):
  """A layer with a [4, 4, C_in, features] kernel (and bias) computed by `op`, as flax's convs."""

  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  def op(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to [N, H, W, C_in]."""
    x, kernel, bias = _kernel_and_bias(self, x, 4)
    y = self.op(x, kernel)
    return y if bias is None else y + bias


class ConvDown2x(_Conv4x4):
  """Stride-2 4x4 convolution with padding 1: [N, H, W, C] (H, W even) -> [N, H/2, W/2, features].

  Parameters as nn.Conv(features, (4, 4), strides=2, padding=1)."""

  def op(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_down_2x(x, kernel)


class ConvTranspose2x(_Conv4x4):
  """Stride-2 4x4 transposed convolution: [N, H, W, C] -> [N, 2H, 2W, features].

  Parameters as nn.ConvTranspose(features, (4, 4), strides=2, padding="SAME")."""

  def op(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_transpose_2x(x, kernel)


class _WholeMapConv(nn.Module):
  """A layer with a [k, k, C_in, features] kernel (and bias) that maps between a kxk map and a vector."""

  features: int
  kernel_size: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  def op(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to its input (see the subclass)."""
    x, kernel, bias = _kernel_and_bias(self, x, self.kernel_size)
    y = self.op(x, kernel)
    return y if bias is None else y + bias


class ConvTransposeFromVector(_WholeMapConv):
  """A VALID stride-1 kxk transposed convolution of a 1x1 map: [N, C] -> [N, k, k, features]."""

  def op(self, z: jax.Array, kernel: jax.Array) -> jax.Array:
    # The transposed conv correlates the zero-padded point with the kernel, so
    # output pixel (i, j) reads tap (k-1-i, k-1-j).
    return jnp.einsum("nc,hwco->nhwo", z, kernel[::-1, ::-1])


class ConvToVector(_WholeMapConv):
  """A VALID kxk convolution of a kxk map, squeezed: [N, k, k, C] -> [N, features].

  nn.Conv's [N, 1, 1, features] output without the 1x1 axes."""

  def op(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_to_vector(x, kernel)
