"""Every CLI's --help exits 0; train, sample and evaluate list every flag with its meaning."""

import os
import re
import subprocess
import sys

from tests.test_train import ROOT

CLIS = ("train", "sample", "evaluate")
OTHER_CLIS = ("pretrained", "evaluation.convert_inception", "evaluation.export_classifier")
_DEFINE = re.compile(r"""DEFINE_\w+\(\s*["'](\w+)["']""")
_FLAG_LINE = re.compile(r"^  --(?:\[no\])?(\w+):(.*)$", re.M)
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
  """Names of the flags the module's source defines: DEFINE_*("name", ...) calls, and in sample.py
  the model families' sampling options (absl lists a flag under the module that defines it)."""
  with open(os.path.join(ROOT, "aigc_jax", f"{module}.py")) as f:
    source = f.read()
  names = set(_DEFINE.findall(source))
  if module == "sample":
    from aigc_jax import sample
    names |= set(sample.option_flags())
  return names


def test_every_cli_help_exits_0_and_lists_every_flag_with_a_meaning():
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  start = lambda module, flag, stdout: subprocess.Popen(
      [sys.executable, "-m", f"aigc_jax.{module}", flag], cwd=ROOT, env=env, stdout=stdout,
      stderr=subprocess.PIPE, text=True)
  closed_read_end, write_end = os.pipe()  # `--help | head` where head has already quit
  os.close(closed_read_end)
  into_closed_pipe = start("sample", "--help", write_end)
  os.close(write_end)
  requests = [(m, "--help") for m in CLIS] + [(m, "-?") for m in OTHER_CLIS]  # -?: absl's short --help
  procs = {(m, flag): start(m, flag, subprocess.PIPE) for m, flag in requests}
  for (module, flag), proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (module, flag, err)  # a help request is not a failure (absl exits 1)
    assert _FLAG_LINE.search(out), (module, flag, out)  # lists its flags
    if module in CLIS and flag == "--help":
      listed = module_flags(out, module)
      assert set(listed) == defined_flags(module), module
      for name, meaning in listed.items():
        assert len(meaning.split()) >= 2, f"{module} --{name} has no meaning: {meaning!r}"
  _, err = into_closed_pipe.communicate(timeout=300)
  assert into_closed_pipe.returncode == 0 and "Error" not in err, err
