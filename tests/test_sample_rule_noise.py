"""`sample --mode=rule` and `--mode=noise`: rule-based images from an input file or a seed alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from aigc_jax import images, sample, transforms
from aigc_jax.errors import UserError
from tests.test_train import cli

SPEC = "rotate(-30,30)|gaussian_noise(0.05)"


@pytest.fixture()
def photo(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "photo.png"
  Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
  return str(path)


def _tiles(grid_path, num, size, padding=2):
  """Cuts the display grid back into its tiles (undoing the nearest-neighbour upscale)."""
  grid = np.asarray(Image.open(grid_path))
  ncols = int(np.ceil(np.sqrt(num)))
  factor = grid.shape[1] // (ncols * (size + padding) + padding)
  grid = grid[::factor, ::factor]
  return [grid[padding + r * (size + padding):][:size, padding + c * (size + padding):][:, :size]
          for r, c in (divmod(i, ncols) for i in range(num))]


def test_rule_mode_writes_the_transformed_variants_of_the_input(photo, tmp_path):
  out = str(tmp_path / "rule.png")
  sample.run("rule", out, input_path=photo, transform=SPEC, num=4, seed=3)
  expected = images.to_uint8(transforms.rule_images(
      jax.random.key(3), jnp.asarray(images.load_image(photo)), SPEC, 4))
  tiles = _tiles(out, 4, 24)
  for tile, want in zip(tiles, expected):
    np.testing.assert_array_equal(tile, want)
  assert not np.array_equal(tiles[0], tiles[1])  # each variant draws its own rotation


def test_noise_mode_needs_no_input_and_seeds_name_images(tmp_path):
  a, b, c = (str(tmp_path / f"{name}.png") for name in "abc")
  sample.run("noise", a, seed=1, num=4, size=16, channels=3)
  sample.run("noise", b, seed=1, num=4, size=16, channels=3)
  sample.run("noise", c, seed=2, num=4, size=16, channels=3)
  assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
  assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))
  assert _tiles(a, 4, 16)[0].shape == (16, 16, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"transform": "rotate(-30,30)|swirl(3)"}, "bad transform 'swirl"),
    ({"transform": "rotate(lo=abc)"}, "bad transform"),
    ({"input_path": "missing.png"}, "cannot read image"),
    ({"input_path": None}, "--mode=rule needs --input"),
])
def test_rule_mode_user_errors_write_nothing(photo, tmp_path, kwargs, message):
  out = tmp_path / "rule.png"
  out.write_bytes(b"keep me")  # an earlier result must survive a failed run
  args = {"input_path": photo, "transform": SPEC, **kwargs}
  with pytest.raises(UserError, match=message):
    sample.run("rule", str(out), **args)
  assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "--size=0 is not valid: need at least 1"),
    ({"channels": 5}, "--channels=5 is not valid: write 1 .*or 4"),
    ({"channels": 0}, "--channels=0 is not valid"),
    ({"seed": 2 ** 32}, "--seed=4294967296 is not valid: a seed is an integer from 0 to 4294967295"),
    ({"seed": -1}, "--seed=-1 is not valid"),
])
def test_noise_mode_user_errors_write_nothing(tmp_path, kwargs, message):
  out = tmp_path / "noise.png"
  out.write_bytes(b"keep me")
  with pytest.raises(UserError, match=message):
    sample.run("noise", str(out), **{"num": 2, "size": 8, "channels": 3, **kwargs})
  assert out.read_bytes() == b"keep me"


def test_cli_bad_spec_is_one_line_listing_the_valid_ops(photo, tmp_path):
  rc, _, err = cli("aigc_jax.sample", "--mode=rule", f"--input={photo}", "--transform=twirl(2)",
                   f"--out={tmp_path / 'g.png'}")
  last = err.strip().splitlines()[-1]
  assert rc == 2 and "Traceback" not in err
  assert last.startswith("error: bad transform 'twirl(2)'") and "rotate(" in last
  assert not (tmp_path / "g.png").exists()
