"""Spec strings: a pipeline of registered ops, e.g. "rotate(-15,15)|translate(0.1)|gaussian_noise(0.05)".

Stages are separated by "|" and run in order; "a/b" picks a or b per example;
every op takes p= (apply to each example with probability p). Geometric ops
also take order=, mode= and cval= (default -1, black). Arguments are
positional or keyword literals; bare words are strings (mode=reflect).
Ranges are (lo, hi) drawn per example; translate(x, y) is a fraction of the
size (y < 0: same as x); hflip/vflip always flip unless given p (hflip(p=0.5)).
"""

from __future__ import annotations

import ast
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp

from aigc_jax.errors import UserError
from aigc_jax.transforms import compose, geometric, noise, sampling

_WARP = {"order": 1, "mode": "constant", "cval": -1.0}


def _affine(rotate=(0.0, 0.0), scale=(1.0, 1.0), translate=(0.0, 0.0), shear=(0.0, 0.0), **warp) -> compose.Op:
  return functools.partial(geometric.random_affine, rotate=rotate, scale=scale, translate=translate, shear=shear,
                           **warp)


def _rotate(lo=-15.0, hi=15.0, **warp):
  return _affine(rotate=(lo, hi), **warp)


def _scale(lo=0.9, hi=1.1, **warp):
  return _affine(scale=(lo, hi), **warp)


def _translate(x=0.1, y=-1.0, **warp):
  return _affine(translate=(x, x if y < 0 else y), **warp)


def _shear(lo=-10.0, hi=10.0, **warp):
  return _affine(shear=(lo, hi), **warp)


def _perspective(distortion=0.3, **warp):
  return functools.partial(geometric.random_perspective, distortion=distortion, **warp)


def _elastic(alpha=2.0, sigma=3.0, order=1, mode="reflect", cval=-1.0):
  return functools.partial(geometric.elastic, alpha=alpha, sigma=sigma, order=order, mode=mode, cval=cval)


def _fbm_warp(strength=4.0, octaves=3, scale=16.0, order=1, mode="reflect", cval=-1.0):
  return functools.partial(noise.fbm_warp, strength=strength, octaves=octaves, scale=scale, order=order, mode=mode,
                           cval=cval)


def _crop(lo=0.5, hi=1.0, order=1):
  return functools.partial(geometric.random_crop_resize, scale=(lo, hi), order=order)


def _flip(horizontal: bool):
  flip = geometric.hflip if horizontal else geometric.vflip
  return lambda: (lambda key, images: flip(images))


def _pixel(fn, name):
  def factory(value):
    return lambda key, images: fn(key, images, value)
  factory.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                               default=inspect.signature(fn).parameters[name].default)])
  return factory


def _blend(alpha=0.3, texture="clouds"):
  return functools.partial(noise.blend_texture, alpha=alpha, kind=texture)


def _with_warp_args(fn):
  """Gives a geometric factory the shared order=, mode=, cval= keywords in its signature."""
  params = [p for p in inspect.signature(fn).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
  params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in _WARP.items()]
  wrapped = functools.wraps(fn)(lambda *a, **kw: fn(*a, **kw))
  wrapped.__signature__ = inspect.Signature(params)
  return wrapped


OPS: dict[str, Callable[..., compose.Op]] = {
    "rotate": _with_warp_args(_rotate),
    "scale": _with_warp_args(_scale),
    "translate": _with_warp_args(_translate),
    "shear": _with_warp_args(_shear),
    "perspective": _with_warp_args(_perspective),
    "elastic": _elastic,
    "fbm_warp": _fbm_warp,
    "crop": _crop,
    "hflip": _flip(True),
    "vflip": _flip(False),
    "gaussian_noise": _pixel(noise.gaussian_noise, "std"),
    "uniform_noise": _pixel(noise.uniform_noise, "amount"),
    "speckle": _pixel(noise.speckle, "std"),
    "salt_pepper": _pixel(noise.salt_pepper, "amount"),
    "blend": _blend,
}

_CHOICES = {"order": sampling.ORDERS, "mode": sampling.MODES, "texture": noise.TEXTURES}


def _describe(name: str) -> str:
  params = inspect.signature(OPS[name]).parameters.values()
  return f"{name}({', '.join(f'{p.name}={p.default}' for p in params)})"


def valid_ops() -> str:
  """One line listing every op with its arguments and defaults."""
  return ("valid ops: " + "; ".join(_describe(n) for n in OPS) +
          "; every op also takes p=1.0; join stages with '|' and alternatives with '/'")


