"""Training (exercise 4): resume, divergence, Ctrl-C, checkpoints, sampling, replay in PyTorch."""

import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from jaxninja.cli import main
from jaxninja.config import ModelConfig, TrainConfig
from jaxninja.errors import Interrupted, UsageError
from jaxninja.models.mlp import init_params, split_loss, to_device
from jaxninja.parity.sides import torch_available
from jaxninja.training import checkpoint
from jaxninja.training.loop import train
from jaxninja.training.step import batch_indices, make_optimizer
from tests.runs import MC, TC, TC_FLAGS


def run(splits, out, tc=TC, **kw):
    return train(MC, tc, splits.data["train"], splits.vocab, out, progress=False, **kw)


def assert_same_run(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint):
    assert a.step == b.step
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k  # bit-identical
    for x, y in zip(a.opt_leaves, b.opt_leaves, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.losses, b.losses)
    for x, y in zip(a.bn_running["bn"], b.bn_running["bn"], strict=True):
        assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def whole(splits, tmp_path_factory):
    """The uninterrupted run that the resume and Ctrl-C tests must reproduce bit for bit."""
    return run(splits, tmp_path_factory.mktemp("whole"))


def test_resume_is_bit_identical(splits, tmp_path, whole):
    assert len(whole.checkpoint.losses) == 300 and whole.checkpoint.bn_calibrated is not None
    first = run(splits, tmp_path / "split", tc=replace(TC, steps=200))
    assert first.checkpoint.step == 200
    resumed = run(splits, tmp_path / "split", resume=True)
    assert_same_run(whole.checkpoint, resumed.checkpoint)
    assert first.compile_seconds == resumed.compile_seconds == 0.0  # whole's chunk, reused
    assert (whole.path.parent / "loss.png").read_bytes()[:4] == b"\x89PNG"


def interrupt_on_chunk(monkeypatch, k: int) -> None:
    """A real Ctrl-C (SIGINT to this process) once the loop has run k chunks."""
    import jaxninja.training.loop as train_mod

    real = train_mod._progress

    def interrupting(total, initial, enabled):
        bar = real(total, initial, False)
        calls = []

        def update(n):
            calls.append(n)
            if len(calls) == k:
                os.kill(os.getpid(), signal.SIGINT)

        bar.update = update
        return bar

    monkeypatch.setattr(train_mod, "_progress", interrupting)


def test_ctrl_c_saves_and_resumes(splits, tmp_path, monkeypatch, whole):
    interrupt_on_chunk(monkeypatch, 2)
    with pytest.raises(Interrupted, match=r"interrupted at step 200: saved .*--resume") as e:
        run(splits, tmp_path / "cut")
    assert e.value.exit_code == 130
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "cut").step == 200
    assert_same_run(whole.checkpoint, run(splits, tmp_path / "cut", resume=True).checkpoint)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_calibration_waits_for_the_final_checkpoint(
    splits, tmp_path, monkeypatch, whole, signum
):
    """After the last chunk the run calibrates BatchNorm (seconds for the WaveNet): a signal
    then is answered once the final checkpoint is written, not by losing the steps since the
    last one."""
    import jaxninja.training.loop as train_mod

    real = train_mod._calibrate

    def signalled(*args):
        os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(train_mod, "_calibrate", signalled)
    with pytest.raises(Interrupted, match=r"after the last step \(300\): the run is complete") as e:
        run(splits, tmp_path / "late")
    assert e.value.exit_code == 128 + signum
    assert_same_run(whole.checkpoint, checkpoint.load(tmp_path / "late"))
    assert checkpoint.load(tmp_path / "late").bn_calibrated is not None


