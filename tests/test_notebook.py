"""The walkthrough notebook, as a learner gets it from `jaxninja exercises`, runs top to bottom
beside the unfilled exercise files (nbclient, on this Python's kernel)."""

import time

import nbformat
import pytest
from nbclient import NotebookClient

from jaxninja.learn import write_exercises


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_walkthrough_runs(tmp_path, names_path, monkeypatch):
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    write_exercises(tmp_path)
    nb = nbformat.read(tmp_path / "walkthrough.ipynb", as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"the walkthrough ran in {time.perf_counter() - t0:.1f} s")
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "OK: 0 of 26 written" in outputs  # exercise 1 graded as the learner left it
    assert "2000 steps in" in outputs and "val 2." in outputs  # exercise 4 trained
    assert any(
        o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", [])
    )
