"""The walkthrough notebooks, as a learner gets them from `jaxninja exercises`: each runs top to
bottom beside the unfilled exercise files (nbclient, on this Python's kernel), and then, in the
same live kernel, its cells are re-run after the exercise files are edited on disk, as a learner
would: each re-run must grade (and train on) the code the file holds now. Part 4's notebook
(exercises 1 to 4), then part 5's (exercise 5, the WaveNet), then part 6's (exercise 6, the
GPT)."""

import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from jaxninja.learn.files import write_exercises
from tests.exercise_fill import fill, fill_ex5, fill_ex6, solution_blocks

EX2_RIGHT = "(jax.nn.softmax(logits, axis=1) - jax.nn.one_hot(Yb, V)) / n"


def _code_cell(nb, marker: str) -> int:
    """The index of the one code cell whose source holds `marker`."""
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, (marker, found)
    return found[0]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs)


def _last_loss_and_val(text: str) -> tuple[float, float]:
    last = float(re.search(r"last loss (\d+\.\d+)", text).group(1))
    val = float(re.search(r"^val (\d+\.\d+)$", text, re.M).group(1))
    return last, val


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_walkthrough_runs_then_regrades_each_edit(tmp_path, names_path, monkeypatch):
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    write_exercises(tmp_path)
    nb = nbformat.read(tmp_path / "walkthrough.ipynb", as_version=4)
    ex1_grade = _code_cell(nb, "print(jn.grade(backward, exercise=1, name=spec).format())")
    ex1_cmp = _code_cell(nb, "cmp(name, yours[name])")
    ex2_grade = _code_cell(nb, 'jn.load_function("ex2_cross_entropy.py:cross_entropy_backward")')
    ex4 = _code_cell(nb, "def sgd_step(")
    client = NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        t0 = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        print(f"the walkthrough ran in {time.perf_counter() - t0:.1f} s")
        outputs = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
        assert "0 of 26 written" in _text(nb.cells[ex1_grade])  # as the learner left it
        assert "nothing written yet" in _text(nb.cells[ex1_cmp])
        for name in ("h", "W2", "b2"):  # the matmul's backward by its shapes, through cmp
            assert re.search(rf"^{name} +\| exact: \w+ +\| approximate: True ", outputs, re.M)
        assert "0 of 1 written" in _text(nb.cells[ex2_grade])
        fallback = _text(nb.cells[ex4])
        assert (
            "ex1_backward.py is not complete and right yet (0 of 26 written): "
            "training on jaxninja's fused backward instead"
        ) in fallback
        assert "2000 steps in" in fallback and "\nval 2." in fallback  # exercise 4 trained
        assert any(
            o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", [])
        )

        # exercise 2 edited on disk, right and then wrong: each re-run grades the file as it is
        t0 = time.perf_counter()
        ex2 = tmp_path / "ex2_cross_entropy.py"
        blank = ex2.read_text()
        for answer, verdict in [
            (EX2_RIGHT, "OK: 1 of 1 written, all right in 2 cases"),
            (EX2_RIGHT.replace("/ n", "/ 32"), "FAILED: 1 of 1 written; in case 2 (batch 5"),
        ]:
            ex2.write_text(blank.replace("dlogits = ...  # TODO", f"dlogits = {answer}"))
            client.execute_cell(nb.cells[ex2_grade], ex2_grade)
            assert verdict in _text(nb.cells[ex2_grade]), _text(nb.cells[ex2_grade])
        assert "32 written in by hand" in _text(nb.cells[ex2_grade])

        # exercise 1 filled with the solution: cmp shows every gradient; exercise 4 trains on it
        ex1 = tmp_path / "ex1_backward.py"
        ex1.write_text(fill(ex1.read_text(), solution_blocks()))
        client.execute_cell(nb.cells[ex1_cmp], ex1_cmp)
        cmp_lines = _text(nb.cells[ex1_cmp]).splitlines()
        assert len(cmp_lines) == 26 and all("approximate: True" in x for x in cmp_lines), cmp_lines
        client.execute_cell(nb.cells[ex4], ex4)
        yours = _text(nb.cells[ex4])
        assert "ex1_backward.py is complete and right (OK: 26 of 26 written" in yours, yours
        assert "): training on your backward" in yours, yours
        assert "2000 steps in" in yours
        # the same run (initialisation, batches) on another derivation of the same gradients
        for a, b in zip(_last_loss_and_val(yours), _last_loss_and_val(fallback), strict=True):
            assert abs(a - b) < 0.02, (yours, fallback)
        print(f"the re-runs took {time.perf_counter() - t0:.1f} s")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wavenet_walkthrough_runs_then_regrades_and_trains_on_the_edit(
    tmp_path, names_path, monkeypatch
):
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    write_exercises(tmp_path)
    nb = nbformat.read(tmp_path / "wavenet_walkthrough.ipynb", as_version=4)
    grade_cell = _code_cell(nb, "print(jn.grade(ex5, exercise=5, name=spec).format())")
    train_cell = _code_cell(nb, "def sgd_step(")
    client = NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        t0 = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        print(f"the WaveNet walkthrough ran in {time.perf_counter() - t0:.1f} s")
        outputs = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
        assert outputs.count("approximate: True") == 26  # the stack's backward against jax.grad
        assert "dx is dout.reshape(x.shape): True" in outputs
        assert "NOT STARTED: 0 of 12 written" in _text(nb.cells[grade_cell])
        fallback = _text(nb.cells[train_cell])
        assert "ex5_wavenet.py is not complete and right yet (NOT STARTED" in fallback, fallback
        assert "training on jaxninja's layers" in fallback and "300 steps in" in fallback

        # the solution written into the file: the re-run grades it, and trains on it
        t0 = time.perf_counter()
        ex5 = tmp_path / "ex5_wavenet.py"
        ex5.write_text(fill_ex5(ex5.read_text()))
        client.execute_cell(nb.cells[grade_cell], grade_cell)
        graded = _text(nb.cells[grade_cell])
        assert "OK: 12 of 12 written, all right in 2 cases" in graded, graded
        client.execute_cell(nb.cells[train_cell], train_cell)
        yours = _text(nb.cells[train_cell])
        assert "ex5_wavenet.py is complete and right (OK: 12 of 12 written" in yours, yours
        assert "): training on your backward" in yours, yours
        # the same run (initialisation, batches) on another derivation of the same gradients
        for a, b in zip(_last_loss_and_val(yours), _last_loss_and_val(fallback), strict=True):
            assert abs(a - b) < 0.01, (yours, fallback)
        print(f"the re-runs took {time.perf_counter() - t0:.1f} s")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_gpt_walkthrough_runs_then_regrades_the_edit(tmp_path, names_path, monkeypatch):
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    write_exercises(tmp_path)
    nb = nbformat.read(tmp_path / "gpt_walkthrough.ipynb", as_version=4)
    grade_cell = _code_cell(nb, "print(jn.grade(ex6, exercise=6, name=spec).format())")
    client = NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        t0 = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        print(f"the GPT walkthrough ran in {time.perf_counter() - t0:.1f} s")
        outputs = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
        assert outputs.count("approximate: True") == 89  # the GPT's backward against jax.grad
        assert "dpos (1, 2, 2) is dx summed over the batch: True" in outputs
        assert "NOT STARTED: 0 of 31 written" in _text(nb.cells[grade_cell])

        # the solution written into the file: the re-run grades it
        t0 = time.perf_counter()
        ex6 = tmp_path / "ex6_transformer.py"
        ex6.write_text(fill_ex6(ex6.read_text()))
        client.execute_cell(nb.cells[grade_cell], grade_cell)
        graded = _text(nb.cells[grade_cell])
        assert "OK: 31 of 31 written, all right in 2 cases" in graded, graded
        print(f"the re-run took {time.perf_counter() - t0:.1f} s")
