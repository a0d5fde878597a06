"""The Colab notebooks run headlessly on CPU with small settings, and are stored without outputs.

Each notebook's cell tagged "parameters" is followed by an injected cell of small settings
(the papermill convention), then the notebook runs top to bottom in a fresh kernel.
"""

import json
import os

import nbformat
import pytest

from tests.conftest import QUICK_COMPILE_FLAGS
from tests.test_train import ROOT

SMALL = {
    "quickstart": "NUM_STEPS = 10\nIMAGE_SIZE = 8\nWIDTH = 8\nBATCH_SIZE = 16\nEVAL_SAMPLES = 64\n",
    "rule_based": "IMAGE_SIZE = 32\nVARIANTS = 2\n",
    "gan_vs_vae": "NUM_STEPS = 10\nIMAGE_SIZE = 8\nWIDTH = 8\nBATCH_SIZE = 16\nEVAL_SAMPLES = 64\nNUM_SHOWN = 4\n",
}


def _path(name):
  return os.path.join(ROOT, "colab", f"{name}.ipynb")


def _with_small_settings(nb, settings):
  """Inserts `settings` as a code cell right after the cell tagged "parameters"."""
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(settings))
  return nb


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_stored_without_outputs_and_opens_in_colab(name):
  with open(_path(name)) as f:
    nb = json.load(f)
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
  intro = "".join(nb["cells"][0]["source"])
  assert "colab.research.google.com/github/" in intro and f"/colab/{name}.ipynb" in intro
  assert "pip" in "".join(code[0]["source"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs_on_cpu_with_small_settings(name, tmp_path, monkeypatch):
  from nbclient import NotebookClient
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # prepared datasets stay in the test's folder
  monkeypatch.setenv("XLA_FLAGS", QUICK_COMPILE_FLAGS)  # one CPU device, as a Colab CPU runtime has
  nb = _with_small_settings(nbformat.read(_path(name), as_version=4),
                            SMALL[name] + f"WORKDIR = {str(tmp_path / 'run')!r}\n")
  NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors
  figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]
  assert figures, "the notebook shows no image"
