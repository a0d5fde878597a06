"""Resampling NHWC images at arbitrary source coordinates.

`sample` reads each output pixel from k x k taps of the source (k = 1, 2, 4
for nearest, bilinear and bicubic), each tap a 2-D gather that carries every
channel along, so the channels are never interpolated into each other. Border
modes follow OpenCV: out-of-range coordinates are first folded into the image
by the mode's symmetry (period, mirror), then the patch is read from an image
padded by a few pixels in that mode, so any coordinate, however far out, costs
the same.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from aigc_jax.errors import UserError

MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
ORDERS = (0, 1, 3)
CUBIC_A = -0.75  # OpenCV's INTER_CUBIC coefficient.
_PAD = 3  # Enough for bicubic taps (-1..2) and the bilinear gradient's 3x3 window.


def check_order_mode(order: int, mode: str) -> None:
  """Raises UserError unless `order` and `mode` are supported."""
  if order not in ORDERS:
    raise UserError(f"interpolation order={order!r} is not valid: choose 0 (nearest), 1 (bilinear) or 3 (bicubic)")
  if mode not in MODES:
    raise UserError(f"border mode={mode!r} is not valid: choose one of {', '.join(MODES)}")


def _fold(x: jax.Array, n: int, mode: str) -> jax.Array:
  """Maps coordinates along an axis of length n to equivalent ones the padded image holds."""
  if mode == "constant":
    # Beyond these every tap of every kernel falls on cval.
    return jnp.clip(x, -2.0, n + 1.0)
  if mode == "edge" or n == 1:
    return jnp.clip(x, -1.0, float(n))
  if mode == "wrap":
    return jnp.mod(x, n)
  if mode == "symmetric":  # Mirror about -0.5 and n - 0.5, period 2n.
    u = jnp.mod(x + 0.5, 2 * n)
    return jnp.where(u > n, 2 * n - u, u) - 0.5
  u = jnp.mod(x, 2 * n - 2)  # reflect: mirror about 0 and n - 1, period 2n - 2.
  return jnp.where(u > n - 1, 2 * n - 2 - u, u)


def cubic_weights(t: jax.Array) -> jax.Array:
  """Cubic-convolution weights (a = -0.75) of the taps at offsets -1, 0, 1, 2 for fraction t."""
  a = CUBIC_A

  def near(d):  # |d| <= 1
    return ((a + 2) * d - (a + 3)) * d * d + 1

  def far(d):  # 1 < |d| < 2
    return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

  return jnp.stack([far(1 + t), near(t), near(1 - t), far(2 - t)], axis=-1)


def _base_and_weights(x: jax.Array, order: int) -> tuple[jax.Array, jax.Array]:
  """Returns each coordinate's first tap index and its taps' weights [..., k]."""
  if order == 0:
    return jnp.floor(x + 0.5).astype(jnp.int32), jnp.ones(x.shape + (1,), x.dtype)
  base = jnp.floor(x)
  t = x - base
  if order == 1:
    return base.astype(jnp.int32), jnp.stack([1 - t, t], axis=-1)
  return base.astype(jnp.int32) - 1, cubic_weights(t)


def _separable(padded: jax.Array, y0: jax.Array, x0: jax.Array, wy: jax.Array, wx: jax.Array) -> jax.Array:
  """Sum over k x k taps from (y0, x0) of wy[j] * wx[i] * pixel -> [N,P,C] float32.

  padded is [N,Hp,Wp,C]; y0, x0 [N,P] are first-tap indices into it; wy, wx [N,P,k].
  Each tap is one gather of whole C-vectors from the flattened batch, which XLA:CPU
  runs far faster than a gather of k x k x C slices.
  """
  n, hp, wp, c = padded.shape
  flat = padded.reshape(n * hp * wp, c)
  base = (jnp.arange(n, dtype=jnp.int32)[:, None] * hp + y0) * wp + x0
  k = wy.shape[-1]
  out = 0.0
  for j in range(k):
    row = 0.0
    for i in range(k):
      tap = flat.at[base + (j * wp + i)].get(mode="clip").astype(jnp.float32)
      row = row + wx[..., i, None] * tap
    out = out + wy[..., j, None] * row
  return out


def _interp(padded: jax.Array, ys: jax.Array, xs: jax.Array, order: int) -> jax.Array:
  """Interpolates padded images at folded coordinates ys/xs [N,P] -> [N,P,C] float32."""
  y0, wy = _base_and_weights(ys, order)
  x0, wx = _base_and_weights(xs, order)
  return _separable(padded, y0 + _PAD, x0 + _PAD, wy, wx)


@jax.custom_jvp
def _bilinear(padded: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
  return _interp(padded, ys, xs, 1)


@_bilinear.defjvp
def _bilinear_jvp(primals, tangents):
  # Bilinear interpolation has a kink at every integer coordinate, where plain
  # autodiff returns the one-sided slope (and libraries that floor with a zero
  # gradient return 0 at the identity transform). Use the mean of the left and
  # right slopes there, i.e. the slope central finite differences see.
  padded, ys, xs = primals
  d_padded, d_ys, d_xs = tangents
  out = _interp(padded, ys, xs, 1)
  y0 = jnp.floor(ys)
  x0 = jnp.floor(xs)
  ty, tx = ys - y0, xs - x0
  y0, x0 = y0.astype(jnp.int32) - 1 + _PAD, x0.astype(jnp.int32) - 1 + _PAD

  def value_weights(t):  # Taps at offsets -1, 0, 1 from the floor.
    return jnp.stack([jnp.zeros_like(t), 1 - t, t], axis=-1)

  def slope_weights(t):
    on_grid = (t == 0).astype(t.dtype)
    return jnp.stack([-0.5 * on_grid, on_grid - 1, 1 - 0.5 * on_grid], axis=-1)

  grad_y = _separable(padded, y0, x0, slope_weights(ty), value_weights(tx))
  grad_x = _separable(padded, y0, x0, value_weights(ty), slope_weights(tx))
  d_out = (_interp(d_padded, ys, xs, 1) + grad_y * d_ys[..., None] + grad_x * d_xs[..., None])
  return out, d_out


# XLA:CPU runs each step of a warp (coordinates, pad, fold, every tap's gather, the weighted
# sum) over the whole batch before the next. Nearest and bilinear are memory-bound, so once a batch
# outgrows the last-level cache they stream it through memory several times; from this many input
# values on (32 MiB of float32) they run in chunks of _CPU_CHUNK_VALUES (at least two images), which
# stay in cache. Smaller batches, and bicubic (16 taps, arithmetic-bound), are faster in one pass,
# whose large ops XLA spreads over the cores. Accelerators take it whole (benchmarks/RESULTS.md,
# "Transforms").
_CPU_ONE_PASS_VALUES = 2**23
_CPU_CHUNK_VALUES = 2**17


def _in_chunks(fn: Callable, images: jax.Array, params) -> jax.Array:
  """fn(images, params) over slices of the batch in sequence: whole chunks, then the rest."""
  n = images.shape[0]
  chunk = max(2, _CPU_CHUNK_VALUES // max(1, images[0].size))
  if n <= chunk:
    return fn(images, params)
  whole = n // chunk * chunk

  def split(a):
    return a[:whole].reshape((n // chunk, chunk) + a.shape[1:])

  head = lax.map(lambda args: fn(*args), jax.tree.map(split, (images, params)))
  head = head.reshape((whole,) + head.shape[2:])
  if whole == n:
    return head
  rest = fn(*jax.tree.map(lambda a: a[whole:], (images, params)))
  return jnp.concatenate([head, rest])


def warp(images: jax.Array, coords: Callable, params, *, order: int = 1, mode: str = "constant",
         cval: float = 0.0) -> jax.Array:
  """Samples images [N,H,W,C] at `coords(params) -> (ys, xs)` [N,Ho,Wo]; params' leaves are [N,...].

  On a CPU, large batches are resampled slice by slice, each slice's coordinates computed next to
  the sampling that reads them.
  """
  check_order_mode(order, mode)

  def one_pass(images, params):
    ys, xs = coords(params)
    return _sample(images, ys, xs, order=order, mode=mode, cval=cval)

  if order > 1 or images.size <= _CPU_ONE_PASS_VALUES:
    return one_pass(images, params)
  return lax.platform_dependent(images, params, cpu=functools.partial(_in_chunks, one_pass),
                                default=one_pass)


@functools.partial(jax.jit, static_argnames=("order", "mode"))
def sample(images: jax.Array, ys: jax.Array, xs: jax.Array, *, order: int = 1,
           mode: str = "constant", cval: float = 0.0) -> jax.Array:
  """Samples images [N,H,W,C] at source pixel coordinates ys, xs [N,Ho,Wo] -> [N,Ho,Wo,C]."""
  return warp(images, lambda yx: yx, (ys, xs), order=order, mode=mode, cval=cval)


def _sample(images: jax.Array, ys: jax.Array, xs: jax.Array, *, order: int, mode: str,
            cval: float) -> jax.Array:
  n, h, w, c = images.shape
  out_shape = ys.shape
  ys = ys.reshape(n, -1).astype(jnp.float32)
  xs = xs.reshape(n, -1).astype(jnp.float32)
  if order == 0:  # Round before folding, as OpenCV does: a mirror would flip how ties round.
    ys, xs = jnp.floor(ys + 0.5), jnp.floor(xs + 0.5)
  ys, xs = _fold(ys, h, mode), _fold(xs, w, mode)
  widths = ((0, 0), (_PAD, _PAD), (_PAD, _PAD), (0, 0))
  if mode == "constant":
    padded = jnp.pad(images, widths, constant_values=jnp.asarray(cval, images.dtype))
  else:
    padded = jnp.pad(images, widths, mode=mode)
  if order == 1:
    out = _bilinear(padded, ys, xs)
  else:
    out = _interp(padded, ys, xs, order)
  return out.reshape(out_shape + (c,)).astype(images.dtype)
