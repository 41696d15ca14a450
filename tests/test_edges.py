"""The command line's edges, as issue 18 found them: nothing a user made is overwritten, every bad
input is one line (sizes that cannot fit, unwritable places, non-finite checkpoints), and the
resume and checkpoint messages name what differs and what to do."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from jaxninja.cli import main
from jaxninja.errors import UsageError
from jaxninja.training import checkpoint
from jaxninja.training.loop import train
from jaxninja.training.plot import PLOT
from tests.runs import MC, TC, TC_FLAGS


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run_dir(splits, tmp_path_factory) -> Path:
    """A run of 200 steps with checkpoints at 100 and 200 (the shared run's compiled chunk)."""
    out = tmp_path_factory.mktemp("run")
    train(MC, replace(TC, steps=200), splits.data["train"], splits.vocab, out, progress=False)
    return out


def train_args(names_path, out, *more) -> list[str]:
    return [
        "train",
        "--data",
        str(names_path),
        "--no-progress",
        *TC_FLAGS,
        "--out",
        str(out),
        *more,
    ]


# --- nothing a user made is overwritten -----------------------------------------------------------


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_plot_the_user_made_is_refused_before_training(names_path, tmp_path, capsys, seeds):
    where = tmp_path if seeds == 1 else tmp_path / "seed-2147483648"
    where.mkdir(exist_ok=True)
    (where / PLOT).write_text("mine")
    args = train_args(names_path, tmp_path, "--steps", "100", "--seeds", str(seeds))
    assert main(args) == 2
    err = one_line_error(capsys)
    assert f"{where / PLOT} was not written by a jaxninja run" in err
    assert (where / PLOT).read_text() == "mine"
    assert not checkpoint.latest(where) and not (tmp_path / checkpoint.LOCK).exists()


def test_a_plot_a_run_wrote_is_replaced_on_resume(run_dir, names_path, capsys):
    before = (run_dir / PLOT).read_bytes()
    assert main(train_args(names_path, run_dir, "--steps", "300", "--resume")) == 0
    capsys.readouterr()
    assert (run_dir / PLOT).read_bytes() != before  # its own plot, redrawn with 300 steps


def test_a_lock_file_the_user_made_is_kept(names_path, tmp_path, capsys):
    (tmp_path / checkpoint.LOCK).write_text("my notes\n")
    assert main(train_args(names_path, tmp_path, "--steps", "100")) == 2
    assert "is not a jaxninja run's lock" in one_line_error(capsys)
    assert (tmp_path / checkpoint.LOCK).read_text() == "my notes\n"


def test_an_empty_out_is_refused(names_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(train_args(names_path, "", "--steps", "100")) == 2
    assert '--out "" names no directory' in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


# --- sizes that cannot fit, and places that cannot be written ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "--block-size", "100000"], "context windows of block size 100,000 needs about"),
        (["check", "--n-hidden", "1000000000"], "parameters (n_embd 10, n_hidden 1000000000)"),
        (["train", "--n-hidden", "1000000000", "--out", "{tmp}/o"], "lower --n-hidden"),
        (["train", "--n-embd", "100000000", "--out", "{tmp}/o"], "lower --n-hidden or --n-embd"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_allocating(
    names_path, tmp_path, capsys, args, message
):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*args, "--data", str(names_path)]) == 2
    err = one_line_error(capsys)
    assert message in err and "GiB is free" in err, err
    assert not (tmp_path / "o").exists()


def test_unwritable_exercise_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["exercises", str(tmp_path / "file" / "sub")]) == 2  # a file where a folder goes
    assert f"cannot write into {tmp_path / 'file' / 'sub'}" in one_line_error(capsys)


def test_a_failed_download_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXNINJA_DATA", raising=False)
    assert main(["data", "download", "--url", "http://127.0.0.1:9/names.txt"]) == 2
    err = one_line_error(capsys)
    assert all(s in err for s in ("--data PATH", "$JAXNINJA_DATA", "data/names.txt")), err
    assert list(tmp_path.iterdir()) == []  # no empty data/ folder
    (tmp_path / "file").write_text("x")
    assert main(["data", "download", "--data", str(tmp_path / "file" / "names.txt")]) == 2
    assert "file is a file, not a folder: choose another place with --data PATH" in (
        one_line_error(capsys)
    )


# --- checkpoints: non-finite, corrupt, another vocabulary; resume ---------------------------------


