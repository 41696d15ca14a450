"""The grader: a learner's function in the seat of exercise 1, 2 or 3, as they would use it.

The exercise files are filled programmatically from the project's own solution (right), left
blank (nothing written), partly filled, or filled with a known mistake. Most grades run without
PyTorch's ways to keep the suite short; one runs them all.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxninja import grade, load_function
from jaxninja.cli import main
from jaxninja.errors import UsageError
from jaxninja.learn.files import (
    EXERCISE_FILES,
    GRADE_COMMANDS,
    NOTEBOOKS,
    source,
    write_exercises,
)
from jaxninja.models.mlp import GRAD_ORDER
from tests.exercise_fill import filled_ex1, solution_blocks


@pytest.fixture
def folder(tmp_path, names_path, monkeypatch) -> Path:
    """A learner's folder, written by `jaxninja exercises`, the data found through the env."""
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    write_exercises(tmp_path / "ex")
    return tmp_path / "ex"


def _ex1(folder: Path, old: str | None = None, new: str = "", only=GRAD_ORDER):
    path = filled_ex1(folder, (folder / "ex1_backward.py").read_text(), only)
    if old is not None:
        text = path.read_text()
        assert text.count(old) == 1, old
        path.write_text(text.replace(old, new))
    return load_function(f"{path}:backward")[0]


def test_the_filled_exercise_1_is_right_in_every_case_and_every_way(folder):
    result = grade(_ex1(folder), 1)  # with PyTorch's ways, where installed
    assert result.ok and result.written == list(GRAD_ORDER)
    assert [(r.batch_size, r.seed) for r in result.reports] == [(32, 0), (5, 1)]
    assert result.verdict() == "OK: 26 of 26 written, all right in 2 cases"


def test_an_unfilled_file_has_written_nothing(folder):
    fn, _ = load_function(f"{folder / 'ex1_backward.py'}:backward")
    result = grade(fn, 1, with_torch=False)
    assert result.reports[0].skipped == ["torch", "torch manual"]  # said, not silently left out
    assert not result.ok and not result.started and result.written == []  # not "OK"
    assert result.verdict().startswith("NOT STARTED: 0 of 26 written: nothing to grade yet")
    assert "not written" in result.format()


def test_partial_work_grades_what_is_there(folder):
    result = grade(_ex1(folder, only=GRAD_ORDER[:7]), 1, with_torch=False)
    assert result.ok
    assert result.verdict() == "OK: 7 of 26 written, all right in 2 cases (19 to go)"


@pytest.mark.parametrize(
    ("old", "new", "first", "case", "hint"),
    [
        (  # the mean term's 1/n as 1/(n-1)
            "dhprebn = dbndiff + 1.0 / n *",
            "dhprebn = dbndiff + 1.0 / (n - 1) *",
            "first wrong tensor: hprebn",
            "case 1",
            "the same amount in every example",
        ),
        (
            "dbnmeani = -dbndiff.sum(0, keepdims=True)",
            "dbnmeani = -dbndiff.sum(0)",
            "shape error: bnmeani: yours: dbnmeani has shape (64,), bnmeani is (1, 64)",
            "case 1",
            "keepdims=True",
        ),
        (  # the batch size written in by hand: right at 32 only
            "set(-1.0 / n)",
            "set(-1.0 / 32)",
            "first wrong tensor: logprobs",
            "case 2",
            "times 5/32 at batch 5: a batch size of 32 written in by hand",
        ),
        (
            "1.0 / (n - 1) * jnp.ones_like(bndiff2)",
            "1.0 / n * jnp.ones_like(bndiff2)",
            "first wrong tensor: bndiff2",
            "case 1",
            "times 31/32 at batch 32: Bessel's correction",
        ),
        (".at[Xb].add(demb)", ".at[Xb].set(demb)", "wrong tensor: C", "case 1", ".at[Xb].add"),
        ("db1 = dhprebn.sum(0)", "db1 = dhprebn.sum(0) + 1e-3", "tensor: b1", "case 1", "zero in"),
    ],
)
def test_a_mistake_is_named_where_it_enters_with_a_hint(folder, old, new, first, case, hint):
    result = grade(_ex1(folder, old, new), 1, with_torch=False)
    assert not result.ok
    verdict = result.verdict()
    assert first in verdict, verdict
    assert f"in {case} " in verdict, verdict
    assert hint in result.format(), result.format()


def test_a_scale_hint_needs_one_scale():
    """A gradient much smaller than the right one is that one times r only if it is: a
    learner's dprobs off by a factor of probs squared once got "times 0.0001" (a new user's
    trial)."""
    from jaxninja.learn.hints import _scale_hint

    ref = np.random.default_rng(0).standard_normal((32, 27))
    assert "times 2 at batch 32" in _scale_hint("probs", 2 * ref, ref, 32)
    assert _scale_hint("probs", 1e-4 * ref, ref, 32).endswith("times 0.0001")
    assert _scale_hint("probs", 1e-5 * ref**3, ref, 32) is None


