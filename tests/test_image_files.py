"""Image files of a folder or zip: recursive listing, what is left out, class names, content keys."""

import os
import zipfile

import pytest

from aigc_jax import image_files
from aigc_jax.errors import UserError

FILES = ["b/deep/er/x.JPG", "a/1.png", "a/2.webp", "b/3.bmp", "b/4.jpeg"]
IGNORED = ["a/notes.txt", "a/.hidden.png", ".cache/5.png", "b/.thumbs/6.png", "__MACOSX/a/._1.png"]


def _write(root, paths):
  for i, path in enumerate(paths):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
      f.write(bytes(i + 1))  # sizes 1, 2, ...


def _zip(folder, path):
  with zipfile.ZipFile(path, "w") as archive:
    for root, _, files in os.walk(folder):
      for file in files:
        full = os.path.join(root, file)
        archive.write(full, os.path.relpath(full, folder).replace(os.sep, "/"))
  return str(path)


def test_folders_and_zips_list_the_same_images_sorted_leaving_out_hidden_and_other_files(tmp_path):
  folder = tmp_path / "photos"
  _write(folder, FILES + IGNORED)
  listed = image_files.list_images(str(folder))
  assert [f.path for f in listed] == sorted(FILES)
  assert {f.path: f.size for f in listed} == {p: i + 1 for i, p in enumerate(FILES)}
  zipped = image_files.list_images(_zip(folder, tmp_path / "photos.zip"))
  assert [(f.path, f.size) for f in zipped] == [(f.path, f.size) for f in listed]
  assert image_files.class_names(str(folder), listed) == ("a", "b")
  with image_files.opener(str(tmp_path / "photos.zip")) as open_file:
    assert open_file("b/3.bmp").read() == bytes(4)
  with image_files.opener(str(folder)) as open_file:
    assert open(open_file("b/3.bmp"), "rb").read() == bytes(4)


def test_images_outside_class_folders_and_missing_folders_are_user_errors(tmp_path):
  _write(tmp_path / "photos", ["a/1.png", "loose.png"])
  listed = image_files.list_images(str(tmp_path / "photos"))
  with pytest.raises(UserError, match="'loose.png' is not in a class subfolder.*data.labels='none'"):
    image_files.class_names("photos", listed)
  for missing in [tmp_path / "nowhere", tmp_path / "photos" / "loose.png"]:
    with pytest.raises(UserError, match="name a folder or a .zip"):
      image_files.list_images(str(missing))
  (tmp_path / "broken.zip").write_bytes(b"PK not really")
  with pytest.raises(UserError, match="not a readable .zip"):
    image_files.list_images(str(tmp_path / "broken.zip"))


def test_the_content_key_changes_with_any_file_and_setting(tmp_path):
  folder = tmp_path / "photos"
  _write(folder, FILES)
  key = image_files.content_key(image_files.list_images(str(folder)), 64)
  assert image_files.content_key(image_files.list_images(str(folder)), 64) == key
  assert image_files.content_key(image_files.list_images(str(folder)), 32) != key
  touched = folder / "a" / "1.png"
  os.utime(touched, ns=(0, os.stat(touched).st_mtime_ns + 1))
  assert image_files.content_key(image_files.list_images(str(folder)), 64) != key
