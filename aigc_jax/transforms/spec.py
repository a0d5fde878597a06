"""Spec strings: a pipeline of registered ops, e.g. "rotate(-15,15)|translate(0.1)|gaussian_noise(0.05)".

Stages are separated by "|" and run in order; "a/b" picks a or b per example;
every op takes p= (apply to each example with probability p). Geometric ops
also take order=, mode= and cval= (default -1, black). Arguments are
positional or keyword literals; bare words are strings (mode=reflect).
Ranges are (lo, hi) drawn per example; translate(x, y) is a fraction of the
size (y < 0: same as x); hflip/vflip always flip unless given p (hflip(p=0.5)).
A spec holds at most 1000 characters and 16 ops, and every numeric argument a finite range that
bounds what the program costs; anything else is one UserError, which names the range.
"""

from __future__ import annotations

import ast
import functools
import inspect
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

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


# Limits on a spec as a whole: its length, its ops (each compiles into the one jitted program, and
# every alternative of a stage runs on the whole batch) and its parentheses (one level: op(args)).
MAX_SPEC_LENGTH = 1000
MAX_SPEC_OPS = 16
_PIXELS = 4096.0  # bound on shifts and noise cells in pixels: wider than any image read here

# (lo, hi, unit) of every numeric argument: finite, and what images in [-1, 1] and memory allow.
_RANGES: dict[str, dict[str, tuple[float, float, str]]] = {
    "rotate": {"lo": (-360, 360, "degrees"), "hi": (-360, 360, "degrees")},
    "scale": {"lo": (0.01, 100, "a scale factor"), "hi": (0.01, 100, "a scale factor")},
    "translate": {"x": (0, 1, "a fraction of the size"), "y": (-1, 1, "a fraction of the size; < 0: as x")},
    "shear": {"lo": (-89, 89, "degrees; 90 is infinite"), "hi": (-89, 89, "degrees; 90 is infinite")},
    "perspective": {"distortion": (0, 1, "a fraction of the size")},
    "elastic": {"alpha": (0, _PIXELS, "pixels"),
                # its 6 sigma + 1 kernel taps are unrolled into the program
                "sigma": (0.1, 32, "pixels")},
    "fbm_warp": {"strength": (0, _PIXELS, "pixels"), "octaves": (1, 16, ""),
                 "scale": (1, _PIXELS, "pixels")},
    "crop": {"lo": (1e-4, 1, "an area fraction"), "hi": (1e-4, 1, "an area fraction")},
    "gaussian_noise": {"std": (0, 10, "images span [-1, 1]")},
    "uniform_noise": {"amount": (0, 10, "images span [-1, 1]")},
    "speckle": {"std": (0, 10, "of the intensity")},
    "salt_pepper": {"amount": (0, 1, "a fraction of the pixels")},
    "blend": {"alpha": (0, 1, "a mixing weight")},
}
_SHARED_RANGES = {"cval": (-1, 1, "images span [-1, 1]"), "p": (0, 1, "a probability")}


def _shown(text: str) -> str:
  return repr(text if len(text) <= 80 else text[:77] + "...")


def _fail(term: str, why: str) -> UserError:
  return UserError(f"bad transform {_shown(term)}: {why}; {valid_ops()}")


def _literal(node: ast.AST, term: str):
  """A number with at most one sign, a quoted string, True/False or a bare word; nothing else."""
  if isinstance(node, ast.Name):
    return node.id
  signed = isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub))
  value = node.operand if signed else node
  if isinstance(value, ast.Constant) and type(value.value) in (int, float):
    return -value.value if signed and isinstance(node.op, ast.USub) else value.value
  if not signed and isinstance(value, ast.Constant) and isinstance(value.value, (bool, str)):
    return value.value
  raise _fail(term, f"argument {_shown(ast.get_source_segment(term, node) or '?')} is not a number or word")


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


def _check_range(term: str, name: str, value, allowed: tuple[float, float, str]) -> None:
  lo, hi, unit = allowed
  if not lo <= value <= hi:  # Also false for inf and nan; compares huge ints without a float overflow.
    raise _fail(term, f"{name}={value!r} must be in [{lo:g}, {hi:g}]" + (f" ({unit})" if unit else ""))