def test_a_constant_error_blames_the_batch_mean_only_in_dhprebn():
    """dprobs + 0.01 was told to check "the term through the batch mean (1/n, not 1/(n-1))"
    (a new user's trial): only dhprebn has that term."""
    from jaxninja.learn.hints import _broadcast_hint

    ref = np.random.default_rng(0).standard_normal((32, 64))
    bnraw = np.random.default_rng(1).standard_normal((32, 64))
    assert "the same amount in every example" in _broadcast_hint("hprebn", ref + 0.01, ref, bnraw)
    assert _broadcast_hint("probs", ref + 0.01, ref, bnraw) is None
    assert _broadcast_hint("bnraw", ref + 0.5 * bnraw, ref, bnraw) is None


def test_exercises_2_and_3_right_and_unfilled(folder):
    answers = {
        2: ("ex2_cross_entropy.py", "cross_entropy_backward", "dlogits_fused(logits, Yb)"),
        3: ("ex3_batchnorm.py", "batchnorm_backward",
            "dhprebn_fused(dhpreact, bngain, bnvar_inv, bnraw)"),
    }  # fmt: skip
    for exercise, (name, fn_name, answer) in answers.items():
        path = folder / name
        blank = grade(load_function(f"{path}:{fn_name}")[0], exercise, with_torch=False)
        assert not blank.started, blank.verdict()
        assert blank.verdict().startswith("NOT STARTED: 0 of 1 written"), blank.verdict()
        helper = answer.split("(", 1)[0]
        filled = path.read_text().replace("= ...  # TODO", f"= {answer}")
        filled = filled.replace(
            "import jax\n", f"import jax\nfrom jaxninja.models.mlp_backward import {helper}\n"
        )
        (folder / f"filled_{name}").write_text(filled)
        right = grade(load_function(f"{folder / f'filled_{name}'}:{fn_name}")[0], exercise)
        assert right.ok and right.verdict() == "OK: 1 of 1 written, all right in 2 cases"


def test_each_grade_traces_the_function_afresh(folder):
    """A jitted function compiled on the first grade must not answer for an edited one."""
    state = {"scale": 1.0}
    blocks = solution_blocks()

    def backward(params, v, Xb, Yb):
        n = Xb.shape[0]
        return {"logprobs": np.float32(state["scale"]) * -1.0 / n * _onehot(v["logprobs"], Yb)}

    assert grade(backward, 1, with_torch=False, batch_size=8).ok
    state["scale"] = 2.0
    assert not grade(backward, 1, with_torch=False, batch_size=8).ok
    assert blocks["logprobs"]  # the solution's line is the one imitated here


def _onehot(like, Yb):
    import jax.numpy as jnp

    return jnp.zeros_like(like).at[jnp.arange(like.shape[0]), Yb].set(1.0)


# --- bad input ---------------------------------------------------------------------------------


def _write(folder: Path, body: str) -> Path:
    path = folder / "mine.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("body", "spec", "message"),
    [
        ("", "missing.py:f", "no such file: missing.py"),
        ("def g(): pass\n", "mine.py:f", "mine.py has no function 'f' (it defines g)"),
        (
            "import jax\n1 / 0\n",
            "mine.py:f",
            "importing mine.py failed: mine.py:2: ZeroDivisionError",
        ),
        ("def f(:\n", "mine.py:f", "importing mine.py failed: mine.py:1: SyntaxError"),
        ("", "no_such_module:f", "no module named 'no_such_module'"),
        ("", "mine.py", "name a function as PATH.py:FUNCTION or module:function"),
    ],
)
def test_loading_a_function_fails_in_one_line(folder, monkeypatch, body, spec, message):
    monkeypatch.chdir(folder)
    _write(folder, body)
    with pytest.raises(UsageError) as e:
        load_function(spec)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("body", "exercise", "message"),
    [
        (
            """\
            def f(params, v, Xb, Yb):
                x = v["logprobs"]
                x[0, 0] = 1.0
                return {}
            """,
            1,
            "exercise 1: mine.py:3: `x[0, 0] = 1.0` raised TypeError",
        ),
        ("def f(logits):\n    return logits\n", 2, "f takes (logits); exercise 2 calls it with 2"),
        ("def f(p, v, X, Y):\n    return [1]\n", 1, "returns a dict of gradients keyed by tensor"),
        ("def f(logits, Yb):\n    return 'x'\n", 2, "exercise 2 returns one array"),
        (
            "def f(p, v, X, Y):\n    return {'dlogprobs': v['logprobs']}\n",
            1,
            "the key 'dlogprobs' (the key of dlogprobs is 'logprobs')",
        ),
        ("def f(p, v, X, Y):\n    return {'probs': 'x'}\n", 1, "dprobs is a str, not an array"),
    ],
)
def test_bad_functions_fail_in_one_line(folder, body, exercise, message):
    fn, _ = load_function(f"{_write(folder, body)}:f")
    with pytest.raises(UsageError) as e:
        grade(fn, exercise, with_torch=False)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("expr", "verdict", "message"),
    [
        ("jnp.full_like(logits, jnp.nan)", "nonfinite", "NaN or inf"),
        ("jnp.zeros(logits.shape, jnp.float16)", "dtype", "is float16, logits is float32"),
        ("jnp.zeros(logits.shape[0])", "shape", "has shape (32,), logits is (32, 27)"),
    ],
)
def test_bad_values_are_failing_rows(folder, expr, verdict, message):
    body = f"import jax.numpy as jnp\ndef f(logits, Yb):\n    return {expr}\n"
    result = grade(load_function(f"{_write(folder, body)}:f")[0], 2, with_torch=False)
    first = result.reports[0].first_failure()
    assert not result.ok and first["verdict"] == verdict and message in first["message"]


