"""Shipped models: exports checked first and written as a pair, no machine paths, a reference a user
has, and new runs that start from an exported model's weights."""

import json
import os
import re

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import checkpoints, pretrained, runs, train, trainers
from aigc_jax.errors import UserError
from aigc_jax.evaluation import references, scoring
from aigc_jax.trainers import diffusion
from tests.test_checkpoints import make_run
from tests.test_train import config_file, quickstart
from tests.trainers.test_diffusion import tiny_config

MACHINE_PATH = re.compile(r"(/tmp/|/work/|/home/|\.\./shared|\.gpu\b)")


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
  """A quickstart run at step 5 whose config names folders of the machine that trained it."""
  workdir = str(tmp_path_factory.mktemp("gan"))
  config = quickstart()
  config.data.manual_dir, config.data.data_dir = "/machine/mnist", "/machine/tfds"
  return workdir, make_run(workdir, config, [5])


def test_export_writes_the_pair_without_machine_paths(gan_run, tmp_path):
  config_path, weights_path = pretrained.export(gan_run[0], "tiny", str(tmp_path))
  stored = json.loads(open(config_path).read())
  assert stored["data"]["manual_dir"] is None and stored["data"]["data_dir"] is None
  assert stored["model"]["width"] == quickstart().model.width
  weights = flax.serialization.msgpack_restore(open(weights_path, "rb").read())
  expected = jax.tree.map(lambda x: x + 5, gan_run[1].g_params)  # make_run's step-5 parameters
  for a, b in zip(jax.tree.leaves(weights["g_params"]), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(tmp_path)) == ["tiny.json", "tiny.msgpack"]