def rewrite(path: Path, dest: Path, tensors=None, metadata=None) -> Path:
    """A copy of a checkpoint with some tensors or metadata changed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        data = {k: f.get_tensor(k) for k in f.keys()}
    dest.write_bytes(
        safetensors.numpy.save({**data, **(tensors or {})}, {**meta, **(metadata or {})})
    )
    return dest


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_checkpoint_of_nans_is_refused_naming_the_tensor(
    run_dir, names_path, tmp_path, capsys, command
):
    path = run_dir / checkpoint.filename(200)
    W1 = checkpoint.load(path).params["W1"].copy()
    W1[0, :3] = np.nan
    bad = rewrite(path, tmp_path / "nan.safetensors", tensors={"params/W1": W1})
    extra = ["--data", str(names_path)] if command == "eval" else []
    assert main([command, "--checkpoint", str(bad), *extra]) == 2
    assert "holds 3 NaN or inf of 1920 values in params/W1" in one_line_error(capsys)


def test_malformed_metadata_is_called_corrupt(run_dir, tmp_path):
    bad = rewrite(run_dir / checkpoint.filename(200), tmp_path / "b.safetensors",
                  metadata={"model": "{not json"})  # fmt: skip
    with pytest.raises(UsageError, match="is a corrupt checkpoint") as e:
        checkpoint.load(bad)
    assert "missing" not in str(e.value)


def test_a_vocabulary_mismatch_names_the_characters(run_dir, tmp_path, capsys):
    other = tmp_path / "klm.txt"
    other.write_text("\n".join(["abc", "xyq", "zz"] * 50 + ["éa"] * 10))
    assert main(["eval", "--checkpoint", str(run_dir), "--data", str(other)]) == 2
    err = one_line_error(capsys)
    assert "'defghijklmnoprstuvw' only in the checkpoint's" in err and "'é' only in" in err, err


def test_a_refused_config_change_names_each_flag_and_both_values(run_dir, names_path, capsys):
    args = train_args(names_path, run_dir, "--steps", "400", "--resume", "--lr", "0.05")
    assert main([*args, "--batch-size", "16"]) == 2
    err = one_line_error(capsys)
    assert "--batch-size is 16, the checkpoint's 32; --lr is 0.05, the checkpoint's 0.1" in err


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--steps", "400"], "already holds checkpoints: pass --resume to continue"),
        (["--steps", "400", "--resume", "--lr", "0.05"], "--lr is 0.05, the checkpoint's 0.1"),
        (["--resume", "--optimizer", "adam"], "--optimizer is 'adam', the checkpoint's 'sgd'"),
        (["--seeds", "3", "--devices", "2", "--out", "{new}"], "--seeds 3 does not split evenly"),
    ],
    ids=["fresh into checkpoints", "resume --lr", "resume --optimizer", "seeds over devices"],
)
def test_a_refused_run_says_nothing_before_its_one_line(
    run_dir, names_path, tmp_path, capsys, more, message
):
    """Refused first, then nothing printed: not the 'training N steps ...' line, no file."""
    before = sorted(p.name for p in run_dir.iterdir())
    more = [a.replace("{new}", str(tmp_path / "new")) for a in more]
    assert main(train_args(names_path, run_dir, *more)) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err, (out, err)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert not (tmp_path / "new").exists()


def test_resume_from_a_chosen_checkpoint_and_the_corrupt_newest(
    run_dir, names_path, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    for step in (100, 200):
        (out / checkpoint.filename(step)).write_bytes(
            (run_dir / checkpoint.filename(step)).read_bytes()
        )
    newest = out / checkpoint.filename(200)
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short by a full disk, say
    assert main(train_args(names_path, out, "--steps", "200", "--resume")) == 2
    err = one_line_error(capsys)
    offer = f"--resume {out / checkpoint.filename(100)}"
    assert "not a readable checkpoint" in err and offer in err, err
    assert main(train_args(names_path, out, "--steps", "200", *offer.split())) == 0
    assert f"resuming from {out / checkpoint.filename(100)} at step 100" in capsys.readouterr().out
    resumed, whole = checkpoint.load(newest), checkpoint.load(run_dir / checkpoint.filename(200))
    assert all(np.array_equal(resumed.params[k], whole.params[k]) for k in whole.params)


def test_resume_of_a_checkpoint_file_under_seeds_is_refused(run_dir, names_path, tmp_path, capsys):
    args = train_args(
        names_path, tmp_path, "--seeds", "2", "--resume", str(run_dir / checkpoint.filename(100))
    )
    assert main(args) == 2
    assert "give --resume alone" in one_line_error(capsys)


def test_a_run_writes_only_its_own_files(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert names <= {checkpoint.LOCK, PLOT} | {checkpoint.filename(s) for s in (100, 200, 300)}
