"""Composition combinators, the spec parser and the rule/noise generators."""

import datetime
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from aigc_jax.errors import UserError
from aigc_jax.transforms import compose, geometric, noise, parse_spec, rule_images, noise_images, valid_ops
from aigc_jax.transforms import spec as spec_lib

KEY = jax.random.key(0)


def _images(n=8, h=8, w=9, c=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, h, w, c), minval=-1, maxval=1)


def test_combinators():
  add = lambda key, x: x + 1.0
  double = lambda key, x: x * 2.0
  x = _images()
  np.testing.assert_allclose(compose.sequential(add, double)(KEY, x), (x + 1) * 2, atol=1e-6)
  np.testing.assert_array_equal(compose.sequential()(KEY, x), x)
  np.testing.assert_array_equal(compose.with_probability(add, 0.0)(KEY, x), x)
  half = np.asarray(compose.with_probability(add, 0.5)(jax.random.key(1), jnp.zeros((64, 2, 2, 1))))
  assert set(np.unique(half)) == {0.0, 1.0} and 16 < half[:, 0, 0, 0].sum() < 48
  picked = np.asarray(compose.random_choice(add, double, lambda k, v: v - 5.0)(KEY, jnp.ones((64, 2, 2, 1))))
  assert set(np.unique(picked)) == {2.0, -4.0}  # 1 + 1 and 1 * 2 coincide; 1 - 5 is the third op.
  assert np.all(picked == picked[:, :1, :1])


def test_spec_ops_match_the_functions_they_name():
  x = _images()
  rot = parse_spec("rotate(20, 20, mode=edge, order=3)")(KEY, x)
  ref = geometric.warp_affine(x, geometric.rotation_matrix(20.0, (4.0, 3.5)), order=3, mode="edge")
  np.testing.assert_allclose(rot, ref, atol=1e-5)
  shifted = parse_spec("translate(0)|shear(0,0)")(KEY, x)
  np.testing.assert_allclose(shifted, x, atol=1e-5)
  np.testing.assert_array_equal(parse_spec("hflip")(KEY, x), x[:, :, ::-1])
  np.testing.assert_array_equal(parse_spec("")(KEY, x), x)
  noisy = parse_spec("gaussian_noise(std=0.0)")(KEY, x)
  np.testing.assert_allclose(noisy, x, atol=1e-6)
  k = jax.random.split(KEY, 1)[0]
  np.testing.assert_array_equal(parse_spec("salt_pepper(0.3)")(KEY, x), noise.salt_pepper(k, x, 0.3))


def test_spec_probability_and_alternatives():
  x = _images(n=32, seed=1)
  flipped = np.asarray(parse_spec("hflip(p=0.5)")(KEY, x))
  same = [np.allclose(f, o) for f, o in zip(flipped, np.asarray(x))]
  assert 4 < sum(same) < 28 and all(s or np.allclose(f, o[:, ::-1]) for s, f, o in zip(same, flipped, x))
  either = np.asarray(parse_spec("hflip/vflip")(KEY, x))
  is_h = [np.allclose(f, o[:, ::-1]) for f, o in zip(either, np.asarray(x))]
  is_v = [np.allclose(f, o[::-1]) for f, o in zip(either, np.asarray(x))]
  assert all(a or b for a, b in zip(is_h, is_v)) and any(is_h) and any(is_v)


def test_spec_randomness_follows_the_key():
  spec = "rotate(-30,30)|fbm_warp(strength=2,octaves=1)|gaussian_noise(0.05)"
  op = parse_spec(spec)
  x = jnp.broadcast_to(_images(n=1), (4, 8, 9, 3))
  a = np.asarray(op(KEY, x))
  np.testing.assert_array_equal(a, op(KEY, x))
  assert not np.allclose(a, op(jax.random.key(1), x))
  assert not np.allclose(a[0], a[1])