def test_export_checks_first_and_never_overwrites_by_default(gan_run, tmp_path):
  with pytest.raises(UserError, match="folder .* does not exist"):
    pretrained.export(gan_run[0], "tiny", str(tmp_path / "missing"))
  with pytest.raises(UserError, match="--name='../tiny' is not valid"):
    pretrained.export(gan_run[0], "../tiny", str(tmp_path))
  (tmp_path / "tiny.json").write_text("keep me")
  with pytest.raises(UserError, match=r"tiny.json' exists: pass --overwrite to replace it"):
    pretrained.export(gan_run[0], "tiny", str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["tiny.json"] and (tmp_path / "tiny.json").read_text() == "keep me"
  pretrained.export(gan_run[0], "tiny", str(tmp_path), overwrite=True)
  assert json.loads((tmp_path / "tiny.json").read_text())["model"]["family"] == "gan"
  # A run that does not generate is refused from its config alone, before a checkpoint is read.
  classifier = quickstart()
  classifier.model.family, classifier.model.name = "classifier", "lenet"
  checkpoints.write_config(str(tmp_path / "lenet"), classifier)
  with pytest.raises(UserError, match="classifier models cannot generate images"):
    pretrained.export(str(tmp_path / "lenet"), "lenet", str(tmp_path))
  # The CLI's default folder is the current one, not the package's shipped models.
  from aigc_jax.pretrained import __main__ as cli  # noqa: F401 -- defines the flags
  from absl import flags
  assert flags.FLAGS["directory"].default == "."


@pytest.mark.parametrize("name", pretrained.names())
def test_shipped_models_carry_no_machine_paths(name):
  config_text = open(os.path.join(pretrained.DIR, f"{name}.json")).read()
  card = open(os.path.join(pretrained.DIR, f"{name}.md")).read()
  assert not MACHINE_PATH.search(config_text) and not MACHINE_PATH.search(card), name
  stored = json.loads(config_text)
  assert stored["data"]["manual_dir"] is None and stored["data"]["data_dir"] is None
  assert "manual_dir=/path/to/mnist" in card


def card_config_flags(card: str) -> dict[str, str]:
  """The --config.KEY=VALUE flags of the card's last `python -m aigc_jax.train` command."""
  commands = re.findall(r"python -m aigc_jax\.train (?:[^\n]*\\\n)*[^\n]*", card)
  assert commands, "the card gives no training command"
  return dict(re.findall(r"--config\.([\w.]+)=(\S+)", commands[-1]))


# dcgan_mnist was trained by a benchmark script on a GPU; its card's command is the CPU equivalent.
@pytest.mark.parametrize("name", [n for n in pretrained.names() if n != "dcgan_mnist"])
def test_a_shipped_config_is_its_config_file_with_the_cards_flags(name):
  import ml_collections
  from aigc_jax import config as config_lib
  config = config_lib.complete(config_file(name))
  card = open(os.path.join(pretrained.DIR, f"{name}.md")).read()
  for key, value in card_config_flags(card).items():
    section, field = key.split(".")
    current = config[section][field]
    config[section][field] = value if current is None else type(current)(value)
  with open(os.path.join(pretrained.DIR, f"{name}.json")) as f:
    shipped = config_lib.complete(ml_collections.ConfigDict(json.load(f)))
  assert pretrained.portable_config(config).to_json(sort_keys=True) == shipped.to_json(sort_keys=True)


def test_a_shipped_model_is_scored_against_tfds_mnist_unless_told_otherwise(tmp_path, monkeypatch):
  asked = []

  def unavailable(extractor, data_config, num=None, cache_dir=None):
    asked.append((data_config.dataset, data_config.split, data_config.manual_dir))
    raise UserError("dataset 'mnist' is not prepared in '/x' and could not be downloaded (ConnectionError)")

  monkeypatch.setattr(references, "reference_summary", unavailable)
  with pytest.raises(UserError) as e:
    scoring.evaluate_run(str(tmp_path), model="cgan_mnist", num_samples=10, extractor="digits",
                         progress=False)
  assert asked == [("mnist", "test", None)]
  assert str(e.value).endswith("; --model=cgan_mnist is scored against mnist:test unless given "
                               "--manual_dir=/path/to/mnist (MNIST's IDX files) or --reference=DATASET:SPLIT")


def _diffusion_export(tmp_path, **overrides):
  """An exported tiny diffusion model (EMA weights of another init, shifted by 5); returns (config, NAME.msgpack path)."""
  config = tiny_config(num_classes=0)
  config.update_from_flattened_dict(overrides)
  workdir = str(tmp_path / "source_run")
  state = diffusion.init_state(config, jax.random.key(1))  # not the weights the new run draws itself
  state = state.replace(step=jnp.asarray(5), ema_params=jax.tree.map(lambda x: x + 5, state.ema_params))
  manager = checkpoints.create_manager(workdir, config)
  checkpoints.save(manager, 5, state, trainers.base_keys(config.seed)["step"])
  manager.close()
  checkpoints.write_config(workdir, config)
  return config, pretrained.export(workdir, "source", str(tmp_path))[1]


def test_a_new_run_starts_from_an_exported_models_weights_and_resumes_without_them(tmp_path):
  config, source = _diffusion_export(tmp_path)
  weights = flax.serialization.msgpack_restore(open(source, "rb").read())["ema_params"]
  config.train.init_from = source
  config.diffusion.lr_warmup_steps = 10  # step 0's learning rate is 0: one step leaves the weights as they start
  config.train.num_steps = config.train.checkpoint_every = config.train.log_every = 1
  workdir = str(tmp_path / "fine_tuned")
  state = jax.device_get(train.train_and_evaluate(config, workdir))
  assert int(state.step) == 1
  for got, want, ema_params in zip(jax.tree.leaves(flax.serialization.to_state_dict(state.params)),
                                   jax.tree.leaves(weights), jax.tree.leaves(state.ema_params), strict=True):
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(ema_params, want, rtol=1e-6)  # beta * w + (1 - beta) * w, rounded
  assert any(np.abs(m).max() > 0 for m in jax.tree.leaves(state.opt_state))  # Adam's moments start afresh, then move
  assert f"starting from the weights of {source}" in open(os.path.join(workdir, "train.log")).read()
  # Resuming needs only the run's own checkpoint, not the model it started from.
  os.remove(source)
  config.train.num_steps = 2
  assert int(train.train_and_evaluate(config, workdir).step) == 2
  assert runs.load_run(workdir)[0].train.init_from == source


def test_a_model_that_cannot_start_the_run_is_one_line_before_anything_is_written(gan_run, tmp_path):
  config, source = _diffusion_export(tmp_path)
  gan_source = pretrained.export(gan_run[0], "gan", str(tmp_path))[1]
  wider = tiny_config(num_classes=0)
  wider.model.width = 16
  cases = [(config, "no_such_model", "is neither a shipped model .* nor a path to an exported NAME.msgpack"),
           (config, str(tmp_path / "missing.msgpack"), r"missing.json does not exist"),
           (config, gan_source, "is a gan model; this config trains a diffusion one"),
           (wider, source, r"does not fit this config \(ema_params/.* has shape .* in .*source.msgpack, .* in this config\)")]
  for target, init_from, message in cases:
    target.train.init_from = init_from
    workdir = tmp_path / "never_written"
    with pytest.raises(UserError, match=message):
      train.train_and_evaluate(target, str(workdir))
    assert not (workdir / "config.json").exists()
  (tmp_path / "broken.json").write_text("{")
  (tmp_path / "broken.msgpack").write_bytes(b"")
  config.train.init_from = str(tmp_path / "broken.msgpack")
  with pytest.raises(UserError, match="is not a readable exported model"):
    pretrained.initial_weights(config)
