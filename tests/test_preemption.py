"""Runs that survive: real signals sent to real processes (SIGTERM, kill -9), two processes on
127.0.0.1, a second writer into a run directory, and what is checked before processes join."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from jaxninja.cli import main
from jaxninja.models.mlp import PARAMS
from jaxninja.training import checkpoint
from jaxninja.training.loop import train
from tests import runs
from tests.runs import MC, TC_FLAGS
from tests.test_parallel import free_port

# long enough that a run is still going when the signal, sent at its first checkpoint, lands
TC = replace(runs.TC, steps=10_000)


def launch(names_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "JAXNINJA_DATA": str(names_path), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jaxninja", "train", "--no-progress", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Read the run's output until it says it saved a checkpoint."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if "saved" in line:
            return line
        assert time.monotonic() < deadline, "no checkpoint in time"
    raise AssertionError(f"the run ended first: {proc.wait()} {proc.stderr.read()}")


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, err, out


def assert_same(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, atol: float = 0.0) -> None:
    assert a.step == b.step
    for k in PARAMS:
        assert np.abs(a.params[k] - b.params[k]).max() <= atol, k
    assert np.abs(a.losses - b.losses).max() <= atol


def test_sigterm_saves_and_the_resumed_run_is_bit_identical(names_path, splits, tmp_path):
    out = tmp_path / "run"
    proc = launch(names_path, "--out", str(out), "--steps", str(TC.steps), *TC_FLAGS)
    wait_for_checkpoint(proc)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finish(proc)
    assert code == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("jaxninja: stopped by SIGTERM at step ") and "Traceback" not in err
    assert line.endswith(f"continue with `jaxninja train --out {out} --resume`"), line
    stopped = checkpoint.load(out).step
    assert 0 < stopped < TC.steps and len(checkpoint.load(out).losses) == stopped
    # resumed for one more chunk (not to 10,000: the same steps, as many as a test needs)
    total = stopped + 100
    assert main(["train", "--data", str(names_path), "--out", str(out), "--resume",
                 "--steps", str(total), "--no-progress"]) == 0  # fmt: skip
    whole = train(MC, replace(TC, steps=total), splits.data["train"], splits.vocab,
                  tmp_path / "whole", progress=False)  # fmt: skip
    assert_same(checkpoint.load(out), whole.checkpoint)  # bit-identical


def test_sigterm_under_seeds(names_path, splits, tmp_path):
    out = tmp_path / "seeds"
    proc = launch(names_path, "--out", str(out), "--steps", str(TC.steps), *TC_FLAGS,
                  "--seeds", "2", "--seed", "3")  # fmt: skip
    wait_for_checkpoint(proc)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finish(proc)
    assert code == 143 and "and the other seeds" in err and "--seeds 2 --resume" in err, err
    steps = {checkpoint.load(out / f"seed-{s}").step for s in (3, 4)}
    assert len(steps) == 1  # every seed saved at the same step
    stopped = steps.pop()
    assert 0 < stopped < TC.steps
    total = stopped + 100
    args = ["train", "--data", str(names_path), "--out", str(out), "--seeds", "2", "--resume"]
    assert main([*args, "--steps", str(total), "--no-progress"]) == 0
    whole = train(MC, replace(TC, seed=3, steps=total), splits.data["train"], splits.vocab,
                  tmp_path / "whole", seeds=2, progress=False)  # fmt: skip
    for seed, ckpt in zip((3, 4), whole.checkpoints, strict=True):
        assert_same(checkpoint.load(out / f"seed-{seed}"), ckpt)  # bit-identical


# the processes of a cluster all-reduce every step, slowly beside the suite's other work:
# chunks (and checkpoints) of 20 steps, not TC's 100
CLUSTER_CHUNK = 20


def _cluster(names_path, out: Path, port, i, steps: int = 100_000, *extra):
    """Process i of 2; by default a run far too long to end before the test's signal."""
    flags = [*TC_FLAGS]
    flags[flags.index("--checkpoint-every") + 1] = str(CLUSTER_CHUNK)
    return launch(
        names_path, "--out", str(out), "--steps", str(steps), *flags,
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
        *extra,
    )  # fmt: skip


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(names_path, splits, tmp_path):
    """JAX's preemption service: SIGTERM to process 1 alone; both stop after the same chunk,
    process 0 writes the one checkpoint; resumed, the run computes what one process does."""
    port = free_port()
    procs = [_cluster(names_path, tmp_path / f"p{i}", port, i) for i in (0, 1)]
    wait_for_checkpoint(procs[0])
    procs[1].send_signal(signal.SIGTERM)
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [143, 143], results
    steps = {r[1].strip().splitlines()[-1].split(" at step ")[1].split()[0] for r in results}
    assert len(steps) == 1, results  # the same step in both
    assert "process 0 saved" in results[1][1] and not (tmp_path / "p1").exists()
    stopped = checkpoint.load(tmp_path / "p0").step
    assert str(stopped) == steps.pop() and stopped % CLUSTER_CHUNK == 0
    port, total = free_port(), stopped + CLUSTER_CHUNK
    # resumed from one --out, as on a shared filesystem (every process reads the checkpoint)
    procs = [_cluster(names_path, tmp_path / "p0", port, i, total, "--resume") for i in (0, 1)]
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    assert "split loss" in results[0][2] and "split loss" not in results[1][2]  # 0 reports
    one = train(MC, replace(TC, steps=total), splits.data["train"], splits.vocab,
                tmp_path / "one", progress=False)  # fmt: skip
    two = checkpoint.load(tmp_path / "p0")
    print(f"stopped at {stopped}; 2 processes vs 1 after {total} steps:",
          max(np.abs(two.params[k] - one.checkpoint.params[k]).max() for k in PARAMS))  # fmt: skip
    assert_same(two, one.checkpoint, atol=1e-5)


