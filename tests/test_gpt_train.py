"""Part 6's GPT through the training loop: AdamW on the hand-written gradients replays jax.grad's
loop and makemore's PyTorch loop step for step; evaluation during training and the best model;
a bit-identical resume; data parallel; eval, sample and the command line's refusals."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from jaxninja.cli import main
from jaxninja.config import model_config, training_config
from jaxninja.data import load_rows
from jaxninja.errors import Interrupted, UsageError
from jaxninja.models import gpt, registry
from jaxninja.parity.sides import torch_available
from jaxninja.training import checkpoint
from jaxninja.training.loop import train
from jaxninja.training.step import batch_indices

# a small GPT on names.txt's rows (block size 16); runs differing only in steps, chunks,
# checkpoints, evaluations or seed share one compiled chunk
SMALL = dict(vocab_size=27, n_embd=16, n_head=2, n_layer=2)
MC = model_config("gpt", "train", **SMALL)
TC = training_config("gpt", steps=60, chunk_steps=20, checkpoint_every=20, eval_every=20)
FLAGS = ["--model", "gpt", "--n-embd", "16", "--n-head", "2", "--n-layer", "2"]
needs_torch = pytest.mark.skipif(not torch_available(), reason="needs the [torch] extra")


@pytest.fixture(scope="module")
def rows(names_path):
    return load_rows(names_path)


def run(rows, out, mc=MC, tc=TC, **kw):
    data, val = rows.data["train"], rows.data["val"]
    return train(mc, tc, data, rows.vocab, out, progress=False, val=val, log=lambda s: None, **kw)


@pytest.fixture(scope="module")
def whole(rows, tmp_path_factory):
    """The uninterrupted run that the resumed and interrupted ones must reproduce bit for bit."""
    return run(rows, tmp_path_factory.mktemp("whole"))


def assert_same_run(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint) -> None:
    assert a.step == b.step and a.bn_running == b.bn_running == {}
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k  # bit-identical
    for x, y in zip(a.opt_leaves, b.opt_leaves, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.losses, b.losses) and np.array_equal(a.evals, b.evals)


def test_a_run_evaluates_and_keeps_its_best(whole, rows):
    ckpt = checkpoint.load(whole.path)
    assert ckpt.step == 60 and ckpt.bn_calibrated is None and ckpt.model.block_size == 16
    assert ckpt.evals[:, 0].tolist() == [20, 40, 60] and ckpt.losses[-1] < ckpt.losses[0]
    best = checkpoint.load(whole.path.parent / checkpoint.BEST)
    assert (best.step, float(best.evals[-1, 1])) == ckpt.best  # the first lowest
    val = registry.split_loss(MC, registry.to_device(best.params), {}, *rows.data["val"])
    assert abs(val - ckpt.best[1]) <= 1e-6
    assert (whole.path.parent / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_is_bit_identical_best_included(rows, tmp_path, whole):
    run(rows, tmp_path, tc=replace(TC, steps=40))
    resumed = run(rows, tmp_path, resume=True)
    assert_same_run(whole.checkpoint, resumed.checkpoint)
    a = checkpoint.load(whole.path.parent / checkpoint.BEST)
    b = checkpoint.load(tmp_path / checkpoint.BEST)
    assert_same_run(a, b)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_the_run_resumes(rows, tmp_path, monkeypatch, whole, signum):
    import jaxninja.training.loop as loop

    real = loop._progress

    def signalling(total, initial, enabled):  # the signal after the second chunk
        bar = real(total, initial, False)
        calls = []

        def update(n):
            calls.append(n)
            if len(calls) == 2:
                os.kill(os.getpid(), signum)

        bar.update = update
        return bar

    monkeypatch.setattr(loop, "_progress", signalling)
    with pytest.raises(Interrupted, match=r"at step 40: saved .*--resume") as e:
        run(rows, tmp_path)
    assert e.value.exit_code == 128 + signum
    monkeypatch.undo()
    assert_same_run(whole.checkpoint, run(rows, tmp_path, resume=True).checkpoint)


def test_seeds_and_data_parallel_follow_one_model(rows, tmp_path, whole):
    """--seeds 2: the first model is the run of its seed alone; --devices 2: each device half
    of the batch, the gradients and the loss's count of counted positions all-reduced."""
    many = run(rows, tmp_path / "seeds", seeds=2)
    assert np.abs(many.checkpoints[0].losses - whole.checkpoint.losses).max() <= 1e-5
    assert (tmp_path / "seeds" / "seed-2147483648" / checkpoint.BEST).exists()
    two = run(rows, tmp_path / "two", devices=2).checkpoint
    assert np.abs(two.losses - whole.checkpoint.losses).max() <= 1e-5
    for k in two.params:  # float32 sums in another order
        assert np.abs(two.params[k] - whole.checkpoint.params[k]).max() <= 1e-5, k


