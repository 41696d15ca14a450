"""The learner's edit-and-grade loop: references computed once and kept (in the process and on
disk, a bad entry recomputed), JAX's surprises answered with a hint, a function that never
returns or calls sys.exit stopped in one line, the module form from the learner's folder, and an
unfilled exercise that is not called OK."""

import os
from pathlib import Path

import numpy as np
import pytest

from jaxninja import grade, load_function
from jaxninja.cli import main
from jaxninja.learn import references
from jaxninja.learn.files import write_exercises
from tests.exercise_fill import filled_ex1

RIGHT_EX2 = """\
import jax.numpy as jnp

def f(logits, Yb):
    n = logits.shape[0]
    probs = jnp.exp(logits - logits.max(1, keepdims=True))
    probs = probs / probs.sum(1, keepdims=True)
    {line}
"""


@pytest.fixture
def folder(tmp_path, names_path, monkeypatch) -> Path:
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ex2(folder: Path, line: str, name: str = "mine.py") -> Path:
    path = folder / name
    path.write_text(RIGHT_EX2.format(line=line))
    return path


def graded(path: Path, exercise: int = 2, name: str = "f"):
    return grade(load_function(f"{path}:{name}")[0], exercise, with_torch=False)


def test_right_code_is_right(folder):
    result = graded(ex2(folder, "return probs.at[jnp.arange(n), Yb].add(-1.0) / n"))
    assert result.ok and result.notes == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("import numpy as np; return np.exp(logits)", "use jnp, not np, on them"),
        ("return probs.at[range(n), Yb].add(-1.0) / n", "use jnp.arange(n)"),
        ("return probs if probs.sum() > 0 else -probs", "jnp.where for an if"),
        ("import sys; sys.exit(3)", "called sys.exit(3): return the gradients instead"),
    ],
)
def test_jax_surprises_get_a_hint_in_one_line(folder, capsys, line, message):
    path = ex2(folder, line)
    code = main(["check", "--candidate", f"{path}:f", "--exercise", "2"])
    if code == 0 and "range(" in line:
        pytest.skip("this jax (0.8) still takes a range as an index; 0.10 refuses it")
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "at 0x" not in err  # no object addresses


def test_a_printed_tracer_points_to_jax_debug_print(folder, capsys):
    path = ex2(folder, "print(probs)\n    return probs.at[jnp.arange(n), Yb].add(-1.0) / n")
    result = graded(path)
    assert result.ok and "Tracer" in capsys.readouterr().out  # their print still shows
    assert "jax.debug.print" in result.format()


def test_a_function_that_never_returns_is_stopped(folder, capsys):
    path = ex2(folder, "while True:\n        pass")
    args = ["check", "--candidate", f"{path}:f", "--exercise", "2", "--timeout", "0.5"]
    assert main(args) == 2
    assert "still running after 0.5 s and was stopped" in capsys.readouterr().err


def test_the_module_form_works_from_the_learners_folder(folder, capsys):
    write_exercises(folder)
    args = ["check", "--candidate", "ex2_cross_entropy:cross_entropy_backward", "--exercise", "2"]
    assert main(args) == 3  # found beside the learner; nothing written yet
    out = capsys.readouterr().out
    assert "NOT STARTED: 0 of 1 written" in out and "OK" not in out.splitlines()[-1]


def test_not_a_python_file(folder, capsys):
    (folder / "mycode.txt").write_text("def backward(): pass\n")
    assert main(["check", "--candidate", "mycode.txt:backward", "--exercise", "1"]) == 2
    assert "'mycode.txt' is a file, not Python" in capsys.readouterr().err


def test_an_edit_within_the_same_second_is_graded(folder):
    """Same size, same mtime: Python's .pyc cache would serve the old code; the grader compiles
    the source as it is."""
    path = ex2(folder, "return probs.at[jnp.arange(n), Yb].add(-1.0) / n")
    assert graded(path).ok
    stat = path.stat()
    path.write_text(path.read_text().replace("/ n", "* n"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not graded(path).ok
    assert not (folder / "__pycache__").exists()


def test_the_b1_hint_reads_as_one_sentence(folder):
    path = filled_ex1(folder, write_exercises(folder / "ex")[0][0].read_text())
    text = path.read_text().replace("db1 = dhprebn.sum(0)", "db1 = dhprebn.sum(0) + 1e-3")
    path.write_text(text)
    hint = graded(path, 1, "backward").hint()
    assert hint.startswith("db1 is zero in exact arithmetic (BatchNorm subtracts the batch mean")
    assert "off by db1" not in hint and hint.count("db1") == 1, hint


# --- the references: computed once, kept, never trusted when bad ---------------------------------


def test_references_are_computed_once_per_process(folder, monkeypatch):
    path = ex2(folder, "return probs.at[jnp.arange(n), Yb].add(-1.0) / n")
    graded(path)
    calls = []
    monkeypatch.setattr(references, "_compute", lambda *a: calls.append(a))
    assert graded(path).ok and calls == []


def test_the_disk_cache_serves_a_new_process_and_a_bad_entry_is_recomputed(
    folder, names_path, monkeypatch
):
    monkeypatch.setenv(references.CACHE_ENV, str(folder / "cache"))
    monkeypatch.setattr(references, "_memory", {})
    data, sizes = folder / "names.txt", references.Sizes(3, 10, 64, "float32")
    data.write_bytes(names_path.read_bytes())
    first = references.references(data, sizes, 32, 0, False)
    (entry,) = (folder / "cache").iterdir()
    monkeypatch.setattr(references, "_memory", {})  # a new process
    calls = []
    real = references._compute
    monkeypatch.setattr(references, "_compute", lambda *a: calls.append(a) or real(*a))
    again = references.references(data, sizes, 32, 0, False)
    assert calls == [] and np.array_equal(again.sources["fused"]["hprebn"],
                                          first.sources["fused"]["hprebn"])  # fmt: skip
    blob = bytearray(entry.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in a tensor
    for bad in (bytes(blob), b"garbage", b""):
        entry.write_bytes(bad)
        monkeypatch.setattr(references, "_memory", {})
        fresh = references.references(data, sizes, 32, 0, False)
        assert np.array_equal(fresh.sources["jax.grad"]["C"], first.sources["jax.grad"]["C"])
    assert len(calls) == 3 and references._read(entry, entry.stem[6:]) is not None  # rewritten
    with data.open("a") as f:  # other data: another entry
        f.write("zed\n")
    monkeypatch.setattr(references, "_memory", {})
    references.references(data, sizes, 32, 0, False)
    assert len(calls) == 4 and len(list((folder / "cache").iterdir())) == 2


def test_the_cache_can_be_turned_off(folder, monkeypatch):
    monkeypatch.setenv(references.CACHE_ENV, "off")
    assert references.cache_dir() is None
    monkeypatch.setenv(references.CACHE_ENV, str(folder / "c"))
    assert references.cache_dir() == folder / "c"


def test_train_backward_shows_the_hint_with_its_refusal(folder, tmp_path, capsys):
    path = filled_ex1(folder, write_exercises(folder / "ex")[0][0].read_text())
    bessel = "1.0 / (n - 1) * jnp.ones_like(bndiff2)"
    path.write_text(path.read_text().replace(bessel, "1.0 / n * jnp.ones_like(bndiff2)"))
    args = ["train", "--steps", "100", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*args, "--n-hidden", "64", "--backward", f"{path}:backward"]) == 2
    err = capsys.readouterr().err
    assert "is refused: FAILED" in err and "(hint: dbndiff2 is the right tensor times" in err, err