def test_a_killed_process_ends_the_other_with_one_line(names_path, tmp_path):
    port = free_port()
    procs = [_cluster(names_path, tmp_path / f"p{i}", port, i) for i in (0, 1)]
    wait_for_checkpoint(procs[0])
    procs[1].kill()
    code, err, _ = finish(procs[0])  # ends on its own, well within finish()'s timeout
    assert code == 1, err
    assert "jaxninja: error: process 0 lost process 1 at step " in err
    assert "start every process again with --resume" in err and "Traceback" not in err
    procs[1].wait()


def test_one_writer_per_run_directory_and_no_stale_lock(names_path, tmp_path, capsys):
    out = tmp_path / "run"
    first = launch(names_path, "--out", str(out), "--steps", "1000000", *TC_FLAGS)
    wait_for_checkpoint(first)
    args = ["train", "--data", str(names_path), "--out", str(out), *TC_FLAGS, "--no-progress"]
    assert main([*args, "--resume", "--steps", "1000000"]) == 2
    err = capsys.readouterr().err
    assert f"{out} is being written by another run (pid {first.pid})" in err
    first.send_signal(signal.SIGKILL)  # no handler runs: the kernel drops its lock
    first.wait()
    # 100 steps past wherever it got to (a fixed --steps lost the race on a loaded machine)
    total = checkpoint.load(out).step + 100
    assert main([*args, "--resume", "--steps", str(total)]) == 0  # not stuck
    assert checkpoint.load(out).step == total


def test_what_one_process_can_check_is_checked_before_joining(
    names_path, tmp_path, capsys, monkeypatch
):
    """A bad --out or --resume checkpoint fails at once, not after the others have waited: the
    process never starts to meet the others."""
    from jaxninja.training import parallel

    def joined(*args, **kwargs):
        raise AssertionError("went to meet the cluster before checking what it could alone")

    monkeypatch.setattr(parallel, "rendezvous", joined)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2",
               "--init-timeout", "60"]  # fmt: skip
    base = ["train", "--data", str(names_path), "--no-progress", *cluster]
    assert main([*base, "--process-id", "0", "--out", str(afile / "run")]) == 2
    assert "cannot write to" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / checkpoint.filename(100)).write_bytes(b"garbage")
    assert main([*base, "--process-id", "1", "--out", str(broken), "--resume"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
