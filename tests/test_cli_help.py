"""`python -m aigc_jax.{train,sample,evaluate} --help` lists every flag with its meaning."""

import os
import re
import subprocess
import sys

from tests.test_train import ROOT

CLIS = ("train", "sample", "evaluate")
_DEFINE = re.compile(r"""DEFINE_\w+\(\s*["'](\w+)["']""")
_FLAG_LINE = re.compile(r"^  --(?:\[no\])?(\w+):(.*)$")
_NOT_MEANING = re.compile(r"\((?:default: .*|an integer|a number|a list.*|one of: .*)\)")


def module_flags(help_text: str, module: str) -> dict[str, str]:
  """Flag name -> help text (wrapped lines joined, defaults and types removed) of the module's section."""
  section = re.search(rf"^\S*aigc_jax/{module}\.py:\n((?:  .*\n?)*)", help_text, re.M)
  assert section, help_text
  flags: dict[str, str] = {}
  name = None
  for line in section.group(1).splitlines():
    m = _FLAG_LINE.match(line)
    if m:
      name = m.group(1)
      flags[name] = m.group(2)
    else:
      flags[name] += " " + line.strip()
  return {k: " ".join(_NOT_MEANING.sub("", v).split()) for k, v in flags.items()}


def defined_flags(module: str) -> set[str]:
  """Names of the flags the module's source defines (DEFINE_*("name", ...) calls)."""
  with open(os.path.join(ROOT, "aigc_jax", f"{module}.py")) as f:
    return set(_DEFINE.findall(f.read()))


def test_every_flag_is_listed_with_a_meaning():
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = {m: subprocess.Popen([sys.executable, "-m", f"aigc_jax.{m}", "--help"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
           for m in CLIS}
  for module, proc in procs.items():
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out  # absl exits 1 after printing --help
    listed = module_flags(out, module)
    assert set(listed) == defined_flags(module), module
    for name, meaning in listed.items():
      assert len(meaning.split()) >= 2, f"{module} --{name} has no meaning: {meaning!r}"
