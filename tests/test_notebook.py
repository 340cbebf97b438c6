"""The Colab quickstart runs top to bottom (with fewer steps), so it cannot rot."""

from pathlib import Path
import pytest

import nbclient
import nbformat

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_executes(tmp_path, fashion_dir):
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += (f"\nGPT_STEPS = 30\nCNN_STEPS = 20\nFASHION_DIR = {fashion_dir!r}\n"
                      f"VAL_SIZE = 100\nRUNS = {str(tmp_path / 'runs')!r}\n")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "test accuracy" in outputs and "working in" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the loss curve and the confusion matrix
    assert (tmp_path / "runs" / "notebook-cnn" / "best").is_dir()
