"""Atomic file writes: new files get the mode open() would give, overwrites keep the file's mode."""

import os
import stat

from aigc_jax import images


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask_and_keep_an_existing_mode(tmp_path):
  old = os.umask(0o027)
  try:
    new = tmp_path / "new.png"
    images.write_bytes_atomic(str(new), b"a")
    assert _mode(new) == 0o640 and new.read_bytes() == b"a"
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o604)
    images.write_bytes_atomic(str(kept), b"b")
    assert _mode(kept) == 0o604 and kept.read_bytes() == b"b"
  finally:
    os.umask(old)
  assert sorted(os.listdir(tmp_path)) == ["kept.png", "new.png"]  # no temporary files left
