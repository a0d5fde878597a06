"""The sample CLI: seeds name images, interpolation, and user errors that write nothing."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_jax import generation, runs, sample
from aigc_jax.errors import UserError
from tests.test_train import cli, run_20_steps  # noqa: F401  (fixture)


def test_parse_seeds():
  assert sample.parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
  assert sample.parse_seeds("7") == [7]
  for bad in ("a-b", "5-2", "1,,2", "-3"):
    with pytest.raises(UserError, match="--seeds"):
      sample.parse_seeds(bad)


def test_same_seed_gives_the_same_image(run_20_steps, tmp_path):
  config, state, _ = runs.load_run(run_20_steps)
  a = sample.generate_grid(config, state, [0, 1, 2])
  b = sample.generate_grid(config, state, [2, 0])
  np.testing.assert_allclose(a[2], b[0], atol=1e-6)
  np.testing.assert_allclose(a[0], b[1], atol=1e-6)
  assert not np.allclose(a[0], a[1])
  out = str(tmp_path / "grid.png")
  sample.run("generate", out, workdir=run_20_steps, seeds="0-3")
  assert Image.open(out).size[0] >= 256


def test_slerp_endpoints_and_unit_norm_path():
  import jax.numpy as jnp
  a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
  path = np.asarray(generation.slerp(a, b, jnp.linspace(0, 1, 5)))
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(path[2], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_interpolate_writes_a_gif_with_one_frame_per_step(run_20_steps, tmp_path):
  out = str(tmp_path / "walk.gif")
  sample.run("interpolate", out, workdir=run_20_steps, seeds="3,7", frames=6)
  assert Image.open(out).n_frames == 6


@pytest.mark.parametrize("mode, kwargs, message", [
    ("generate", {"step": 999}, "--step=999 has no checkpoint"),
    ("generate", {"seeds": "x"}, "--seeds"),
    ("generate", {"seeds": "4294967295-4294967296"}, "seeds go up to 4294967295"),
    ("generate", {"num": 4}, "--num does not apply to --mode=generate"),
    ("reconstruct", {"num": 0}, "--num=0"),
    ("interpolate", {"frames": 0}, "--frames=0"),
])
def test_user_errors_write_nothing(run_20_steps, tmp_path, mode, kwargs, message):
  out = tmp_path / "grid.png"
  with pytest.raises(UserError, match=message):
    sample.run(mode, str(out), workdir=run_20_steps, **kwargs)
  assert not out.exists()


@pytest.mark.parametrize("out, message", [("grid.jpg", "a .png grid or a .gif"), ("", "names no file")])
def test_bad_output_paths_are_user_errors(run_20_steps, tmp_path, monkeypatch, out, message):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match=message):
    sample.run("generate", out, workdir=run_20_steps, seeds="0-3")
  assert os.listdir(tmp_path) == []


def test_cli_errors_are_one_line(tmp_path, run_20_steps):
  rc, _, err = cli("aigc_jax.sample", f"--workdir={tmp_path}", "--out", str(tmp_path / "g.png"))
  assert rc == 2 and "Traceback" not in err and "no training run" in err.strip().splitlines()[-1]
  rc, _, err = cli("aigc_jax.sample", f"--workdir={run_20_steps}", "--out=/nonexistent/dir/g.png")
  assert rc == 2 and "does not exist" in err.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "g.png")


def _tiny_run(tmp_path_factory, name, **overrides):
  from aigc_jax import config as config_lib, train
  config = config_lib.base_config()
  config.data.image_size, config.model.width, config.model.latent_dim = 8, 4, 4
  config.train.batch_size, config.train.num_steps = 16, 2
  config.train.log_every = config.train.checkpoint_every = config.train.sample_every = 2
  config.train.num_sample_images = 4
  config.update_from_flattened_dict(overrides)
  workdir = str(tmp_path_factory.mktemp(name))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
  """A 2-step class-conditional GAN with EMA."""
  return _tiny_run(tmp_path_factory, "cgan", **{"model.num_classes": 10, "gan.ema_half_life_images": 50})


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  return _tiny_run(tmp_path_factory, "vae", **{"model.family": "vae", "model.name": "conv_vae"})


def test_conditional_sample_with_class_3_is_reproducible(cgan_run, tmp_path):
  a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
  sample.run("generate", a, workdir=cgan_run, seeds="0-3", class_idx=3)
  sample.run("generate", b, workdir=cgan_run, seeds="0-3", class_idx=3)
  assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
  config, state, _ = runs.load_run(cgan_run)
  three = sample.generate_grid(config, state, [0, 1], class_idx=3)
  five = sample.generate_grid(config, state, [0, 1], class_idx=5)
  assert not np.allclose(three, five)
  with pytest.raises(UserError, match="--class=12 is out of range"):
    sample.run("generate", str(tmp_path / "c.png"), workdir=cgan_run, class_idx=12)


def _captured_frames(monkeypatch):
  """Makes sample.run hand its images to a list instead of writing them."""
  frames = []
  monkeypatch.setattr(sample, "write_images", lambda out, images, ncols=None: frames.append(np.asarray(images)))
  return frames


def test_conditional_seed_names_the_same_image_in_any_grid(cgan_run, monkeypatch):
  # Without --class each seed draws class seed % 10, so its image does not depend on its place.
  frames = _captured_frames(monkeypatch)
  sample.run("generate", "g.png", workdir=cgan_run, seeds="0-5")
  sample.run("generate", "g.png", workdir=cgan_run, seeds="5")
  sample.run("generate", "g.png", workdir=cgan_run, seeds="5", class_idx=5)
  np.testing.assert_allclose(frames[0][5], frames[1][0], atol=1e-6)
  np.testing.assert_array_equal(frames[1], frames[2])
  sample.run("generate", "g.png", workdir=cgan_run, seeds="5", class_idx=0)
  assert not np.allclose(frames[3], frames[1])
  # The largest seed (past int32) draws class 4294967295 % 10 = 5.
  sample.run("generate", "g.png", workdir=cgan_run, seeds="4294967295")
  sample.run("generate", "g.png", workdir=cgan_run, seeds="4294967295", class_idx=5)
  np.testing.assert_array_equal(frames[4], frames[5])


def test_conditional_interpolation_keeps_the_first_seeds_class(cgan_run, monkeypatch):
  frames = _captured_frames(monkeypatch)
  sample.run("interpolate", "w.gif", workdir=cgan_run, seeds="3,7", frames=4)
  sample.run("generate", "g.png", workdir=cgan_run, seeds="3,7", class_idx=3)
  walk, ends = frames
  np.testing.assert_allclose(walk[0], ends[0], atol=1e-5)
  np.testing.assert_allclose(walk[-1], ends[1], atol=1e-5)  # seed 7's latent, still class 3


def test_truncation_scales_latents_and_psi_0_gives_one_image(cgan_run, tmp_path):
  import jax
  import jax.numpy as jnp
  from aigc_jax.trainers import gan
  config, state, _ = runs.load_run(cgan_run)
  labels, keys = np.ones(4, np.int32), jax.random.split(jax.random.key(0), 4)
  z = generation.seed_noise(config, [0, 1, 2, 3])
  np.testing.assert_allclose(gan.generate(config, state, z, labels, keys, {"trunc": 0.5}),
                             gan.generate(config, state, 0.5 * z, labels, keys, {}), atol=1e-6)
  out, ref = str(tmp_path / "t.png"), str(tmp_path / "ref.png")
  sample.run("generate", out, workdir=cgan_run, seeds="0-3", class_idx=1, trunc=0.0)
  mean_image = gan.generate(config, state, jnp.zeros((4, config.model.latent_dim)), labels, keys, {})
  sample.write_images(ref, np.asarray(mean_image))
  assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(ref)))
  with pytest.raises(UserError, match="--trunc"):
    sample.run("generate", out, workdir=cgan_run, trunc=1.5)


def test_pretrained_export_and_load_round_trip(cgan_run, tmp_path):
  from aigc_jax import pretrained
  config, state, _ = runs.load_run(cgan_run)
  pretrained.export(cgan_run, "tiny", str(tmp_path))
  loaded_config, loaded = pretrained.load("tiny", str(tmp_path))
  labels = np.array([0, 3, 9], np.int32)
  np.testing.assert_array_equal(generation.from_seeds(loaded_config, loaded, [0, 1, 2], labels),
                                generation.from_seeds(config, state, [0, 1, 2], labels))
  with pytest.raises(UserError, match="not a shipped model"):
    pretrained.load("nope", str(tmp_path))
  out = tmp_path / "grid.png"
  with pytest.raises(UserError, match="--step picks a checkpoint of a run; a shipped --model has one"):
    sample.run("generate", str(out), model="dcgan_mnist", step=5)
  assert not out.exists()


def test_vae_interpolation_starts_and_ends_at_the_reconstructions(vae_run, tmp_path):
  from aigc_jax import data
  from aigc_jax.trainers import vae
  config, state, _ = runs.load_run(vae_run)
  out = str(tmp_path / "walk.png")
  sample.run("interpolate", out, workdir=vae_run, seeds="3,7", frames=5)
  pictures = data.load_images(config.data, config.data.eval_split, 8)
  codes = vae.encode(config, state, pictures[[3, 7]])
  recon = np.asarray(vae.generate(config, state, codes, None, None, {}))
  walk = np.asarray(sample.interpolation(config, state, [3, 7], 5))
  np.testing.assert_allclose(walk[0], recon[0], atol=1e-5)
  np.testing.assert_allclose(walk[-1], recon[1], atol=1e-5)
  assert Image.open(out).size[0] > Image.open(out).size[1]
  sample.run("reconstruct", str(tmp_path / "r.png"), workdir=vae_run, num=4)
  assert os.path.exists(tmp_path / "r.png")


# Diffusion models sample with 8 steps here to keep the test cheap (their cards score 18).
SHIPPED = {"dcgan_mnist": {}, "cgan_mnist": {"class_idx": 3}, "vae_mnist": {},
           "edm_mnist": {"steps": 8}, "edm_mnist_cond": {"class_idx": 3, "steps": 8}}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_write_a_grid_offline(name, tmp_path):
  from aigc_jax import pretrained
  from aigc_jax.evaluation import features
  out = str(tmp_path / f"{name}.png")
  sample.run("generate", out, model=name, seeds="0-9", **SHIPPED[name])
  grid = np.asarray(Image.open(out))
  assert grid.shape[0] >= 256 and grid.std() > 10  # Drawn, not blank.
  config, state = pretrained.load(name)
  assert config.data.image_size == 28 and config.data.dataset == "mnist_idx"
  if "class_idx" in SHIPPED[name]:  # The digit classifier mostly reads the class asked for (chance: 1 in 10).
    options = {k: v for k, v in SHIPPED[name].items() if k != "class_idx"}
    digits = sample.generate_grid(config, state, range(10), class_idx=3, options=options)
    logits = features.get_extractor("digits").apply(digits, np.ones(10, bool))["logits"]
    assert np.mean(np.argmax(logits, axis=1) == 3) >= 0.6


def test_a_family_that_cannot_serve_a_mode_says_so_in_one_line(run_20_steps, tmp_path):
  out = tmp_path / "r.png"
  with pytest.raises(UserError, match="^gan models cannot reconstruct; families that can: vae$"):
    sample.run("reconstruct", str(out), workdir=run_20_steps)
  with pytest.raises(UserError, match="gan models cannot show a sampling trajectory"):
    sample.run("trajectory", str(tmp_path / "t.gif"), workdir=run_20_steps, seeds="0")
  assert not out.exists()


@pytest.mark.parametrize("mode, kwargs, message", [
    ("noise", {"seeds": "0-3"}, "--seeds does not apply to --mode=noise"),
    ("noise", {"workdir": "run"}, "--workdir does not apply to --mode=noise"),
    ("noise", {"trunc": 0.5}, "--trunc does not apply to --mode=noise"),
    ("rule", {"class_idx": 3}, "--class does not apply to --mode=rule"),
    ("rule", {"size": 32}, "--size does not apply to --mode=rule"),
    ("generate", {"seed": 3}, "--seed does not apply to --mode=generate"),
    ("generate", {"transform": "rotate(-5,5)"}, "--transform does not apply to --mode=generate"),
])
def test_flags_a_mode_does_not_read_are_refused(tmp_path, mode, kwargs, message):
  out = tmp_path / "x.png"
  with pytest.raises(UserError, match=message):
    sample.run(mode, str(out), **kwargs)
  assert not out.exists()


def test_an_option_the_family_does_not_take_is_refused(vae_run, tmp_path):
  with pytest.raises(UserError, match="--trunc does not apply to walks between vae encodings"):
    sample.run("interpolate", str(tmp_path / "w.gif"), workdir=vae_run, seeds="3,7", trunc=0.5)


def test_outdir_writes_one_png_per_seed_and_keeps_existing_files(run_20_steps, tmp_path):
  from aigc_jax import images
  outdir = tmp_path / "fakes"
  assert sample.run("generate", None, workdir=run_20_steps, seeds="0-4", outdir=str(outdir)) == str(outdir)
  names = sorted(os.listdir(outdir))
  assert names == [f"seed{s:06d}.png" for s in range(5)]
  config, state, _ = runs.load_run(run_20_steps)
  expected = images.to_uint8(np.asarray(sample.generate_grid(config, state, [0, 1, 2, 3, 4])))
  for seed in range(5):
    written = np.asarray(Image.open(outdir / f"seed{seed:06d}.png"))
    assert written.shape == (8, 8)  # the model's resolution, greyscale
    # Another batch size may round a pixel the other way: at most one level apart.
    assert np.abs(written.astype(int) - expected[seed, ..., 0]).max() <= 1
  # Resuming: files already there are kept as they are, missing ones are made.
  os.remove(outdir / "seed000003.png")
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(outdir / "seed000001.png")
  sample.run("generate", None, workdir=run_20_steps, seeds="0-5", outdir=str(outdir))
  assert len(os.listdir(outdir)) == 6
  assert np.asarray(Image.open(outdir / "seed000001.png")).max() == 0
  remade = np.asarray(Image.open(outdir / "seed000003.png")).astype(int)
  assert np.abs(remade - expected[3, ..., 0]).max() <= 1
  with pytest.raises(UserError, match="--outdir does not apply to --mode=interpolate"):
    sample.run("interpolate", None, workdir=run_20_steps, seeds="0,1", outdir=str(outdir))
  with pytest.raises(UserError, match="not both"):
    sample.run("generate", str(tmp_path / "g.png"), workdir=run_20_steps, outdir=str(outdir))


def test_class_prints_the_folder_class_name(cgan_run, monkeypatch, capsys):
  load = runs.load

  def load_with_names(*args):
    config, state, step = load(*args)
    config.data.class_names = [f"name{i}" for i in range(10)]
    return config, state, step

  monkeypatch.setattr(runs, "load", load_with_names)
  _captured_frames(monkeypatch)
  sample.run("generate", "g.png", workdir=cgan_run, seeds="0-1", class_idx=3)
  assert "class 3: name3" in capsys.readouterr().err