def _fail(term: str, why: str) -> UserError:
  return UserError(f"bad transform {term!r}: {why}; {valid_ops()}")


def _literal(node: ast.AST, term: str):
  if isinstance(node, ast.Name):
    return node.id
  try:
    return ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError):
    raise _fail(term, f"argument {ast.unparse(node)!r} is not a number or word") from None


def _check_value(term: str, name: str, value, default) -> None:
  if isinstance(default, bool) or isinstance(value, bool):
    ok = isinstance(value, bool) == isinstance(default, bool)
  elif isinstance(default, float):
    ok = isinstance(value, (int, float))
  else:
    ok = isinstance(value, type(default))
  if not ok:
    raise _fail(term, f"{name}={value!r} should be a {type(default).__name__}")
  if name in _CHOICES and value not in _CHOICES[name]:
    raise _fail(term, f"{name}={value!r}; choose one of {', '.join(map(str, _CHOICES[name]))}")


# Arguments that must be positive (a zero would divide by zero or give empty images).
_POSITIVE = {"crop": ("lo",), "scale": ("lo",), "elastic": ("sigma",), "fbm_warp": ("octaves", "scale")}


def _check_ranges(term: str, op: str, arguments: dict) -> None:
  for name in _POSITIVE.get(op, ()):
    if arguments[name] <= 0:
      raise _fail(term, f"{name}={arguments[name]!r} must be positive")
  if "lo" in arguments and "hi" in arguments and arguments["lo"] > arguments["hi"]:
    raise _fail(term, f"the range lo={arguments['lo']!r} > hi={arguments['hi']!r}")


def _parse_term(term: str) -> compose.Op:
  try:
    node = ast.parse(term, mode="eval").body
  except SyntaxError:
    raise _fail(term, "cannot parse it") from None
  call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
  if not isinstance(call.func, ast.Name) or call.func.id not in OPS:
    raise _fail(term, "unknown op")
  factory = OPS[call.func.id]
  args = [_literal(a, term) for a in call.args]
  kwargs = {kw.arg: _literal(kw.value, term) for kw in call.keywords}
  p = kwargs.pop("p", 1.0)
  if not isinstance(p, (int, float)) or not 0 <= p <= 1:
    raise _fail(term, f"p={p!r} must be a probability in [0, 1]")
  signature = inspect.signature(factory)
  try:
    bound = signature.bind(*args, **kwargs)
  except TypeError as e:
    raise _fail(term, str(e)) from None
  for name, value in bound.arguments.items():
    _check_value(term, name, value, signature.parameters[name].default)
  bound.apply_defaults()  # The factories' own defaults may differ from the shared ones shown (cval=-1).
  _check_ranges(term, call.func.id, bound.arguments)
  return compose.with_probability(factory(*bound.args, **bound.kwargs), float(p))


def _split_top(text: str, sep: str) -> list[str]:
  """Splits on `sep` outside parentheses."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if ch == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  return parts + [text[start:]]


@functools.lru_cache(maxsize=64)  # Same spec, same jitted op: no recompiles.
def parse_spec(spec: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Parses a spec string into one jitted op `(key, images) -> images`; raises UserError if invalid."""
  stages = []
  for stage in _split_top(spec.strip(), "|") if spec.strip() else []:
    terms = [t.strip() for t in _split_top(stage, "/")]
    if not all(terms):
      raise UserError(f"empty stage in transform spec {spec!r}; {valid_ops()}")
    stages.append(compose.random_choice(*(_parse_term(t) for t in terms)))
  return jax.jit(compose.sequential(*stages))


def rule_images(key: jax.Array, image: jax.Array, spec: str, num: int) -> jax.Array:
  """`num` random variants [num,H,W,C] of one image [H,W,C] in [-1, 1] under the spec's ops."""
  op = parse_spec(spec)
  images = jnp.broadcast_to(jnp.asarray(image, jnp.float32), (num,) + tuple(image.shape))
  return op(key, images)


def noise_images(key: jax.Array, num: int, size: int, channels: int, spec: str = "") -> jax.Array:
  """New images [num,size,size,channels] in [-1, 1] from a key alone: textures, palettes, then spec ops."""
  op = parse_spec(spec)
  k_texture, k_ops = jax.random.split(key)
  images, _ = noise.random_textures(k_texture, num, size, size, channels)
  return op(k_ops, images)