def test_a_signal_while_the_cli_reports_says_the_run_is_complete(
    names_path, tmp_path, monkeypatch, capsys
):
    """After train() returns, the command line computes the split losses (seconds): SIGTERM
    there, whose default ends the process silently, says the run is complete instead."""
    import jaxninja.cli as cli

    monkeypatch.setattr(cli, "_print_split_losses", lambda *a: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "reported"
    argv = ["train", "--data", str(names_path), "--out", str(out), "--steps", "300", *TC_FLAGS]
    assert main([*argv, "--no-progress"]) == 143
    line = capsys.readouterr().err.strip()
    assert line.startswith("jaxninja: stopped by SIGTERM after the last step (300): the run is")
    assert line.endswith(f"`jaxninja eval --checkpoint {out}` gives its split losses"), line
    assert checkpoint.load(out).step == 300
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handed back


def test_ctrl_c_under_seeds_saves_every_seed(splits, tmp_path, monkeypatch):
    tc = replace(TC, steps=200)
    whole = run(splits, tmp_path / "whole", tc=tc, seeds=2)
    interrupt_on_chunk(monkeypatch, 1)
    with pytest.raises(Interrupted, match=r"at step 100: .* and the other seeds; .*--seeds 2"):
        run(splits, tmp_path / "cut", tc=tc, seeds=2)
    monkeypatch.undo()
    resumed = run(splits, tmp_path / "cut", tc=tc, seeds=2, resume=True)
    for a, b in zip(whole.checkpoints, resumed.checkpoints, strict=True):
        assert_same_run(a, b)


def test_adam_resumes_bit_identical(splits, tmp_path):
    tc = replace(TC, steps=200, optimizer="adam", lr=1e-2)
    whole = run(splits, tmp_path / "whole", tc=tc)
    run(splits, tmp_path / "split", tc=replace(tc, steps=100))
    assert_same_run(
        whole.checkpoint, run(splits, tmp_path / "split", tc=tc, resume=True).checkpoint
    )


def test_resume_refuses_another_training_config(splits, tmp_path, whole):
    for changed in (replace(TC, lr=0.05), replace(TC, optimizer="adam"), replace(TC, seed=1)):
        with pytest.raises(UsageError, match="only --steps may change on --resume, and --"):
            run(splits, whole.path.parent, tc=changed, resume=True)


def test_divergence_under_seeds_names_the_seed(splits, tmp_path):
    tc = replace(TC, steps=200, seed=7, lr_decay_step=100, lr_decay=1e30)
    with pytest.raises(UsageError, match=r"loss became nan at step 101 \(seed 7\); lower --lr"):
        run(splits, tmp_path, tc=tc, seeds=2)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(splits, tmp_path):
    tc = replace(TC, lr_decay_step=100, lr_decay=1e30)  # lr 1e29 from step 100
    with pytest.raises(UsageError, match=r"loss became nan at step 101; lower --lr. kept .*0100"):
        run(splits, tmp_path, tc=tc)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "ckpt-0000100.safetensors"]
    assert checkpoint.load(tmp_path).step == 100


def test_divergence_before_any_checkpoint(splits, tmp_path):
    tc = replace(TC, lr_decay_step=100, lr_decay=1e30, checkpoint_every=200)  # nan at 101
    with pytest.raises(UsageError, match="no checkpoint was written"):
        run(splits, tmp_path, tc=tc)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no checkpoint


def test_lr_schedule_is_exactly_0_01():
    opt = make_optimizer(TrainConfig(lr_decay_step=3), "float32")
    import jax.numpy as jnp

    state = opt.init({"w": jnp.zeros((), jnp.float32)})
    lrs = []
    for _ in range(5):
        updates, state = opt.update({"w": jnp.ones((), jnp.float32)}, state)
        lrs.append(-updates["w"])
    assert lrs[:3] == [np.float32(0.1)] * 3 and lrs[3:] == [np.float32(0.01)] * 2
    assert np.float32(0.1) * np.float32(0.1) != np.float32(0.01)  # why the schedule takes care


def test_adam_trains(splits, tmp_path):
    tc = replace(TC, checkpoint_every=300, optimizer="adam", lr=1e-2)
    result = run(splits, tmp_path, tc=tc)
    losses = result.checkpoint.losses
    assert losses[-50:].mean() < losses[:50].mean() - 0.3
    assert checkpoint.load(result.path).train.optimizer == "adam"


def test_start_into_a_used_directory_refuses(splits, tmp_path):
    run(splits, tmp_path, tc=replace(TC, steps=100))
    with pytest.raises(UsageError, match="already holds checkpoints: pass --resume"):
        run(splits, tmp_path)
    with pytest.raises(UsageError, match="differs from the checkpoint"):
        train(
            ModelConfig(vocab_size=27, n_hidden=65), TC, splits.data["train"], splits.vocab,
            tmp_path, resume=True, progress=False,
        )  # fmt: skip


# --- checkpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run(splits, out, tc=replace(TC, steps=200))


