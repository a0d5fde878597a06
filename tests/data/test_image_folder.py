"""`image_folder`: your own files prepared into TFDS, checked against arrays computed here with numpy.

The folder holds two classes, a nested subfolder, every format (PNG, JPEG, WebP, BMP) and the
modes users have (RGB, L, P with transparency, RGBA, 16-bit grey, CMYK, an EXIF-rotated JPEG),
a corrupt file, and files that are not images.
"""

import functools
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from aigc_jax import checkpoints, config as config_lib, images, parallel, train, trainers
from aigc_jax.data import pipeline
from aigc_jax.errors import UserError
from aigc_jax.trainers import gan, vae as vae_family
from tests.test_train import config_file

SIZE = 8
BACKGROUND = (0, 0, 255)
RNG = np.random.default_rng(18)


def _rgb():
  return RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _quadrants():
  """Four flat 4x4 colour blocks (JPEG survives them nearly exactly), each corner a different one."""
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  image[:4, :4], image[:4, 4:], image[4:, :4], image[4:, 4:] = (240, 16, 16), (16, 240, 16), (16, 16, 240), (240, 240, 16)
  return image


def _write_folder(root):
  """Writes the test folder; returns {relative path: (expected uint8 [8,8,3], tolerance)}."""
  expected = {}

  def save(path, image, want, tolerance=0, **kwargs):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    image.save(full, **kwargs)
    expected[path] = (want, tolerance)

  rgb = _rgb()
  save("cats/rgb.png", Image.fromarray(rgb), rgb)
  grey = RNG.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
  save("cats/grey.bmp", Image.fromarray(grey), np.repeat(grey[..., None], 3, -1))
  palette, index = RNG.integers(0, 256, (4, 3), dtype=np.uint8), RNG.integers(0, 4, (SIZE, SIZE), dtype=np.uint8)
  p_image = Image.fromarray(index, "P")
  p_image.putpalette(palette.reshape(-1).tolist())
  save("cats/palette.png", p_image, np.where((index == 1)[..., None], np.uint8(BACKGROUND), palette[index]),
       transparency=1)
  rgba, alpha = _rgb(), RNG.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8)
  over = rgba * (alpha / 255.0) + np.asarray(BACKGROUND, np.float64) * (1 - alpha / 255.0)
  save("cats/rgba.webp", Image.fromarray(np.concatenate([rgba, alpha], -1), "RGBA"), over, 1, lossless=True)
  sixteen = RNG.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)
  save("cats/nested/deeper/sixteen.png", Image.fromarray(sixteen),
       np.repeat(np.rint(sixteen / 65535.0 * 255.0)[..., None], 3, -1))
  cmyk = RNG.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
  cmyk[..., :] = cmyk[:1, :1]  # flat, so JPEG keeps it
  c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
  save("dogs/cmyk.jpg", Image.fromarray(cmyk, "CMYK"), (255 - c) * (255 - k) / 255, 3, quality=100)
  upright = _quadrants()
  exif = Image.Exif()
  exif[0x0112] = 6  # the stored pixels turn 90 degrees clockwise to stand upright
  save("dogs/turned.jpeg", Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))), upright, 12,
       exif=exif, quality=95, subsampling=0)
  bmp = _rgb()
  save("dogs/nested/photo.bmp", Image.fromarray(bmp), bmp)
  good_png = os.path.join(root, "cats", "rgb.png")
  with open(good_png, "rb") as f, open(os.path.join(root, "dogs", "corrupt.png"), "wb") as out:
    out.write(f.read()[:70])  # cut inside the image data
  for other in ["notes.txt", "dogs/.hidden.png", "cats/readme.md"]:
    with open(os.path.join(root, *other.split("/")), "w") as f:
      f.write("not an image")
  return expected


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("photos"))
  return root, _write_folder(root)


def _config(data_dir, folder, **data):
  config = config_lib.base_config()
  config.data.update({"dataset": "image_folder", "folder": folder, "labels": "folders", "image_size": SIZE,
                      "channels": 3, "background": "#0000ff", "data_dir": data_dir, **data})
  config_lib.validate(config)
  return config


def _all(data_config):
  n = pipeline.dataset_size(data_config, "train")
  x, y = pipeline.load_examples(data_config, "train", n)
  return images.to_uint8(x), y