def test_a_step_runs_on_the_fewest_positions_that_hold_its_targets():
    """Block 16: lengths 10, 12, 16; a batch whose last target sits at position p (from 1)
    runs on the shortest of them >= p. Exactness: the replays below, trimmed against makemore's
    whole rows."""
    import jax.numpy as jnp

    from jaxninja.training.step import _trimmed, trim_lengths

    assert trim_lengths(16) == [10, 12, 16] and trim_lengths(3) == [2, 3]
    seen = _trimmed(lambda p, X, Y: (jnp.float32(X.shape[1]), {}, {}), None, 16)
    for last, length in [(1, 10), (10, 10), (11, 12), (12, 12), (13, 16), (16, 16)]:
        Y = np.full((3, 16), -1)
        Y[1, :last] = 1
        assert float(seen({}, jnp.zeros((3, 16), int), jnp.asarray(Y))[0]) == length, last


def _replay(rows, dtype: str, steps: int, tmp_path) -> dict[str, np.ndarray]:
    """Each step's loss of the hand-written loop, the jax.grad loop and makemore's PyTorch loop
    on the same initial parameters and batches; and how far each moved the parameters."""
    import torch_ref.gpt

    mc = replace(MC, dtype=dtype)
    tc = replace(TC, steps=steps, eval_every=None, chunk_steps=steps, checkpoint_every=steps)
    X, Y = rows.data["train"]
    init = gpt.init_params(mc, tc.seed)
    out = {}
    for g in ("manual", "autodiff"):
        ckpt = run(rows, tmp_path / g, mc, replace(tc, gradients=g)).checkpoint
        out[g] = ckpt.losses, {k: ckpt.params[k] - init[k] for k in init}
    ix = batch_indices(tc.seed, steps, len(X), tc.batch_size)
    lossi, params = torch_ref.gpt.train_loop(
        init, X, Y, ix, mc.n_head, tc.lr, (tc.beta1, tc.beta2), tc.weight_decay, tc.adam_eps
    )
    out["torch"] = lossi, {k: params[k] - init[k] for k in init}
    return out


def _moved_apart(a: dict, b: dict) -> float:
    """The largest difference of two runs' parameter moves, over the largest move: the key part
    of c_attn.bias has a gradient of 0 (rounding noise that AdamW turns into moves of ~1e-13),
    so a parameter's own value is no scale."""
    scale = max(np.abs(v).max() for v in a.values())
    return max(np.abs(a[k] - b[k]).max() for k in a) / scale


@needs_torch
def test_hand_written_replays_jax_grad_and_makemore_in_float64(rows, tmp_path):
    """50 steps in float64 (seen: losses within 4.0e-15, moves within 1.1e-13 of the largest;
    benchmarks/gpt_replay.py runs 2000 at makemore's sizes)."""
    out = _replay(rows, "float64", 50, tmp_path)
    manual = out["manual"]
    assert manual[0][-1] < manual[0][0] - 0.2  # it learns
    for other in ("autodiff", "torch"):
        assert np.abs(out[other][0] - manual[0]).max() <= 1e-12, other
        assert _moved_apart(manual[1], out[other][1]) <= 1e-9, other


@needs_torch
def test_hand_written_replays_jax_grad_and_makemore_in_float32(rows, tmp_path):
    """float32: the three loops sum in other orders, so they part by rounding (seen over 50
    steps: losses within 1.9e-6 of jax.grad's and 7.2e-7 of makemore's, the parameters' moves
    within 3.2e-5 and 8.1e-5 of the largest move)."""
    out = _replay(rows, "float32", 50, tmp_path)
    manual = out["manual"]
    for other in ("autodiff", "torch"):
        assert np.abs(out[other][0] - manual[0]).max() <= 1e-5, other
        assert _moved_apart(manual[1], out[other][1]) <= 5e-4, other


@needs_torch
def test_split_loss_and_greedy_samples_are_makemores(whole, rows):
    """The streamed split loss is makemore's mean over the counted positions of every row;
    sampling at a vanishing temperature is makemore's generate without sampling."""
    import torch
    import torch.nn.functional as F

    import torch_ref.gpt

    ckpt = whole.checkpoint
    model, _ = torch_ref.gpt.build({k: np.array(v) for k, v in ckpt.params.items()}, MC.n_head)
    X, Y = (torch.tensor(a).long() for a in rows.data["val"])
    with torch.no_grad():
        logits, _ = model(X)
        theirs = F.cross_entropy(logits.view(-1, 27), Y.view(-1), ignore_index=-1).item()
    ours = registry.split_loss(MC, registry.to_device(ckpt.params), {}, *rows.data["val"])
    assert abs(ours - theirs) <= 1e-5
    from jaxninja.training.sample import sample_names

    names = sample_names(MC, registry.to_device(ckpt.params), {}, rows.vocab, n=2, temperature=1e-4)
    idx = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        for _ in range(MC.block_size - 1):  # makemore's generate, do_sample=False
            logits, _ = model(idx[:, -MC.block_size :])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    row = idx[0, 1:].tolist()
    assert names == [rows.vocab.decode(row[: row.index(0)] if 0 in row else row)] * 2


