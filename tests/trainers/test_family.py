"""A family defined here, outside the package, trains, samples, evaluates and ships through the
same library entry points the CLIs use: a new family is new code only (`pytest -k family`)."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image

from aigc_jax import config as config_lib, generation, pretrained, runs, sample, train, trainers
from aigc_jax.errors import UserError
from aigc_jax.evaluation import scoring


@flax.struct.dataclass
class ConstantState:
  step: jax.Array
  image: jax.Array      # the one image it learns: [H, W, C]
  opt_state: object


def _defaults():
  section = ml_collections.ConfigDict()
  section.jitter = 0.0  # how far each seed's image strays from the learnt one
  return section


def _validate(config):
  if config.constant.jitter < 0:
    config_lib.fail("constant.jitter", config.constant.jitter, "must be >= 0")


def _init_state(config, key):
  del key
  size, channels = config.data.image_size, config.data.channels
  image = jnp.zeros((size, size, channels), jnp.float32)
  return ConstantState(step=jnp.zeros((), jnp.int32), image=image,
                       opt_state=optax.sgd(config.train.learning_rate).init(image))


def _make_train_step(config):
  opt = optax.sgd(config.train.learning_rate)

  def step(state, batch, key):
    del key
    loss_fn = lambda image: jnp.mean(jnp.sum((batch["image"] - image[None]) ** 2, axis=(1, 2, 3)))
    loss, grads = jax.value_and_grad(loss_fn)(state.image)
    updates, opt_state = opt.update(grads, state.opt_state)
    return state.replace(step=state.step + 1, image=optax.apply_updates(state.image, updates),
                         opt_state=opt_state), {"loss": loss}

  return step


def _noise(config, key, num):
  return jax.random.normal(key, (num, 1))


def _generate(config, state, noise, labels, keys, options):
  del labels, keys
  scale = options.get("brightness", 1.0)
  jitter = config.constant.jitter * noise[:, :, None, None]
  return jnp.clip(scale * state.image[None] + jitter, -1.0, 1.0)


CONSTANT = trainers.Family(
    name="constant", model_names=("mean_image",), section="constant", defaults=_defaults,
    validate=_validate, init_state=_init_state, make_train_step=_make_train_step, noise=_noise,
    generate=_generate,
    sample_options=(trainers.SampleOption("brightness", 1.0, "Scales the learnt image."),),
    sampling_fields=lambda config, state: {"image": state.image},
    with_sampling_fields=lambda config, state, fields: state.replace(image=jnp.asarray(fields["image"])))


@pytest.fixture(scope="module")
def constant_family():
  trainers.register(CONSTANT)
  yield CONSTANT
  trainers.unregister(CONSTANT.name)


def _config(**overrides):
  config = config_lib.base_config()
  config.model.family, config.model.name = "constant", "mean_image"
  config.data.image_size = 8
  config.train.batch_size, config.train.num_steps, config.train.learning_rate = 64, 40, 0.05
  config.train.log_every = config.train.checkpoint_every = config.train.sample_every = 20
  config.train.num_sample_images = 4
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def constant_run(constant_family, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("constant"))
  config = _config(**{"constant.jitter": 0.1})
  config.data.data_dir = os.path.join(workdir, "tfds")
  train.train_and_evaluate(config, workdir)
  return workdir


def test_family_config_section_is_in_the_base_config_and_validated(constant_family):
  assert config_lib.base_config().constant.jitter == 0.0
  config_lib.validate(_config())
  with pytest.raises(UserError, match=r"config\.constant\.jitter=-1\.0 is not valid: must be >= 0"):
    config_lib.validate(_config(**{"constant.jitter": -1.0}))
  with pytest.raises(UserError, match="model.family='constant' allows mean_image"):
    config_lib.validate(_config(**{"model.name": "dcgan"}))


def test_family_trains_to_the_mean_image(constant_run):
  from aigc_jax import data
  config, state, step = runs.load_run(constant_run)
  assert step == 40 and config.model.family == "constant"
  # SGD on the squared error moves to the mean image (0.9x the error a step, averaging ~10 batches).
  reals = data.load_images(config.data, config.data.split, data.dataset_size(config.data, "train"))
  np.testing.assert_allclose(state.image, reals.mean(axis=0), atol=0.1)
  assert os.path.exists(os.path.join(constant_run, "samples", "step_00000040.png"))


def test_family_samples_a_grid_from_seeds_with_its_own_option(constant_run, tmp_path):
  config, state, _ = runs.load_run(constant_run)
  both = sample.generate_grid(config, state, [3, 9])
  alone = sample.generate_grid(config, state, [9])
  np.testing.assert_allclose(both[1], alone[0], atol=1e-6)  # a seed is the same image in any grid
  assert not np.allclose(both[0], both[1])
  out = str(tmp_path / "grid.png")
  sample.run("generate", out, workdir=constant_run, seeds="0-3", brightness=0.5)
  assert Image.open(out).size[0] >= 128
  dim = generation.from_seeds(config, state, [0], options={"brightness": 0.5})
  np.testing.assert_allclose(dim, generation.from_seeds(config, state.replace(image=0.5 * state.image), [0]),
                             atol=1e-6)
  with pytest.raises(UserError, match="--trunc does not apply to constant models"):
    sample.run("generate", out, workdir=constant_run, seeds="0", trunc=0.5)
  with pytest.raises(UserError, match="constant models cannot reconstruct; families that can: vae"):
    sample.run("reconstruct", out, workdir=constant_run)


def test_family_is_evaluated_and_shipped_like_the_others(constant_run, tmp_path):
  result = scoring.evaluate_run(constant_run, num_samples=100, extractor="digits", progress=False)
  with open(os.path.join(constant_run, "metrics.json")) as f:
    assert json.load(f) == result
  assert np.isfinite(result["metrics"]["fid"]) and result["metrics"]["fid"] > 0
  assert result["sampling"] == {"brightness": 1.0}  # the option's default, recorded
  # One image, jittered: little diversity next to the reference set.
  assert result["metrics"]["recall"] < 0.5

  config, state, _ = runs.load_run(constant_run)
  pretrained.export(constant_run, "constant_digits", str(tmp_path))
  shipped_config, shipped = pretrained.load("constant_digits", str(tmp_path))
  assert shipped_config.constant.jitter == 0.1
  np.testing.assert_array_equal(generation.from_seeds(shipped_config, shipped, [0, 1, 2]),
                                generation.from_seeds(config, state, [0, 1, 2]))