def test_every_format_and_mode_is_stored_upright_in_rgb_with_its_folder_label(photos, data_dir, capsys):
  root, expected = photos
  config = _config(data_dir, root, skip_bad_images=True)
  assert config.data.class_names == ["cats", "dogs"]
  got, labels = _all(config.data)
  good = sorted(expected)  # sorted paths; the corrupt file is left out
  assert len(got) == len(good) == 8
  for image, label, path in zip(got, labels, good):
    want, tolerance = expected[path]
    np.testing.assert_allclose(image, want, atol=tolerance + 0.5, err_msg=path)
    assert label == ("cats", "dogs").index(path.split("/")[0]), path
  report = capsys.readouterr().err
  assert "left out 1 of the 9 images" in report and "dogs/corrupt.png" in report
  _all(config.data)
  assert "left out" not in capsys.readouterr().err  # once per process, not per opening


def test_a_corrupt_file_stops_the_run_by_name_before_the_workdir_is_written(photos, tmp_path):
  root, _ = photos
  config = _config(str(tmp_path / "tfds"), root)
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match=r"data.folder=.*: cannot read image 'dogs/corrupt.png': .*"
                                      r"data.skip_bad_images=True") as e:
    train.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(e.value)
  assert not workdir.exists()
  # A dataset an earlier run prepared with the file left out is refused as well, unless skipping.
  config.data.skip_bad_images = True
  assert pipeline.dataset_size(config.data, "train") == 8
  config.data.skip_bad_images = False
  with pytest.raises(UserError, match="'dogs/corrupt.png'"):
    pipeline.dataset_size(config.data, "train")


def test_a_zip_gives_the_same_dataset_and_unlabelled_folders_give_zeros(photos, data_dir, tmp_path):
  root, _ = photos
  folder_images, folder_labels = _all(_config(data_dir, root, skip_bad_images=True).data)
  archive = tmp_path / "photos.zip"
  with zipfile.ZipFile(archive, "w") as z:
    for directory, _, files in os.walk(root):
      for file in files:
        full = os.path.join(directory, file)
        z.write(full, os.path.relpath(full, root))
    z.writestr("__MACOSX/cats/._rgb.png", b"resource fork")
  zip_images, zip_labels = _all(_config(data_dir, str(archive), skip_bad_images=True).data)
  np.testing.assert_array_equal(zip_images, folder_images)
  np.testing.assert_array_equal(zip_labels, folder_labels)
  unlabelled = _config(data_dir, root, skip_bad_images=True, labels="none")
  assert unlabelled.data.class_names == []
  np.testing.assert_array_equal(_all(unlabelled.data)[1], np.zeros(8))


def test_batches_resume_exactly_split_over_processes_and_fit_on_device(photos, data_dir):
  root, _ = photos
  data_config = _config(data_dir, root, skip_bad_images=True).data
  stream = pipeline.local_batches(data_config, batch_size=4, seed=5)
  batches = [next(stream) for _ in range(4)]
  ids = [tuple(map(bytes, b["image"])) for b in batches]
  assert len(set(ids[0] + ids[1])) == 8  # the first epoch is a permutation of the 8 images
  resumed = pipeline.local_batches(data_config, batch_size=4, seed=5, start_step=3)
  np.testing.assert_array_equal(next(resumed)["image"], batches[3]["image"])
  halves = [pipeline.local_batches(data_config, batch_size=1, seed=0, process_index=p, process_count=2)
            for p in range(2)]
  seen = [{next(h)["image"].tobytes() for _ in range(4)} for h in halves]
  assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
  # Stored at one fixed shape, the split takes the in-memory path that data.on_device gathers from.
  assert pipeline.fits_in_memory(pipeline.dataset_builder(data_config), "train", 1 << 20)


