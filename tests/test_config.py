"""Config validation: each bad value is named with what is allowed."""

import pytest

from aigc_jax import config as config_lib
from aigc_jax.errors import UserError


def _config(**overrides):
  c = config_lib.base_config()
  for key, value in overrides.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


def test_base_config_is_valid():
  config_lib.validate(config_lib.base_config(), num_devices=8)


@pytest.mark.parametrize("overrides, message", [
    ({"model__name": "stylegan9"}, "model.name='stylegan9'"),
    ({"model__family": "diffusion"}, "model.family"),
    ({"data__dataset": "imagenet"}, "choose one of digits"),
    ({"data__image_size": 48}, "8, 16, 28, 32, 64"),
    ({"train__batch_size": 0}, "train.batch_size=0"),
    ({"train__learning_rate": -1e-3}, "train.learning_rate"),
    ({"gan__loss": "wasserstein"}, "non_saturating"),
    ({"vae__likelihood": "laplace"}, "bernoulli"),
    ({"train__compute_dtype": "float16"}, "bfloat16"),
    ({"train__steps_per_dispatch": 3}, "multiple of train.steps_per_dispatch"),
])
def test_bad_values_name_the_key_and_allowed_values(overrides, message):
  with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
    config_lib.validate(_config(**overrides))


def test_global_batch_must_divide_over_devices():
  with pytest.raises(UserError, match=r"divisible by the device count \(8\)"):
    config_lib.validate(_config(train__batch_size=12), num_devices=8)
