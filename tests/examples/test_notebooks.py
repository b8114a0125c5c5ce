"""The example notebooks in ``examples/`` run top to bottom on the embedded model without an error (nbclient,
kernel ``python3``, a timeout per cell), in a temporary copy; the committed files keep no outputs."""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = ["see_heads.ipynb", "steer_heads.ipynb", "sparsify.ipynb"]
#: seconds any one cell may take (the slowest cells load the model or decode after 1024 tokens)
CELL_TIMEOUT = 300


def test_the_examples_are_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{name}: clear the outputs"
        assert nb.cells[0].cell_type == "markdown" and nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.model
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    path = tmp_path / name
    shutil.copy(EXAMPLES / name, path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(tmp_path)}}
    )
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    client.execute()  # raises CellExecutionError on the first failing cell; the kernel has exited after it
    seconds, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    nbformat.write(nb, path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    kinds = {k for c in nb.cells if c.cell_type == "code" for o in c.outputs for k in o.get("data", {})}
    assert "text/plain" in kinds
    if name == "see_heads.ipynb":  # the views render as HTML and the figure as an image, not as their source
        assert {"text/html", "image/png"} <= kinds
    if name == "steer_heads.ipynb":
        assert "image/png" in kinds
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU in the kernel")
