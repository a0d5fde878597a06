"""The image files of a folder or a .zip: listing, class names from subfolders, a content key.

PNG, JPEG, WebP and BMP files are found recursively, by suffix (any case); hidden files and
folders (names starting with a dot) and the `__MACOSX` folder macOS writes into zips are left
out. Paths are relative to the folder (or the zip's root), with "/" separators, and sorted.
Nothing here imports TensorFlow: `config.validate` lists a folder's classes with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import zipfile
from typing import BinaryIO, Callable, Iterator, Sequence

from aigc_jax.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # PIL's names for them; nothing else is tried


@dataclasses.dataclass(frozen=True)
class ImageFile:
  """One image file: its relative path, byte size and a stamp that changes with its contents."""

  path: str
  size: int
  stamp: int  # mtime in ns (folders) or CRC-32 (zips)


def _wanted(path: str) -> bool:
  parts = path.split("/")
  return (path.lower().endswith(SUFFIXES) and parts[0] != "__MACOSX"
          and not any(p.startswith(".") for p in parts))


def is_zip(folder: str) -> bool:
  """Whether `folder` names a .zip file rather than a directory."""
  return folder.lower().endswith(".zip") and os.path.isfile(folder)


def list_images(folder: str) -> list[ImageFile]:
  """The image files under `folder` (a directory or a .zip), sorted by path; UserError if it is neither."""
  if is_zip(folder):
    try:
      with zipfile.ZipFile(folder) as archive:
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
      raise UserError(f"config.data.folder={folder!r} is not a readable .zip: {e}") from None
    found = [ImageFile(m.filename, m.file_size, m.CRC) for m in members
             if not m.is_dir() and _wanted(m.filename)]
  elif os.path.isdir(folder):
    found = []
    for root, dirs, files in os.walk(folder):
      dirs[:] = [d for d in dirs if not d.startswith(".")]
      for file in files:
        path = os.path.join(root, file)
        relative = os.path.relpath(path, folder).replace(os.sep, "/")
        if _wanted(relative):
          info = os.stat(path)
          found.append(ImageFile(relative, info.st_size, info.st_mtime_ns))
  else:
    raise UserError(f"config.data.folder={folder!r} is not valid: name a folder or a .zip of images")
  return sorted(found, key=lambda f: f.path)


def class_names(folder: str, files: Sequence[ImageFile]) -> tuple[str, ...]:
  """The sorted names of the first-level subfolders holding images (data.labels='folders')."""
  loose = [f.path for f in files if "/" not in f.path]
  if loose:
    raise UserError(f"config.data.labels='folders' is not valid for {folder!r}: {loose[0]!r} is not "
                    "in a class subfolder; put every image in one, or use data.labels='none'")
  return tuple(sorted({f.path.split("/")[0] for f in files}))


def label_of(path: str) -> str:
  """The class name (first-level subfolder) of a relative path."""
  return path.split("/")[0]


def content_key(files: Sequence[ImageFile], *settings) -> str:
  """A hex digest of the files' paths, sizes and stamps and of `settings` (JSON-able values)."""
  h = hashlib.sha256(repr(settings).encode())
  for f in files:
    h.update(f"{f.path}\0{f.size}\0{f.stamp}\n".encode())
  return h.hexdigest()


@contextlib.contextmanager
def opener(folder: str) -> Iterator[Callable[[str], str | BinaryIO]]:
  """Yields `open(path)`, giving what PIL can open for a relative path: a file path or, in a zip, bytes.

  Safe to call from several threads at once (zipfile serialises its reads)."""
  if not is_zip(folder):
    yield lambda path: os.path.join(folder, path)
    return
  with zipfile.ZipFile(folder) as archive:
    yield lambda path: io.BytesIO(archive.read(path))