def test_checkpoint_round_trip(trained):
    ckpt = checkpoint.load(trained.path)
    assert ckpt.step == 200 and ckpt.model == MC and ckpt.vocab.size == 27
    assert_same_run(ckpt, trained.checkpoint)
    assert checkpoint.load(trained.path.parent).step == 200  # a run directory: its latest


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[: len(b) // 2], "not a readable checkpoint"),
        (lambda b: b"garbage", "not a readable checkpoint"),
        (lambda b: b"", "not a readable checkpoint"),
    ],
)
def test_bad_checkpoint_files(trained, tmp_path, mangle, match):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mangle(trained.path.read_bytes()))
    with pytest.raises(UsageError, match=match) as e:
        checkpoint.load(bad)
    assert "\n" not in str(e.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        checkpoint.load(tmp_path / "nope.safetensors")
    with pytest.raises(UsageError, match="holds no checkpoint"):
        checkpoint.load(tmp_path)


def test_checkpoint_inconsistent_with_its_config(trained, tmp_path):
    ckpt = trained.checkpoint
    wrong = ckpt._replace(model=ModelConfig(vocab_size=27, n_hidden=63))
    checkpoint.save(tmp_path / "w.safetensors", wrong)
    with pytest.raises(UsageError, match="inconsistent: params/W1"):
        checkpoint.load(tmp_path / "w.safetensors")


def test_eval_on_another_vocabulary(trained, tmp_path, capsys):
    other = tmp_path / "w.txt"
    other.write_text("\n".join(["zoë", "åsa", "émile"] * 20))
    assert main(["eval", "--checkpoint", str(trained.path), "--data", str(other)]) == 2
    assert "vocabulary" in capsys.readouterr().err


def test_eval_and_sample_cli(trained, names_path, capsys):
    assert main(["eval", "--checkpoint", str(trained.path), "--data", str(names_path)]) == 0
    out = capsys.readouterr().out
    assert "split loss (calibrated BatchNorm): train" in out and "val" in out
    args = ["sample", "--checkpoint", str(trained.path.parent), "-n", "7", "--seed", "1"]
    assert main(args) == 0
    names = capsys.readouterr().out.split()
    assert len(names) == 7 and all(set(n) <= set("abcdefghijklmnopqrstuvwxyz") for n in names)
    assert main(args) == 0 and capsys.readouterr().out.split() == names  # seeded
    assert main([*args, "--temperature", "0.01"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--steps", "0"], "--steps: must be >= 1"),
        (["train", "--batch-size", "1"], "batch size must be >= 2"),
        (["train", "--lr", "-1"], "--lr: must be a finite number > 0"),
        (["sample", "--checkpoint", "/nonexistent"], "not found"),
        (["sample", "--checkpoint", "x", "--temperature", "0"], "must be a finite number > 0"),
    ],
)
def test_bad_train_input_is_one_line(args, message, tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")] if args[0] == "train" else []
    try:
        code = main([*args, *out])
    except SystemExit as e:  # argparse's own errors exit from the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_train_cli_end_to_end(names_path, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(names_path), "--out", str(out), *TC_FLAGS, "--no-progress"]
    assert main([*args, "--steps", "200"]) == 0
    text = capsys.readouterr().out
    assert "µs/step" in text and "split loss (calibrated BatchNorm)" in text and "samples:" in text
    assert (out / "ckpt-0000200.safetensors").exists() and (out / "loss.png").exists()
    resume = ["train", "--data", str(names_path), "--out", str(out), "--resume", "--no-progress"]
    assert main([*resume, "--steps", "300"]) == 0  # the model and training flags: the run's
    assert checkpoint.load(out).step == 300 and checkpoint.load(out).model.n_hidden == 64
    assert main([*resume, "--steps", "400", "--n-hidden", "32"]) == 2
    assert "differs from the checkpoint" in capsys.readouterr().err


# --- PyTorch: the same run, replayed; the same checkpoint, evaluated ---------------------------

needs_torch = pytest.mark.skipif(not torch_available(), reason="needs the [torch] extra")


@needs_torch
def test_checkpoint_in_torch_ref_gives_the_same_split_losses(trained, splits):
    import torch_ref

    params, bnmean, bnvar = torch_ref.load_checkpoint(trained.path)
    ckpt = trained.checkpoint
    for s in ("train", "val", "test"):
        ours = split_loss(to_device(ckpt.params), ckpt.bn["bn"], *splits.data[s])
        theirs = torch_ref.split_loss(params, bnmean, bnvar, *splits.data[s])
        assert abs(ours - theirs) < 1e-5, s


@needs_torch
def test_replay_parity_with_the_notebook_loop(splits, tmp_path):
    """Same initial parameters and batches: the notebook's PyTorch loop gives the same run, to
    the README's bounds (each step's loss within 2e-6, a few float32 ulps; the split losses
    within 1e-6). 500 steps, the learning rate's decay at 250 among them; benchmarks/
    torch_replay.py runs 5000 (seen there: 9.5e-7 and 1.2e-7)."""
    import torch_ref

    steps = 500
    mc = ModelConfig(vocab_size=27, n_hidden=200)
    tc = TrainConfig(steps=steps, chunk_steps=100, checkpoint_every=steps, lr_decay_step=steps // 2)
    X, Y = splits.data["train"]
    ours = train(mc, tc, (X, Y), splits.vocab, tmp_path, progress=False).checkpoint
    indices = batch_indices(tc.seed, steps, len(X), tc.batch_size)
    losses, params = torch_ref.train_loop(
        init_params(mc, tc.seed), X, Y, indices, tc.lr, tc.lr_decayed, tc.lr_decay_step
    )
    assert np.abs(losses - ours.losses).max() <= 2e-6
    bnmean, bnvar = torch_ref.calibrate_bn(params, X)
    for s in ("train", "val", "test"):
        a = split_loss(to_device(ours.params), ours.bn["bn"], *splits.data[s])
        b = torch_ref.split_loss(params, bnmean, bnvar, *splits.data[s])
        assert abs(a - b) <= 1e-6, (s, a, b)


@pytest.mark.parametrize("chunk", [None, 20_000])  # the default; ten, the last padded to 5,000
def test_streamed_evaluation_is_the_all_at_once_one(trained, splits, monkeypatch, chunk):
    """Calibration and split losses over chunks equal the whole split at once, in float64."""
    import jaxninja.models.evaluate as evaluate
    import jaxninja.models.mlp as model

    if chunk:
        monkeypatch.setattr(evaluate, "EVAL_CHUNK", chunk)
    p = {k: np.asarray(v, np.float64) for k, v in trained.checkpoint.params.items()}
    X, _ = splits.data["train"]
    hprebn = p["C"][X].reshape(len(X), -1) @ p["W1"] + p["b1"]
    bn = model.calibrate_bn(to_device(trained.checkpoint.params), X)
    assert np.abs(np.asarray(bn.mean) - hprebn.mean(0)).max() <= 1e-6 * np.abs(hprebn).max()
    assert np.abs(np.asarray(bn.var) / hprebn.var(0, ddof=1) - 1).max() <= 1e-6
    for split in ("train", "val"):
        Xs, Ys = splits.data[split]
        h = np.tanh(
            p["bngain"] * ((p["C"][Xs].reshape(len(Xs), -1) @ p["W1"] + p["b1"]) - hprebn.mean(0))
            / np.sqrt(hprebn.var(0, ddof=1) + 1e-5) + p["bnbias"]
        )  # fmt: skip
        logits = h @ p["W2"] + p["b2"]
        logits -= logits.max(1, keepdims=True)
        nll = np.log(np.exp(logits).sum(1)) - logits[np.arange(len(Ys)), Ys]
        got = split_loss(to_device(trained.checkpoint.params), bn, Xs, Ys)
        assert abs(got - nll.mean()) <= 1e-6, (split, got, nll.mean())


def test_a_partial_last_chunk_is_padded_to_the_fewest_rows_of_a_few_shapes():
    from jaxninja.models.evaluate import chunks, padded_size

    assert [padded_size(n, 65_536) for n in (51_553, 22_655, 32_768, 32_769, 1)] == [
        65_536, 32_768, 32_768, 65_536, 4_096,
    ]  # fmt: skip
    shapes = [(len(Xc), None if mask is None else int(mask.sum()))
              for (Xc,), mask in chunks(np.arange(45), size=20)]  # fmt: skip
    assert shapes == [(20, None), (20, None), (5, 5)]


def test_the_learning_rate_default_lives_in_the_config(names_path):
    from jaxninja.cli import _train_configs, build_parser

    assert TrainConfig().lr == 0.1 and TrainConfig(optimizer="adam").lr == 1e-3
    assert TrainConfig(optimizer="adam", lr=0.01).lr == 0.01
    for flags, lr in (
        (["--optimizer", "adam"], 1e-3),
        (["--optimizer", "adam", "--lr", "0.01"], 0.01),
        ([], 0.1),
    ):
        args = build_parser().parse_args(["train", *flags])
        assert _train_configs(args, 27, None)[1].lr == lr, flags


def test_checkpoint_files_follow_the_umask(trained, tmp_path):
    """Atomic writes make files as open() does, without the process setting its umask."""
    old = os.umask(0o027)
    try:
        path = checkpoint.save(tmp_path / "c.safetensors", trained.checkpoint)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
