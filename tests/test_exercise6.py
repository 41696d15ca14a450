"""Exercise 6 (part 6, makemore's GPT): the learner's LayerNorm and causal self-attention
backwards in every seat of the GPT, as they would grade them: the solution is right in every
seat at makemore's sizes, a blank file is NOT STARTED, one function can be graded alone, and
the known mistakes (LayerNorm's third term dropped, n-1 where it uses n, the weight taken out of
the means, softmax's backward summed over the wrong axis, gradient leaking into masked
positions, 1/sqrt(hs) forgotten, dv without its transpose, a parameter's gradient of the wrong
shape) fail where they enter, with their hint.

The solution is graded at makemore's sizes in float32 with PyTorch's way; the rest at small sizes
(one Block of 2 heads, n_embd 16) and, for the mistakes, in float64 alone (one trace of the
learner's GPT a grade), to keep them short.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jaxninja import grade, load_module
from jaxninja.cli import main
from jaxninja.errors import UsageError
from jaxninja.learn.files import GRADE_COMMANDS, source
from jaxninja.parity.sides import torch_available
from tests.exercise_fill import fill_ex6

SMALL = {"n_layer": 1, "n_embd": 16, "n_head": 2}
# the rows the two functions write at SMALL, in the backward's order
MINE = (
    "ln_f.weight", "ln_f.bias", "h.0", "h.0.ln_2.weight", "h.0.ln_2.bias", "h.0.attn.c_proj",
    "h.0.attn.c_attn", "h.0.ln_1.weight", "h.0.ln_1.bias", "wte",
)  # fmt: skip


@pytest.fixture
def folder(tmp_path, names_path, monkeypatch) -> Path:
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ex6_transformer.py").write_text(source("ex6_transformer.py").read_text())
    return tmp_path


def _filled(folder: Path, old: str | None = None, new: str = "", **fill) -> Path:
    """ex6_transformer.py filled with the solution (`only`: of those functions), `old` -> `new`."""
    text = fill_ex6((folder / "ex6_transformer.py").read_text(), **fill)
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = folder / "ex6_filled.py"
    path.write_text(text)
    return path


def test_the_solution_is_right_in_every_seat_at_makemores_sizes(folder, capsys):
    """float32, with PyTorch's way where it is installed: 31 rows (ln_f's 3, and each of the 4
    Blocks' ln_2, attention and ln_1: 3 + 1 + 3), in 2 cases."""
    path = _filled(folder)
    assert main(["check", "--candidate", str(path), "--exercise", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "OK: 31 of 31 written, all right in 2 cases", result["verdict"]
    assert result["written"][:4] == ["ln_f.weight", "ln_f.bias", "h.3", "h.3.ln_2.weight"]
    assert result["written"][-3:] == ["h.0.ln_1.weight", "h.0.ln_1.bias", "wte"]
    cases = result["cases"]
    assert [(c["batch_size"], c["seed"], c["model"]) for c in cases] == [
        (32, 0, "gpt"),
        (5, 1, "gpt"),
    ]
    assert (cases[0]["skipped"] == []) == torch_available()
    assert not any(row["cannot_tell"] for row in cases[0]["rows"])  # float32 judges every row


def test_the_blank_file_is_not_started(folder):
    assert GRADE_COMMANDS["ex6_transformer.py"] in (folder / "ex6_transformer.py").read_text()
    result = grade(load_module("ex6_transformer.py")[0], 6, with_torch=False, **SMALL)
    assert not result.started and result.written == []
    out = result.format()
    assert out.splitlines()[-1].startswith("NOT STARTED: 0 of 10 written"), out
    assert "h.0.attn.c_attn" in out and "not written" in out


@pytest.mark.parametrize(
    ("only", "written"),
    [
        (("layernorm_backward",), [r for r in MINE if r != "h.0.attn.c_attn"]),
        (("attention_backward",), ["h.0.attn.c_attn"]),
    ],
)
def test_one_function_is_graded_alone(folder, only, written):
    result = grade(load_module(str(_filled(folder, only=only)))[0], 6, with_torch=False, **SMALL)
    assert result.ok and result.written == written, result.format()
    assert result.verdict().endswith(f"all right in 2 cases ({10 - len(written)} to go)")


def test_dv_alone_is_graded_jaxningas_dq_and_dk_standing_in(folder):
    path = _filled(folder, "    dq = dscores @ k", "    dq = ...", only=("attention_backward",))
    text = path.read_text().replace("    dk = dscores.swapaxes(-1, -2) @ q", "    dk = ...")
    path.write_text(text)
    result = grade(load_module(str(path))[0], 6, with_torch=False, **SMALL)
    assert result.ok and result.written == ["h.0.attn.c_attn"], result.format()


MISTAKES = [
    "third term", "n-1", "weight out of the means", "softmax axis", "masked leak",
    "1/sqrt(hs)", "dv transpose", "keepdims", "axis 0 alone", "dq shape",
]  # fmt: skip
DX = "    dx = rstd * (dnorm - dnorm.mean(-1, keepdims=True) - xhat * (dnorm * xhat).mean(-1, keepdims=True))"  # noqa: E501


@pytest.mark.parametrize(
    ("old", "new", "verdict", "hint"),
    [
        (
            " - xhat * (dnorm * xhat).mean(-1, keepdims=True))",
            ")",
            "first wrong tensor: h.0: dh.0 is off by",
            "dh.0 (ln_f's dx): the third term is missing",
        ),
        (
            "(dnorm * xhat).mean(-1, keepdims=True))",
            "(dnorm * xhat).sum(-1, keepdims=True) / (xhat.shape[-1] - 1))",
            "first wrong tensor: h.0:",
            "no n-1 anywhere",
        ),
        (  # BatchNorm's expression carried over: the weight out of the sums
            "    dnorm = dout * weight  # (B, T, C)\n" + DX,
            "    dnorm = dout\n" + DX.replace("rstd * (", "weight * rstd * ("),
            "first wrong tensor: h.0:",
            "unlike BatchNorm's gamma it cannot come out of them",
        ),
        (
            "(datt * att).sum(-1, keepdims=True)",
            "(datt * att).sum(-2, keepdims=True)",
            "first wrong tensor: h.0.attn.c_attn",
            "(h.0.attn: dq and dk wrong): softmax's backward sums datt * att over the axis",
        ),
        (
            "att * (datt - (datt * att).sum(-1, keepdims=True))",
            "att * datt - (datt * att).sum(-1, keepdims=True)",
            "first wrong tensor: h.0.attn.c_attn",
            "the gradient leaks into masked positions",
        ),
        (
            "    dscores = dscores * (1.0 / math.sqrt(q.shape[-1]))\n",
            "",
            "first wrong tensor: h.0.attn.c_attn",
            "the same 1/sqrt(hs) (hs = 8), to dq and dk",
        ),
        (
            "    dv = att.swapaxes(-1, -2) @ dy",
            "    dv = att @ dy",
            "first wrong tensor: h.0.attn.c_attn",
            "(h.0.attn: dv wrong): y = att @ v, so dv = att^T @ dy",
        ),
        (
            "dweight = (dout * xhat).sum((0, 1))",
            "dweight = (dout * xhat).sum((0, 1), keepdims=True)",
            "shape error: ln_f.weight: yours: dln_f.weight has shape (1, 1, 16), ln_f.weight is",
            "dweight has weight's shape, (16,): sum without keepdims",
        ),
        (
            "dbias = dout.sum((0, 1))",
            "dbias = dout.sum(0)",
            "shape error: ln_f.bias",
            "dbias sums over (0, 1), B and T, to weight's shape (16,), not over axis 0 alone",
        ),
        (
            "    dq = dscores @ k",
            "    dq = dscores",
            "shape error: h.0.attn.c_attn",
            "each must have q's shape, (32, 2, 16, 8); one of yours is (32, 2, 16, 16)",
        ),
    ],
    ids=MISTAKES,
)
def test_a_mistake_is_named_where_it_enters_with_its_hint(folder, old, new, verdict, hint):
    path = _filled(folder, old, new)
    result = grade(load_module(str(path))[0], 6, with_torch=False, dtype="float64",
                   batch_size=32, seed=0, **SMALL)  # fmt: skip
    assert not result.ok and result.started
    assert verdict in result.verdict(), result.verdict()
    assert hint in (result.hint() or ""), result.format()
    assert f"hint: {result.hint()}" in result.format()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--candidate", "ex6_transformer.py:layernorm_backward", "--exercise", "6"],
            "name the file alone, ex6_transformer.py: exercise 6 looks up both its functions",
        ),
        (["--exercise", "6"], "--candidate PATH.py --exercise 5|6"),
        (["--candidate", "other.py", "--exercise", "6"], "other.py has no function"),
        (["--candidate", "arity.py", "--exercise", "6"], "attention_backward takes"),
    ],
    ids=["a function named", "no candidate", "a function missing", "arity"],
)
def test_bad_input_is_one_line(folder, capsys, args, message):
    (folder / "other.py").write_text("def layernorm_backward(dout, xhat, rstd, weight):\n    ...\n")
    (folder / "arity.py").write_text(
        "def layernorm_backward(dout, xhat, rstd, weight):\n    ...\n"
        "def attention_backward(dy, q, k, v):\n    ...\n"
    )
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_two_values_where_three_are_due_is_one_line(folder):
    (folder / "values.py").write_text(
        "def layernorm_backward(dout, xhat, rstd, weight):\n    return dout, dout\n"
        "def attention_backward(dy, q, k, v, att):\n    ...\n"
    )
    signature = "layernorm_backward(dout, xhat, rstd, weight) -> (dx, dweight, dbias)"
    message = f"exercise 6: {signature}, but yours returned 2 values"
    with pytest.raises(UsageError, match=re.escape(message)):
        grade(load_module("values.py")[0], 6, with_torch=False, **SMALL)
