"""Exercise 5 (part 5, the WaveNet): the learner's FlattenConsecutive and (B, T, C) BatchNorm
backwards in the seats of the stack, as they would grade them: the solution is right in both
dtypes, a blank file is NOT STARTED, one function can be graded alone, and the known mistakes
(batch statistics over axis 0 alone, Bessel, a reshape that does not undo the forward, the
squeezed last stage) fail where they enter, with their hint.

Without PyTorch's ways but in one grade (torch_ref's port of part 5 is checked on its own), to
keep it short; the mistake grades run one case, the notebook's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxninja import grade, load_module
from jaxninja.cli import main
from jaxninja.errors import UsageError
from jaxninja.learn.files import GRADE_COMMANDS, source
from jaxninja.parity.sides import torch_available
from tests.exercise_fill import fill_ex5

MINE = (  # the rows the two functions write, in the backward's order
    "bn3.gamma", "bn3.beta", "linear3", "tanh2", "bn2.gamma", "bn2.beta", "linear2", "tanh1",
    "bn1.gamma", "bn1.beta", "linear1", "embedding",
)  # fmt: skip


@pytest.fixture
def folder(tmp_path, names_path, monkeypatch) -> Path:
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ex5_wavenet.py").write_text(source("ex5_wavenet.py").read_text())
    return tmp_path


def _filled(folder: Path, old: str | None = None, new: str = "", **fill) -> Path:
    """ex5_wavenet.py filled with the solution (`only`: of those functions), `old` -> `new`."""
    text = fill_ex5((folder / "ex5_wavenet.py").read_text(), **fill)
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = folder / "ex5_filled.py"
    path.write_text(text)
    return path


def _grade(path: Path, **kw):
    return grade(load_module(str(path))[0], 5, **{"with_torch": False, **kw})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_solution_is_right_in_every_seat(folder, dtype):
    """float32 with PyTorch's way where torch_ref has part 5 (the references it leaves in the
    disk cache are the ones the notebook's grades use)."""
    with_torch = None if dtype == "float32" else False
    result = _grade(_filled(folder), dtype=dtype, with_torch=with_torch)
    assert result.ok and result.written == list(MINE), result.format()
    torch_ran = result.reports[0].skipped == []
    assert torch_ran == (dtype == "float32" and torch_available())
    assert [(r.batch_size, r.seed, r.dtype) for r in result.reports] == [
        (32, 0, dtype),
        (5, 1, dtype),
    ]
    assert result.verdict() == "OK: 12 of 12 written, all right in 2 cases"
    assert not any(r.cannot_tell() for r in result.reports)  # float32 judges every row


def test_the_blank_file_is_not_started(folder, capsys):
    assert GRADE_COMMANDS["ex5_wavenet.py"] in (folder / "ex5_wavenet.py").read_text()
    assert main(GRADE_COMMANDS["ex5_wavenet.py"].split()[1:]) == 3
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("NOT STARTED: 0 of 12 written"), out
    assert "bn2.gamma" in out and "not written" in out