@pytest.mark.parametrize("spec, words", [
    ("rotat(1)", "unknown op"), ("rotate(1,2,3)", "too many"), ("rotate(mode=foo)", "mode='foo'"),
    ("rotate(order=2)", "order=2"), ("gaussian_noise(std=a)", "should be a float"), ("hflip(p=2)", "p=2"),
    ("rotate(", "cannot parse"), ("rotate(1)||hflip", "empty stage"), ("fbm_warp(octaves=2.5)", "should be a int"),
    ("blend(texture=bricks)", "texture='bricks'"), ("rotate({1,[2]})", "not a number or word"),
    ("fbm_warp(octaves=0)", "octaves=0 must be in [1, 16]"), ("fbm_warp(scale=0)", "scale=0 must be in [1, 4096]"),
    ("elastic(sigma=0)", "sigma=0 must be in [0.1, 32]"), ("crop(0,0)", "lo=0 must be in [0.0001, 1]"),
    ("rotate(lo=20)", "lo=20 > hi=15.0"),
    # Hostile input: each one line, before anything compiles.
    ("rotate(" + "-" * 1000, "at most 1000"), ("rotate(" + "-" * 20000, "20007 characters"),
    ("rotate(" + "-" * 900 + "1)", "is not a number or word"), ("rotate(((1)))", "nests parentheses"),
    ("|".join(["hflip"] * 17), "17 ops: at most 16"), ("/".join(["hflip"] * 17), "17 ops"),
    ("rotate(-3000000000,3000000000)", "lo=-3000000000 must be in [-360, 360] (degrees)"),
    ("gaussian_noise(3000000000)", "std=3000000000 must be in [0, 10]"),
    ("elastic(sigma=1e300)", "sigma=1e+300 must be in [0.1, 32]"), ("elastic(sigma=1e999)", "sigma=inf"),
    ("elastic(sigma=1e4)", "sigma=10000.0 must be in"), ("fbm_warp(octaves=2000)", "octaves=2000 must be in [1, 16]"),
    ("fbm_warp(scale=1e-30)", "scale=1e-30 must be in [1, 4096]"), ("rotate(-1e999,1e999)", "lo=-inf must be in"),
    ("fbm_warp(octaves=7, scale=16)", "finer than half a pixel, which only cost memory: at most 6 octaves"),
    ("shear(-90,90)", "90 is infinite"), ("scale(0,1)", "lo=0 must be in [0.01, 100]"),
    ("rotate(cval=2)", "cval=2 must be in [-1, 1]"), ("hflip(p=True)", "p=True should be a float"),
    ("rotate(-True)", "'-True' is not a number"), ("rotate(**{})", "name every keyword"),
    ("rotate(1, 2\x00)", "cannot parse"), ("rotate(" + "9" * 900 + ")", "must be in [-360, 360]")])
def test_bad_specs_get_one_line_listing_the_ops(spec, words):
  with pytest.raises(UserError) as e:
    parse_spec(spec)
  message = str(e.value)
  assert words in message and "valid ops:" in message and "rotate(lo=-15.0, hi=15.0" in message
  assert "\n" not in message and len(message) < 2000  # a long spec is shown cut short
  assert "gaussian_noise(std=0.05)" in valid_ops()


def test_spec_defaults_are_the_documented_ones():
  x = jnp.ones((2, 16, 16, 1))
  # Geometric ops fill with cval=-1 (black) unless told otherwise.
  assert float(parse_spec("rotate(45,45)")(KEY, x)[0, 0, 0, 0]) == -1.0
  assert float(parse_spec("rotate(45,45,cval=0.5)")(KEY, x)[0, 0, 0, 0]) == 0.5
  # A pixel op without arguments takes its function's default.
  np.testing.assert_array_equal(parse_spec("gaussian_noise")(KEY, x), parse_spec("gaussian_noise(0.05)")(KEY, x))