def test_the_cli_trains_evaluates_and_samples_a_gpt(names_path, few_names, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(few_names), "--out", str(out), *FLAGS, "--no-progress"]
    assert main([*args, "--steps", "40", "--eval-every", "20"]) == 0
    text = capsys.readouterr().out
    assert "adamw" in text and "block_size=16" in text and "split loss: train" in text
    assert "best: step" in text and "; last: step 40" in text and "1.92" in text
    for ckpt in (out, out / checkpoint.BEST):
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(few_names)]) == 0
        assert "split loss: train" in capsys.readouterr().out
        assert main(["sample", "--checkpoint", str(ckpt), "-n", "3", "--model", "gpt"]) == 0
        assert len(capsys.readouterr().out.split()) == 3
    assert main(["data", "--model", "gpt", "--data", str(names_path)]) == 0
    text = capsys.readouterr().out
    assert "block_size: 16" in text and "182625 counted positions" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-embd", "18", "--n-head", "4"], "--n-embd 18 does not split into 4 heads"),
        (["--block-size", "8"], "its row needs block size 16, above 8"),
        (["--eval-every", "0"], "--eval-every: must be >= 1"),
        (["--eval-every", "-3"], "--eval-every: must be >= 1"),
        (["--n-hidden", "100"], "--n-hidden sizes the mlp and the wavenet, not the gpt"),
    ],
)
def test_bad_gpt_input_is_one_line_and_writes_nothing(names_path, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    try:
        code = main(
            ["train", "--model", "gpt", "--data", str(names_path), "--out", str(out), *args]
        )
    except SystemExit as e:  # argparse's own errors exit from the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_checkpoint_of_another_model_is_refused(whole, names_path, tmp_path, capsys):
    gpt_run = str(whole.path.parent)
    for argv in (
        ["eval", "--checkpoint", gpt_run, "--model", "mlp", "--data", str(names_path)],
        ["sample", "--checkpoint", gpt_run, "--model", "wavenet"],
        ["train", "--out", gpt_run, "--resume", "--model", "mlp", "--data", str(names_path)],
    ):
        before = sorted(os.listdir(gpt_run))
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "checkpoint of the gpt model" in err and len(err.strip().splitlines()) == 1, err
        assert sorted(os.listdir(gpt_run)) == before


def test_a_fresh_run_refuses_a_directory_holding_a_best_model(rows, tmp_path, whole):
    """best.safetensors is a run's: a fresh run into its directory would replace it."""
    import shutil

    shutil.copy(whole.path.parent / checkpoint.BEST, tmp_path / checkpoint.BEST)
    with pytest.raises(UsageError, match="another run's best model: pass --resume"):
        run(rows, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.LOCK, checkpoint.BEST]


def test_the_control_and_an_exercise_backward_do_not_mix(names_path, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(names_path), "--out", str(out), "--gradients", "autodiff"]
    assert main([*argv, "--backward", "ex1.py:backward"]) == 2
    err = capsys.readouterr().err
    assert "--backward is your exercise-1 gradients, not jax.grad's" in err and not out.exists()


def test_eval_every_works_for_the_mlp_too(splits, tmp_path, capsys):
    """--eval-every is every model's: the MLP's val loss on its running statistics; the last
    step is evaluated too, so the best kept is never worse than the end."""
    from tests.runs import MC as MLP
    from tests.runs import TC as MLP_TC

    tc = replace(MLP_TC, steps=250, eval_every=100)
    data, val = splits.data["train"], splits.data["val"]
    r = train(MLP, tc, data, splits.vocab, tmp_path, progress=False, val=val, log=lambda s: None)
    assert r.checkpoint.evals[:, 0].tolist() == [100, 200, 250]
    assert checkpoint.load(tmp_path / checkpoint.BEST).step == r.checkpoint.best[0]
    from jaxninja.training.report import print_best

    print_best(r.checkpoint, tmp_path, splits)  # at the same step, each says its statistics
    line = capsys.readouterr().out
    assert ", running BatchNorm (" in line and line.rstrip().endswith(", calibrated BatchNorm")
    empty = (val[0][:0], val[1][:0])
    with pytest.raises(UsageError, match="evaluates the val split, and it is empty"):
        train(MLP, tc, data, splits.vocab, tmp_path / "b", progress=False, val=empty)
    assert not (tmp_path / "b").exists()
