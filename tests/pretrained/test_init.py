"""Shipped models: exports checked first and written as a pair, no machine paths, a reference a user has."""

import json
import os
import re

import flax.serialization
import jax
import numpy as np
import pytest

from aigc_jax import checkpoints, pretrained
from aigc_jax.errors import UserError
from aigc_jax.evaluation import references, scoring
from tests.test_checkpoints import make_run
from tests.test_train import config_file, quickstart

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


# The diffusion models' cards train with their config file as it is now; the older models' files
# have since gained keys and budgets their shipped configs predate.
@pytest.mark.parametrize("name", ["edm_mnist", "edm_mnist_cond"])
def test_a_shipped_config_is_its_config_file_with_the_cards_data_flags(name):
  import ml_collections
  from aigc_jax import config as config_lib
  config = config_lib.complete(config_file(name))
  config.data.dataset, config.data.split = "mnist_idx", "test"  # the card's --config.data.* flags
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