def test_rule_images_and_noise_images():
  image = _images(n=1, h=10, w=12, c=3)[0]
  out = rule_images(KEY, image, "rotate(-20,20)|gaussian_noise(0.02)", 5)
  assert out.shape == (5, 10, 12, 3) and out.dtype == jnp.float32
  assert float(jnp.abs(out).max()) <= 1.0 and not np.allclose(out[0], out[1])
  np.testing.assert_allclose(rule_images(KEY, image, "", 2), jnp.stack([image, image]))
  for c in (1, 3):
    imgs = noise_images(KEY, 4, 16, c, "hflip(p=0.5)")
    assert imgs.shape == (4, 16, 16, c) and float(jnp.abs(imgs).max()) <= 1.0 + 1e-5
    np.testing.assert_array_equal(imgs, noise_images(KEY, 4, 16, c, "hflip(p=0.5)"))
    assert not np.allclose(imgs, noise_images(jax.random.key(1), 4, 16, c, "hflip(p=0.5)"))
  with pytest.raises(UserError):
    noise_images(KEY, 2, 8, 3, "nope")


# Valid specs whose mutations the fuzz test tries, covering every op and the shared arguments.
_VALID_SPECS = ("rotate(-15,15)|gaussian_noise(0.05)", "scale(0.9, 1.1, order=3)|shear(-10,10)/hflip",
                "translate(0.1, y=0.2, mode=wrap)|salt_pepper(0.1, p=0.5)", "elastic(alpha=2, sigma=3)|vflip",
                "fbm_warp(strength=4, octaves=3, scale=16, cval=0.5)", "crop(0.5, 1)|speckle(0.1)",
                "perspective(0.3, mode=edge)|uniform_noise(0.1)", "blend(alpha=0.3, texture=marble)")
# Pieces that probe the limits: signs, brackets, separators, huge, tiny and non-finite numbers, names.
_PIECES = ("-", "--", "(", ")", ",", "|", "/", "=", " ", "1e999", "-1e999", "1e308", "3000000000", "1e-30", "0",
           "-0.0", "2**63", "nan", "True", "p=", "sigma=", "octaves=", "scale=", "order=", "mode=", "'x'", "\x00")


@st.composite
def _mutated_specs(draw) -> str:
  spec = draw(st.sampled_from(_VALID_SPECS))
  for _ in range(draw(st.integers(1, 4))):
    i = draw(st.integers(0, len(spec)))
    piece = draw(st.one_of(st.sampled_from(_PIECES), st.text(max_size=3), st.integers().map(str),
                           st.floats().map(repr)))
    j = i + draw(st.integers(0, 3))  # replace 0 to 3 characters with the piece
    spec = spec[:i] + piece + spec[j:]
  return spec


@st.composite
def _in_range_specs(draw) -> str:
  """One to three ops with arguments drawn from their allowed ranges, endpoints included."""
  terms = []
  for _ in range(draw(st.integers(1, 3))):
    op = draw(st.sampled_from(sorted(spec_lib.OPS)))
    arguments = []
    for name, parameter in inspect.signature(spec_lib.OPS[op]).parameters.items():
      allowed = spec_lib._RANGES.get(op, {}).get(name, spec_lib._SHARED_RANGES.get(name))
      if name in spec_lib._CHOICES and draw(st.booleans()):
        arguments.append(f"{name}={draw(st.sampled_from(spec_lib._CHOICES[name]))!r}")
      elif allowed is not None and draw(st.booleans()):
        lo, hi, _ = allowed
        number = (st.integers(int(lo), int(hi)) if isinstance(parameter.default, int)
                  else st.sampled_from([float(lo), float(hi)]) | st.floats(lo, hi))
        arguments.append(f"{name}={draw(number)!r}")
    if draw(st.booleans()):
      arguments.append(f"p={draw(st.floats(0, 1))!r}")
    terms.append(f"{op}({', '.join(arguments)})")
  return "|".join(terms)


@settings(max_examples=12, deadline=datetime.timedelta(seconds=120), database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.one_of(st.text(max_size=40), _mutated_specs(), _in_range_specs()),
       shape=st.sampled_from([(2, 9, 8, 3), (2, 1, 1, 1)]))
def test_any_spec_either_runs_to_finite_images_or_is_one_user_error_line(spec, shape):
  try:
    op = parse_spec(spec)
  except UserError as e:
    assert "\n" not in str(e)
    return
  images = jax.random.uniform(jax.random.key(0), shape, minval=-1, maxval=1)
  out = np.asarray(op(KEY, images))
  assert out.shape == shape and np.isfinite(out).all()
