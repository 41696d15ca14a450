"""Scaling out: one batch over 4 CPU devices, many seeds vmapped, two processes on 127.0.0.1."""

import socket
import subprocess
import sys
import threading
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxninja.cli import main
from jaxninja.config import TrainConfig
from jaxninja.errors import UsageError
from jaxninja.models.mlp import PARAMS, forward, make_case, to_device
from jaxninja.models.mlp_backward import backward_fused
from jaxninja.training import parallel
from jaxninja.training.loop import train
from jaxninja.training.parallel import DATA, ClusterConfig
from tests import runs
from tests.runs import MC, TC_FLAGS

N_DEVICES = 4
TC = replace(runs.TC, steps=200)
PER_EXAMPLE = ("logits", "hpreact", "hprebn", "embcat")  # gradients that stay on their device


def sharded_backward(params, Xb, Yb, dloss, mesh):
    """forward + backward_fused with the batch split over `mesh`'s DATA axis."""

    def local(params, Xb, Yb):
        loss, cache = forward(params, Xb, Yb, 1e-5, DATA)
        grads = backward_fused(cache, dloss, DATA)
        bn = (cache.bn.bnmean, cache.bn.bnvar)
        return loss, {k: grads[k] for k in PARAMS}, {k: grads[k] for k in PER_EXAMPLE}, bn

    return jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(DATA), P(DATA)),
            out_specs=(P(), P(), P(DATA), P()),
        )
    )(params, Xb, Yb)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-13)])
def test_data_parallel_backward_equals_one_device(splits, dtype, tol):
    assert jax.device_count() >= N_DEVICES
    mesh = parallel.make_mesh(N_DEVICES, DATA)
    cfg = replace(MC, dtype=dtype)
    case = make_case(cfg, *splits.data["train"], batch_size=32, seed=3)
    params, Xb, Yb = to_device(case.params), jnp.asarray(case.Xb), jnp.asarray(case.Yb)
    dloss = jnp.asarray(0.7, dtype)  # a random-ish cotangent, not 1

    loss, grads, per_example, bn = sharded_backward(params, Xb, Yb, dloss, mesh)

    want_loss, cache = forward(params, Xb, Yb)
    want = backward_fused(cache, dloss)
    assert abs(float(loss) - float(want_loss)) <= tol * 10
    for k in PARAMS + PER_EXAMPLE:
        got = grads[k] if k in grads else per_example[k]
        assert got.shape == want[k].shape, k
        assert np.abs(np.asarray(got) - np.asarray(want[k])).max() <= tol, k  # within tol
    assert np.abs(np.asarray(want["W1"])).max() > 1e-3  # a zero gradient cannot pass
    for got_stat, want_stat in zip(bn, (cache.bn.bnmean, cache.bn.bnvar), strict=True):
        assert np.abs(np.asarray(got_stat) - np.asarray(want_stat)).max() <= tol * 10


def test_data_parallel_training_follows_one_device(splits, tmp_path):
    one = train(MC, TC, splits.data["train"], splits.vocab, tmp_path / "one", progress=False)
    four = train(
        MC, TC, splits.data["train"], splits.vocab, tmp_path / "four",
        devices=N_DEVICES, progress=False,
    )  # fmt: skip
    a, b = one.checkpoint, four.checkpoint
    assert np.abs(a.losses - b.losses).max() <= 1e-5  # 200 float32 steps, sums in another order
    for k in PARAMS:
        assert np.abs(a.params[k] - b.params[k]).max() <= 1e-5, k
    for x, y in zip(a.bn_calibrated["bn"], b.bn_calibrated["bn"], strict=True):
        assert np.abs(x - y).max() <= 1e-4


def test_many_seeds_equal_each_seed_alone(splits, tmp_path):
    tc = TrainConfig(steps=1000, checkpoint_every=500, seed=7)
    mc = replace(MC, n_hidden=200)
    many = train(mc, tc, splits.data["train"], splits.vocab, tmp_path / "many", seeds=4)
    assert [c.train.seed for c in many.checkpoints] == [7, 8, 9, 10]
    assert [p.parent.name for p in many.paths] == ["seed-7", "seed-8", "seed-9", "seed-10"]
    assert all(p.exists() for p in many.paths)
    for k in (0, 3):
        alone = train(
            mc, replace(tc, seed=7 + k), splits.data["train"], splits.vocab,
            tmp_path / f"alone-{k}", progress=False,
        )  # fmt: skip
        got, want = many.checkpoints[k], alone.checkpoint
        assert k == 0 or alone.compile_seconds == 0.0  # seed 7's chunk: the seed is an argument
        assert np.abs(got.losses - want.losses).max() <= 1e-5  # the bound, 1k steps
        for name in PARAMS:
            assert np.abs(got.params[name] - want.params[name]).max() <= 1e-5, name
    # the seeds really differ
    assert np.abs(many.checkpoints[0].losses - many.checkpoints[1].losses).max() > 1e-2