def test_photos_are_centre_cropped_and_shrunk_and_a_changed_folder_is_prepared_anew(tmp_path, data_dir):
  root = tmp_path / "wide"
  root.mkdir()
  photo = RNG.integers(0, 256, (30, 50, 3), dtype=np.uint8)
  Image.fromarray(photo).save(root / "a.png")
  data_config = _config(data_dir, str(root), labels="none").data
  (got,), _ = _all(data_config)
  expected = np.asarray(Image.fromarray(photo[:, 10:40]).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
  np.testing.assert_array_equal(got, expected)
  Image.fromarray(photo[::-1]).save(root / "b.png")
  assert pipeline.dataset_size(data_config, "train") == 2


def test_bad_folder_settings_are_one_line_each(tmp_path):
  (tmp_path / "flat").mkdir()
  Image.fromarray(_rgb()).save(tmp_path / "flat" / "a.png")
  (tmp_path / "empty").mkdir()
  cases = [({"folder": None}, "data.folder=None is not valid"),
           ({"folder": str(tmp_path / "missing")}, "name a folder or a .zip"),
           ({"folder": str(tmp_path / "empty")}, "holds no PNG, JPEG, WebP or BMP images"),
           ({"folder": str(tmp_path / "flat")}, "'a.png' is not in a class subfolder"),
           ({"labels": "subfolders"}, "data.labels='subfolders'"),
           ({"crop": "random"}, "data.crop='random'"),
           ({"background": "mauvish"}, "data.background='mauvish'"),
           ({"max_pixels": 0}, "data.max_pixels=0"),
           ({"max_pixels": 10 ** 9}, "PIL's own limit"),
           ({"labels": "none", "num_classes": 2}, "or data.labels='folders'")]
  for overrides, message in cases:
    config = config_lib.base_config()
    config.data.update(dataset="image_folder", folder=str(tmp_path / "flat"), labels="folders")
    config.model.num_classes = overrides.pop("num_classes", 0)
    config.data.update(overrides)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
      config_lib.validate(config)


def _random_state(config, mesh):
  """A train state shaped as the trainer's, parameters drawn with numpy, the rest zeros.

  Compiling a jitted init costs far more than a step at 128 px (threefry, per layer); the step
  is what is tested here.
  """
  family = trainers.get_family(config)
  shapes = jax.eval_shape(functools.partial(family.init_state, config), jax.random.key(0))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    is_param = "params" in str(path[0]) and "opt" not in str(path[0])
    value = 0.05 * rng.normal(size=leaf.shape) if is_param else np.zeros(leaf.shape)
    return jax.device_put(value.astype(leaf.dtype), parallel.replicated(mesh))

  state = jax.tree_util.tree_map_with_path(draw, shapes)
  return state, jax.tree.map(lambda _: parallel.replicated(mesh), shapes)


@pytest.mark.parametrize("family, name, labels", [("gan", "dcgan", "folders"), ("vae", "conv_vae", "none")])
def test_a_128px_train_step_on_folder_batches(tmp_path, data_dir, family, name, labels):
  root = tmp_path / "photos"
  for i, cls in enumerate(["zebra", "ant", "ant/small"]):
    (root / cls).mkdir(parents=True)
    Image.fromarray(RNG.integers(0, 256, (150, 130 + i, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
  config = _config(data_dir, str(root), labels=labels, image_size=128)
  config.model.update(family=family, name=name, width=2, latent_dim=4,
                      num_classes=2 if labels == "folders" else 0)
  config.vae.likelihood = "gaussian"
  config.train.batch_size = 8
  mesh = parallel.create_mesh()
  state, sharding = _random_state(config, mesh)
  step = trainers.compile_train_step(config, mesh, sharding)
  with pipeline.create_train_iterator(config, mesh) as batches:
    batch = next(batches)
  assert batch["image"].shape == (8, 128, 128, 3)
  if labels == "folders":
    assert set(np.asarray(batch["label"]).tolist()) == {0, 1}  # ant (2 photos), zebra (1)
  before = jax.device_get(state)
  after, metrics = step(state, [batch], jax.random.key(1))
  assert int(jax.device_get(after.step)) == 1
  assert all(np.isfinite(float(v)) for v in jax.device_get(metrics).values())
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(after), before)
  assert any(jax.tree.leaves(changed))


def test_a_run_on_a_folder_records_its_class_names_in_config_json(photos, tmp_path, data_dir):
  root, _ = photos
  config = _config(data_dir, root, skip_bad_images=True)
  config.model.update(family="vae", name="conv_vae", width=2, latent_dim=4, num_classes=2)
  config.train.update(batch_size=8, num_steps=1, num_sample_images=2, log_every=1, checkpoint_every=1,
                      sample_every=1)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  saved = checkpoints.read_config(str(tmp_path / "run"))
  assert saved.data.class_names == ["cats", "dogs"]


@pytest.mark.parametrize("name, size", [("dcgan_folder128", 128), ("vae_folder128", 128), ("dcgan_folder256", 256)])
def test_the_folder_configs_need_a_folder_and_build_models_of_their_size(photos, name, size):
  config = config_file(name)
  with pytest.raises(UserError, match="data.folder=None"):
    config_lib.validate(config)
  config.data.folder = photos[0]
  config_lib.validate(config, num_devices=8)
  x = jnp.zeros((1, size, size, 3))
  if config.model.family == "gan":
    generator = gan.build_generator(config)
    z = jnp.zeros((1, config.model.latent_dim))
    out = jax.eval_shape(functools.partial(generator.init_with_output, train=False), jax.random.key(0), z)[0]
  else:
    vae = vae_family.build_vae(config)
    out = jax.eval_shape(vae.init_with_output, jax.random.key(0), x, jax.random.key(1))[0][0]
  assert out.shape == x.shape