# --- the command line ---------------------------------------------------------------------------


def test_check_candidate_cli(folder, capsys):
    right = _ex1(folder)
    assert right  # ex1_filled.py written
    args = ["check", "--candidate", f"{folder / 'ex1_filled.py'}:backward", "--exercise", "1"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["written"] == list(GRAD_ORDER) and len(report["cases"]) == 2
    assert main([*args, "--batch-size", "7", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "case 1 of 1: batch 7, seed 3, float32: 26 written, right" in out
    assert max(map(len, out.splitlines()[1:])) <= 100  # all but the line naming the file
    _ex1(folder, "dbnmeani = -dbndiff.sum(0, keepdims=True)", "dbnmeani = -dbndiff.sum(0)")
    assert main(args) == 1
    assert "shape error: bnmeani" in capsys.readouterr().out
    assert main(["check", "--exercise", "1"]) == 2
    assert "--candidate PATH.py:FUNCTION --exercise 1|2|3, or --candidate PATH.py --exercise 5" in (
        capsys.readouterr().err
    )


def test_exercises_cli_writes_then_keeps(tmp_path, capsys):
    assert main(["exercises", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in GRADE_COMMANDS.values())
    written = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert written == sorted([*EXERCISE_FILES, *NOTEBOOKS.values()])
    for name in EXERCISE_FILES:  # shipped as package data; no solution in them
        text = (tmp_path / "new" / name).read_text()
        assert text == source(name).read_text() and "# TODO" in text
        assert GRADE_COMMANDS[name] in text  # the docstring says how to grade it
    mine = tmp_path / "new" / "ex1_backward.py"
    mine.write_text("my work")
    (tmp_path / "new" / "ex3_batchnorm.py").unlink()  # deleted by mistake: to be had back
    assert main(["exercises", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "wrote ex3_batchnorm.py into" in out
    kept = "kept ex1_backward.py, ex2_cross_entropy.py, ex5_wavenet.py, ex6_transformer.py, "
    assert kept + "walkthrough.ipynb" in out
    assert mine.read_text() == "my work"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == written  # no temp files left


# --- exercise 4 on your own gradients: train --backward ----------------------------------------


def test_training_on_the_solution_copied_follows_the_built_in_run(folder, splits, tmp_path):
    from jaxninja.config import ModelConfig, TrainConfig
    from jaxninja.models.mlp import split_loss, to_device
    from jaxninja.training.loop import train

    mc = ModelConfig(vocab_size=27, n_hidden=64)
    tc = TrainConfig(steps=300, chunk_steps=100, checkpoint_every=300, lr_decay_step=150)
    runs = [
        train(mc, tc, splits.data["train"], splits.vocab, tmp_path / name, progress=False,
              backward=backward)
        for name, backward in (("built-in", None), ("yours", _ex1(folder)))
    ]  # fmt: skip
    losses = [
        [split_loss(to_device(r.checkpoint.params), r.checkpoint.bn["bn"], *splits.data[s]) for s in
         ("train", "val", "test")]
        for r in runs
    ]  # fmt: skip
    assert np.allclose(losses[0], losses[1], rtol=0, atol=1e-4), losses
    assert np.allclose(runs[0].checkpoint.losses, runs[1].checkpoint.losses, rtol=0, atol=1e-4)


def test_train_backward_refuses_a_wrong_function_before_training(folder, tmp_path, capsys):
    _ex1(folder, "dcounts = dcounts + dcounts_sum", "dcounts = dcounts")
    args = [
        "train",
        "--steps",
        "100",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
        "--n-hidden",
        "64",
    ]
    assert main([*args, "--backward", f"{folder / 'ex1_filled.py'}:backward"]) == 2
    err = capsys.readouterr().err
    assert "is refused: FAILED: 26 of 26 written; in case 1" in err and "counts" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    _ex1(folder, only=GRAD_ORDER[:7])
    assert main([*args, "--backward", f"{folder / 'ex1_filled.py'}:backward"]) == 2
    assert "7 parameters, and it does not write dC, dW1, db1, dW2, db2, dbngain, dbnbias" in (
        capsys.readouterr().err
    )
