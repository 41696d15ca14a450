"""The command line as a user runs it: outputs, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from jaxninja.check.mlp import WAYS
from jaxninja.cli import main
from jaxninja.parity.table import THREE_WAYS


def test_data_show(names_path, capsys):
    assert main(["data", "--data", str(names_path)]) == 0
    out = capsys.readouterr().out
    assert "vocab_size: 27" in out
    assert "182625 examples" in out and "22655 examples" in out and "22866 examples" in out


def test_check_table(names_path, capsys):
    assert main(["check", "--data", str(names_path), "--n-hidden", "16", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("tensor") and all(w in lines[0] for w in THREE_WAYS)
    assert sum(1 for line in lines if line.startswith("bnvar_inv ")) == 1
    assert lines[-1].startswith("OK: 26 tensors")
    assert max(map(len, lines)) <= 100  # a 100-column terminal


def test_check_wide_has_every_way(names_path, capsys):
    args = ["check", "--data", str(names_path), "--n-hidden", "16", "--batch-size", "8", "--wide"]
    assert main(args) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert all(f"| {w} " in header + " " for w in WAYS)


def test_check_float32_at_batch_2_is_no_false_alarm(names_path, capsys):
    """BatchNorm over 2 examples is ill-conditioned: float32 is judged against that noise."""
    assert main(["check", "--data", str(names_path), "--seed", "7", "--batch-size", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: 26 tensors")


def test_check_json(names_path, capsys):
    args = ["check", "--data", str(names_path), "--dtype", "float64", "--json", "--seed", "3"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["dtype"] == "float64" and report["model"] == "mlp"
    assert len(report["rows"]) == 26
    row = report["rows"][0]
    assert row["name"] == "logprobs" and row["shape"] == [32, 27]
    assert set(row["jax.grad"]) == {
        "verdict", "message", "shapes", "exact", "maxdiff", "error", "bound",
    }  # fmt: skip
    assert row["jax.grad"]["verdict"] == "ok" and row["jax.grad"]["shapes"] == [[32, 27]] * 2
    assert report["first_failure"] is None


def test_check_without_torch(names_path, capsys, monkeypatch):
    monkeypatch.setattr("jaxninja.check.sources.torch_available", lambda: False)
    assert main(["check", "--data", str(names_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and "torch" in report["skipped"] and "torch" not in report["losses"]
    assert all(r["torch"] is None and r["jax.grad"]["verdict"] == "ok" for r in report["rows"])
    assert main(["check", "--data", str(names_path)]) == 0
    assert "skipped: torch, torch manual, grad~torch (PyTorch is not installed" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--batch-size", "1"], "batch size must be >= 2"),
        (["check", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["check", "--n-hidden", "0"], "--n-hidden: must be >= 1"),
        (["check", "--block-size", "-2"], "--block-size: must be >= 1"),
        (["check", "--batch-size", "x"], "'x' is not an integer"),
        (["data", "--data", "/nonexistent/words.txt"], "not found: pass --data PATH"),
        (
            ["--bogus"],
            "jaxninja: error: unrecognized arguments: --bogus; give a command first: data, check, "
            "train, exercises, sample, eval",
        ),
        ([], "jaxninja: error: give a command first: data, check, train"),
        (["train", "--bogus"], "jaxninja train: error: unrecognized arguments: --bogus"),
        (["--bogus", "data"], "jaxninja data: error: unrecognized arguments: --bogus"),
        # an unknown flag is named before a missing required argument, or a known flag's bad value
        (["eval", "--bogus"], "jaxninja eval: error: unrecognized arguments: --bogus"),
        (["--bogus", "sample"], "jaxninja sample: error: unrecognized arguments: --bogus"),
        (["exercises", "--bogus"], "jaxninja exercises: error: unrecognized arguments: --bogus"),
        (
            ["sample", "--checkpoint", "c", "-n", "x", "--bogus"],
            "jaxninja sample: error: unrecognized arguments: --bogus",
        ),
        (["eval"], "jaxninja eval: error: the following arguments are required: --checkpoint"),
        (
            ["sample", "--checkpoint", "c", "--temperature", "inf"],
            "--temperature: must be a finite number > 0, got inf",
        ),
        (["train", "--lr", "nan"], "--lr: must be a finite number > 0, got nan"),
        (
            ["check", "--exercise", "7"],
            "--exercise: must be 1, 2, 3, 5 or 6, got '7' (exercise 4 is jaxninja train "
            "--backward)",
        ),
    ],
)
def test_bad_input_is_one_line(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors exit from the parser
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and out == "", out


def test_check_help_lists_the_exercises_and_the_exit_codes(capsys):
    """The exercises are 1, 2, 3, 5 and 6 wherever they are listed; exit 0 with --candidate means
    every row written so far is right, not that the exercise is done."""
    with pytest.raises(SystemExit) as e:
        main(["check", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--exercise {1,2,3,5,6}" in text and "(exercise 4 is train --backward)" in text
    codes = (
        "exit codes: 0 every row right (with --candidate: all written rows right, so a partly "
        "written exercise exits 0 too); 1 a row is wrong; 2 bad input (one line says what); 3, "
        "with --candidate, nothing written yet"
    )
    assert codes in text, text


def test_a_real_process_fails_in_one_line():
    """The one subprocess: what a shell sees, exit code and stderr, through python -m."""
    r = subprocess.run(
        [sys.executable, "-m", "jaxninja", "check", "--batch-size", "1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("jaxninja: error: batch size must be >= 2")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_split_too_small_for_a_batch(tmp_path, capsys):
    f = tmp_path / "w.txt"
    f.write_text("ab\ncd\n")
    assert main(["check", "--data", str(f)]) == 2
    assert "fewer than one batch of 32" in capsys.readouterr().err