def _check_ranges(term: str, op: str, arguments: dict) -> None:
  for name, value in arguments.items():
    allowed = _RANGES.get(op, {}).get(name, _SHARED_RANGES.get(name))
    if allowed is not None:
      _check_range(term, name, value, allowed)
  if "lo" in arguments and "hi" in arguments and arguments["lo"] > arguments["hi"]:
    raise _fail(term, f"the range lo={arguments['lo']!r} > hi={arguments['hi']!r}")
  if op == "fbm_warp" and arguments["scale"] / 2 ** (arguments["octaves"] - 1) < 0.5:
    most = 1 + int(np.log2(2 * arguments["scale"]))
    raise _fail(term, f"octaves={arguments['octaves']} with scale={arguments['scale']!r} makes cells finer than "
                      f"half a pixel, which only cost memory: at most {most} octaves at this scale")


def _parse_term(term: str) -> compose.Op:
  try:
    with warnings.catch_warnings():  # e.g. "SyntaxWarning: 'int' object is not callable"
      warnings.simplefilter("ignore")
      node = ast.parse(term, mode="eval").body
  except (SyntaxError, ValueError):  # ValueError: a null byte
    raise _fail(term, "cannot parse it") from None
  call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
  if not isinstance(call.func, ast.Name) or call.func.id not in OPS:
    raise _fail(term, "unknown op")
  factory = OPS[call.func.id]
  args = [_literal(a, term) for a in call.args]
  if any(kw.arg is None for kw in call.keywords):
    raise _fail(term, "name every keyword argument")
  kwargs = {kw.arg: _literal(kw.value, term) for kw in call.keywords}
  p = kwargs.pop("p", 1.0)
  if isinstance(p, bool) or not isinstance(p, (int, float)):
    raise _fail(term, f"p={p!r} should be a float")
  _check_range(term, "p", p, _SHARED_RANGES["p"])
  signature = inspect.signature(factory)
  try:
    bound = signature.bind(*args, **kwargs)
  except TypeError as e:
    raise _fail(term, str(e)) from None
  for name, value in bound.arguments.items():
    _check_value(term, name, value, signature.parameters[name].default)
  bound.apply_defaults()  # The factories' own defaults may differ from the shared ones shown (cval=-1).
  _check_ranges(term, call.func.id, bound.arguments)
  for name, value in bound.arguments.items():  # An int where a float goes: a weak-typed float to jit.
    if isinstance(signature.parameters[name].default, float):
      bound.arguments[name] = float(value)
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


def _check_shape(spec: str) -> None:
  """Limits on the spec as a whole, checked before any part of it is parsed."""
  if len(spec) > MAX_SPEC_LENGTH:
    raise UserError(f"transform spec of {len(spec)} characters: at most {MAX_SPEC_LENGTH}; {valid_ops()}")
  depth = 0
  for ch in spec:
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth > 1:
      raise UserError(f"transform spec {_shown(spec)} nests parentheses: write op(arguments), each a "
                      f"number or a word; {valid_ops()}")


@functools.lru_cache(maxsize=64)  # Same spec, same jitted op: no recompiles.
def parse_spec(spec: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Parses a spec string into one jitted op `(key, images) -> images`; raises UserError if invalid."""
  _check_shape(spec)
  stages = [[t.strip() for t in _split_top(stage, "/")] for stage in _split_top(spec.strip(), "|")
            ] if spec.strip() else []
  if any(not all(terms) for terms in stages):
    raise UserError(f"empty stage in transform spec {_shown(spec)}; {valid_ops()}")
  num_ops = sum(map(len, stages))
  if num_ops > MAX_SPEC_OPS:
    raise UserError(f"transform spec {_shown(spec)} has {num_ops} ops: at most {MAX_SPEC_OPS}; {valid_ops()}")
  return jax.jit(compose.sequential(*(compose.random_choice(*map(_parse_term, terms)) for terms in stages)))


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