def test_many_seeds_resume(splits, tmp_path):
    first = train(MC, replace(TC, steps=100), splits.data["train"], splits.vocab, tmp_path / "r",
                  seeds=2)  # fmt: skip
    assert first.checkpoint.step == 100
    more = train(
        MC, TC, splits.data["train"], splits.vocab, tmp_path / "r", seeds=2, resume=True,
        progress=False,
    )  # fmt: skip
    whole = train(MC, TC, splits.data["train"], splits.vocab, tmp_path / "w", seeds=2)
    for a, b in zip(more.checkpoints, whole.checkpoints, strict=True):
        assert a.step == b.step == 200 and np.array_equal(a.losses, b.losses)
        assert all(np.array_equal(a.params[k], b.params[k]) for k in PARAMS)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--devices", "64"], "--devices 64: only 4 cpu device(s) exist here"),
        (["--devices", "3"], "the batch of 32 does not split evenly over 3 devices"),
        (["--seeds", "3", "--devices", "2"], "--seeds 3 does not split evenly over --devices 2"),
        (["--coordinator", "127.0.0.1:9"], "needs --coordinator, --num-processes and --process-id"),
    ],
)
def test_cli_bad_device_flags(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["train", "--steps", "10", "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line
    assert not out.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_coordinator_times_out_with_one_line(tmp_path):
    cmd = [
        sys.executable, "-m", "jaxninja", "train", "--steps", "10", "--out", str(tmp_path),
        "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2",
        "--process-id", "1", "--init-timeout", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "could not reach the coordinator" in done.stderr and "--init-timeout" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0


def test_coordinator_gives_up_on_missing_processes():
    cluster = ClusterConfig(f"127.0.0.1:{free_port()}", 3, 0, timeout=1)
    with pytest.raises(UsageError, match=r"process\(es\) \[1, 2\] of 3 never connected"):
        parallel.rendezvous(cluster)


def test_coordinator_refuses_a_process_of_another_run():
    port = free_port()
    errors = []

    def coordinator():
        try:
            parallel.rendezvous(ClusterConfig(f"127.0.0.1:{port}", 2, 0, timeout=1))
        except UsageError as e:
            errors.append(str(e))

    thread = threading.Thread(target=coordinator)
    thread.start()
    with pytest.raises(UsageError, match="it says --num-processes 3, process 0 says 2"):
        parallel.rendezvous(ClusterConfig(f"127.0.0.1:{port}", 3, 1, timeout=2))
    thread.join()
    assert errors and "never connected" in errors[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (("localhost", 2, 0), "HOST:PORT"),
        (("h:1", 2, 2), "process-id must be in [0, 2)"),
        (("h:70000", 2, 0), "HOST:PORT"),
    ],
)
def test_cluster_config_rejects(args, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(")", r"\)")):
        ClusterConfig(*args)


def test_seeds_cli_end_to_end(names_path, tmp_path, capsys):
    out = tmp_path / "many"
    args = ["train", "--data", str(names_path), "--out", str(out), *TC_FLAGS, "--seeds", "2",
            "--seed", "5", "--no-progress"]  # fmt: skip
    assert main([*args, "--steps", "200"]) == 0
    text = capsys.readouterr().out
    assert "µs/model-step" in text and "mean ± std over 2 seeds: train" in text
    rows = [line.split()[0] for line in text.splitlines() if line.strip()[:1] in "567"]
    assert rows == ["5", "6"] * 2  # one row per seed: calibrated BatchNorm, then running
    assert main([*args, "--steps", "300", "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert checkpoint_step(out / "seed-6") == 300
    assert main(["eval", "--data", str(names_path), "--checkpoint", str(out / "seed-6")]) == 0
    assert main(["sample", "--checkpoint", str(out), "-n", "2"]) == 2  # the run, not a seed
    err = capsys.readouterr().err
    assert f"is a run of 2 seeds: give one of its directories, such as {out / 'seed-5'}" in err
    assert main([*args, "--steps", "400"]) == 2  # no --resume: the seeds are kept
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main([*args, "--steps", "400", "--resume", "--seeds", "3"]) == 2  # not the run's
    assert "holds a run of 2 seeds from 5: pass --seeds 2 --seed 5" in capsys.readouterr().err


def checkpoint_step(run_dir) -> int:
    from jaxninja.training import checkpoint

    return checkpoint.load(run_dir).step