def test_one_function_is_graded_alone(folder, capsys):
    path = _filled(folder, only=("flatten_consecutive_backward",))
    assert main(["check", "--candidate", str(path), "--exercise", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == ["tanh2", "tanh1", "embedding"] and report["of"] == 12
    assert report["verdict"] == "OK: 3 of 12 written, all right in 2 cases (9 to go)"


COPIED = "    dim = tuple(range(dout.ndim - 1))  # every axis but the channels'"


@pytest.mark.parametrize(
    ("old", "new", "verdict", "hint"),
    [
        (  # exercise 3 copied: the statistics' sums over axis 0, n = B
            COPIED + "\n    n = dout.size // dout.shape[-1]",
            "    dim, n = 0, dout.shape[0]  # as exercise 3",
            "shape error: bn2.gamma: yours: dbn2.gamma has shape (2, 128), bn2.gamma is (128,)",
            "bn2's input is (32, 2, 128): BatchNorm's statistics run over every axis but the "
            "last, (0, 1) here, so dgamma sums over both",
        ),
        (  # the same in dx alone: dgamma and dbeta right
            "    dx = gamma * bnvar_inv / n * (n * dout - dbeta - n / (n - 1) * bnraw * dgamma)",
            "    m, s, sx = dout.shape[0], dout.sum(0), (dout * bnraw).sum(0)\n"
            "    dx = gamma * bnvar_inv / m * (m * dout - s - m / (m - 1) * bnraw * sx)",
            "first wrong tensor: linear2: dlinear2 is off by",
            "dlinear2 (bn2's dx): bn2's input is (32, 2, 128): the forward's statistics run over "
            "(0, 1), n = B*T = 64 values a channel; your sums run over axis 0 alone",
        ),
        (
            "n / (n - 1) * bnraw",
            "bnraw",
            "first wrong tensor: linear3",
            "Bessel's correction",
        ),
        (  # a reshape back that does not undo the forward: the axes swapped
            "    dx = dout.reshape(B, Tn * n, Cn // n)",
            "    dx = dout.reshape(B, Cn // n, Tn * n).transpose(0, 2, 1)",
            "first wrong tensor: tanh2: dtanh2 is off by",
            "dtanh2 holds the right numbers in the wrong places: flatten3's forward only reshapes",
        ),
        (  # the squeezed last stage handed back as it came
            "        dout = dout[:, None, :]",
            "        return dout",
            "shape error: tanh2: yours: dtanh2 has shape (32, 256), tanh2 is (32, 2, 128)",
            "tanh2 is flatten3's input: flatten3's forward squeezed its length-1 time axis",
        ),
    ],
    ids=["exercise 3 copied", "axis 0 in dx", "Bessel", "axes swapped", "squeeze kept"],
)
def test_a_mistake_is_named_where_it_enters_with_its_hint(folder, old, new, verdict, hint):
    result = _grade(_filled(folder, old, new), batch_size=32, seed=0)
    assert not result.ok and result.started
    assert verdict in result.verdict(), result.verdict()
    assert hint in (result.hint() or ""), result.format()
    assert f"hint: {result.hint()}" in result.format()


def test_the_squeezed_stage_forgotten_is_one_line_with_the_hint(folder, capsys):
    path = _filled(folder, "        dout = dout[:, None, :]", "        pass")
    assert main(["check", "--candidate", str(path), "--exercise", "5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "ex5_filled.py:" in err and "`B, Tn, Cn = dout.shape` raised ValueError" in err, err
    assert (
        "(hint: flatten3's forward squeezed its length-1 time axis, so its dout is (32, 256)" in err
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--candidate", "ex5_wavenet.py:batchnorm_backward", "--exercise", "5"],
            "name the file alone, ex5_wavenet.py: exercise 5 looks up both its functions",
        ),
        (
            ["--candidate", "ex5_wavenet.py", "--exercise", "4"],
            "exercise 4 is training on your exercise-1 gradients: jaxninja train --backward",
        ),
        (["--exercise", "5"], "--candidate PATH.py --exercise 5"),
        (["--candidate", "other.py", "--exercise", "5"], "other.py has no function"),
        (["--candidate", "arity.py", "--exercise", "5"], "flatten_consecutive_backward takes"),
    ],
    ids=["a function named", "exercise 4", "no candidate", "a function missing", "arity"],
)
def test_bad_input_is_one_line(folder, capsys, args, message):
    (folder / "other.py").write_text(
        "def flatten_consecutive_backward(dout, n):\n    return dout\n"
    )
    (folder / "arity.py").write_text(
        "def flatten_consecutive_backward(dout):\n    ...\n"
        "def batchnorm_backward(dout, bnraw, bnvar_inv, gamma):\n    ...\n"
    )
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_python_takes_a_mapping_of_the_two_functions(folder):
    module, _ = load_module(str(_filled(folder)))
    fns = {k: getattr(module, k) for k in ("flatten_consecutive_backward", "batchnorm_backward")}
    result = grade(fns, 5, with_torch=False, batch_size=32, seed=0)
    assert result.ok and result.function == "flatten_consecutive_backward, batchnorm_backward"
    with pytest.raises(UsageError, match="has no function batchnorm_backward"):
        grade({"flatten_consecutive_backward": fns["flatten_consecutive_backward"]}, 5)
