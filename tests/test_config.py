"""Config validation: each bad value is named with what is allowed."""

import re

import pytest

from aigc_jax import config as config_lib
from aigc_jax.errors import UserError


def _config(**overrides):
  c = config_lib.base_config()
  c.update_from_flattened_dict({key.replace("__", "."): value for key, value in overrides.items()})
  return c


def test_base_config_is_valid():
  config_lib.validate(config_lib.base_config(), num_devices=8)


@pytest.mark.parametrize("overrides, message", [
    ({"model__name": "stylegan9"}, "model.name='stylegan9'"),
    ({"model__family": "stylegan"}, "model.family='stylegan' is not valid: choose one of"),
    ({"data__dataset": "imagenet"}, "choose one of digits"),
    ({"data__image_size": 48}, "8, 16, 28, 32, 64, 128, 256"),
    ({"data__image_size": 512}, "powers of two from 8 to 256, and 28"),
    ({"train__batch_size": 0}, "train.batch_size=0"),
    ({"train__learning_rate": -1e-3}, "train.learning_rate"),
    ({"gan__loss": "wasserstein"}, "non_saturating"),
    ({"gan__ada_pipeline": "bgcf"}, "gan.ada_pipeline='bgcf' is not valid: choose one of blit, geom, color, bg, bgc"),
    ({"model__family": "vae", "model__name": "conv_vae", "vae__likelihood": "laplace"}, "bernoulli"),
    ({"train__compute_dtype": "float16"}, "bfloat16"),
    ({"train__steps_per_dispatch": 3}, "multiple of train.steps_per_dispatch"),
    ({"data__dataset": "synthetic", "data__on_device": True}, "data.on_device=True is not valid: needs a TFDS"),
])
def test_bad_values_name_the_key_and_allowed_values(overrides, message):
  with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
    config_lib.validate(_config(**overrides))


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 63])
def test_seed_must_be_one_jax_random_key_keeps_whole(seed):
  config = config_lib.base_config()
  config.seed = seed
  with pytest.raises(UserError, match=rf"config\.seed={seed} is not valid: a seed is an integer from 0 to 4294967295"):
    config_lib.validate(config)


@pytest.mark.parametrize("size", [8, 16, 28, 32, 64, 128, 256])
def test_every_model_size_is_valid(size):
  config_lib.validate(_config(data__image_size=size))


def test_global_batch_must_divide_over_devices():
  with pytest.raises(UserError, match=r"divisible by the device count \(8\)"):
    config_lib.validate(_config(train__batch_size=12), num_devices=8)


@pytest.mark.parametrize("overrides, num_devices, message", [
    ({"train__grad_accum_steps": 0}, None, "config.train.grad_accum_steps=0 is not valid: must be a positive integer"),
    ({"train__grad_accum_steps": 3}, None, "config.train.grad_accum_steps=3 is not valid: must divide train.batch_size (64)"),
    ({"train__batch_size": 16, "train__grad_accum_steps": 4}, 8,
     "config.train.grad_accum_steps=4 is not valid: must divide the per-device batch (train.batch_size 16 / 8 devices = 2)"),
    ({"train__fsdp_devices": 0}, None, "config.train.fsdp_devices=0 is not valid: must be a positive integer"),
    ({"train__fsdp_devices": 3}, 8, "config.train.fsdp_devices=3 is not valid: must divide the device count (8)"),
    ({"train__fsdp_min_kib": -1}, None, "config.train.fsdp_min_kib=-1 is not valid: must be a size in KiB, >= 0"),
    ({"model__g_norm": "layer"}, None, "config.model.g_norm='layer' is not valid: choose one of batch, none"),
    ({"model__d_minibatch_std": 16, "train__grad_accum_steps": 8}, None,
     "config.model.d_minibatch_std=16 is not valid: the group size must divide the micro-batch "
     "(train.batch_size 64 / train.grad_accum_steps 8 = 8)"),
])
def test_bad_sharding_and_accumulation_values_are_one_line(overrides, num_devices, message):
  with pytest.raises(UserError) as error:
    config_lib.validate(_config(**overrides), num_devices=num_devices)
  assert str(error.value) == message


def test_sharding_and_accumulation_that_fit_the_devices_are_valid():
  config_lib.validate(_config(train__batch_size=32, train__grad_accum_steps=4, train__fsdp_devices=8),
                      num_devices=8)


@pytest.mark.parametrize("overrides, message", [
    ({"gan__augment": "mixup"}, "gan.augment='mixup'"),
    ({"gan__diffaugment": "translation,rotate"}, "gan.diffaugment"),
    ({"gan__n_critic": 0}, "gan.n_critic=0"),
    ({"gan__r1_every": 0}, "gan.r1_every=0"),
    ({"gan__r1_gamma": -1.0}, "gan.r1_gamma"),
    ({"gan__ema_half_life_images": -5}, "gan.ema_half_life_images"),
    ({"gan__ada_target": 1.5}, "gan.ada_target"),
    ({"gan__loss": "wgan_gp"}, "model.d_norm='batch'"),
    ({"model__d_norm": "layer"}, "spectral"),
    ({"model__d_minibatch_std": -1}, "model.d_minibatch_std=-1"),
    ({"model__d_minibatch_std": 5}, "divide train.batch_size (64)"),
    ({"model__family": "vae", "model__name": "conv_vae", "vae__learn_decoder_std": True}, "vae.learn_decoder_std"),
    ({"model__family": "vae", "model__name": "conv_vae", "vae__kl_warmup_steps": -1}, "vae.kl_warmup_steps"),
    # Labels 0..9 would index past a 5-class embedding: NaN losses, not an error, without this.
    ({"model__num_classes": 5}, "'digits' has 10 classes"),
    ({"model__num_classes": 10, "data__dataset": "celeb_a"}, "'celeb_a' has no class labels"),
])
def test_bad_quality_options_name_the_key(overrides, message):
  with pytest.raises(UserError, match=re.escape(message)):
    config_lib.validate(_config(**overrides))


def test_complete_fills_keys_an_older_run_lacks():
  old = config_lib.base_config()
  del old.gan["augment"]
  old.gan.loss = "hinge"
  full = config_lib.complete(old)
  assert full.gan.augment == "none" and full.gan.loss == "hinge"


def test_class_counts_follow_the_dataset_and_synthetic_source():
  config_lib.validate(_config(model__num_classes=10))
  noise = _config(data__dataset="synthetic", data__synthetic_source="noise", model__num_classes=4)
  config_lib.validate(noise)
  noise.model.num_classes = 3
  with pytest.raises(UserError, match="'synthetic' has 4 classes"):
    config_lib.validate(noise)
