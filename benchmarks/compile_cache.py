"""What JAX's persistent compilation cache (jaxninja/compile_cache.py) saves a user: `jaxninja
check` and a grade of exercise 2, each run twice, each run a fresh process as a user runs it,
with the cache and without it (JAX_ENABLE_COMPILATION_CACHE=false, JAX's own switch: the same
code otherwise) in the same run, their turns alternating so that the machine's load falls on
both alike.

    python benchmarks/compile_cache.py [--repeats 3] [--train-steps 0]

Each repeat starts from an empty $JAXNINJA_CACHE for each side, so the first run of a command is
cold on both sides (no compiled programs, no grader references) and the second is warm (both
sides keep the grader's references; only the cache side keeps compiled programs). Exercise 2's
blank is filled with the solution. --train-steps N adds `jaxninja train --steps N` (the run's own
µs/step as it prints it as well: a program loaded from the cache runs as fast as one compiled).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
EX2 = "ex2_cross_entropy.py"
EX2_ANSWER = (
    "jax.nn.softmax(logits, 1).at[jnp.arange(logits.shape[0]), Yb].add(-1) / logits.shape[0]"
)
TURNS = ("first", "second")  # a command's first run in a clean cache, then its second
SIDES = {"no cache": {"JAX_ENABLE_COMPILATION_CACHE": "false"}, "cache": {}}


def cpu_seconds() -> float:
    """CPU seconds (user and system) of this process's finished children."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[Took, str]:
    """How long a fresh `jaxninja ARGS` process took, and its stdout."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-m", "jaxninja.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    took = Took(time.perf_counter() - t0, cpu_seconds() - c0)
    if done.returncode != 0:
        failed = f"jaxninja {' '.join(args)} failed ({done.returncode})"
        sys.exit(f"{failed}:\n{done.stdout}{done.stderr}")
    return took, done.stdout


class Took(NamedTuple):
    wall: float  # seconds
    cpu: float  # CPU seconds: what the other processes on a busy machine sway least


def exercise_folder(where: Path, env: dict[str, str]) -> None:
    """`jaxninja exercises WHERE`, with exercise 2's blank filled."""
    run(["exercises", str(where)], env, where.parent)
    path = where / EX2
    text = path.read_text()
    if "dlogits = ...  # TODO" not in text:
        sys.exit(f"{path}: no `dlogits = ...  # TODO` line to fill")
    path.write_text(text.replace("dlogits = ...  # TODO", f"dlogits = {EX2_ANSWER}"))


def commands(folder: Path, train_steps: int) -> dict[str, list[str]]:
    wanted = {
        "check": ["check"],
        "grade ex2": ["check", "--candidate", f"{folder / EX2}:cross_entropy_backward",
                      "--exercise", "2"],
    }  # fmt: skip
    if train_steps:
        wanted[f"train {train_steps}"] = [
            "train", "--steps", str(train_steps), "--no-progress", "--out", "{out}",
        ]  # fmt: skip
    return wanted


def floor_seconds(env: dict[str, str], cwd: Path) -> Took:
    """What no command can go below: a process that imports the command line (and jax)."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    subprocess.run([sys.executable, "-c", "import jaxninja.cli"], env=env, cwd=cwd, check=True)
    return Took(time.perf_counter() - t0, cpu_seconds() - c0)


def us_per_step(stdout: str) -> float | None:
    found = re.findall(r"([0-9.]+)\s*µs/step", stdout)
    return float(found[-1]) if found else None


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measure (3)")
    parser.add_argument("--train-steps", type=int, default=0, help="add a training run (0: none)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="compile-cache-bench-"))
    data = os.environ.get("JAXNINJA_DATA", str(ROOT / "data" / "names.txt"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    base |= {"JAXNINJA_DATA": data}
    exercise_folder(tmp / "ex", {**base, "JAXNINJA_CACHE": "off"})
    wanted = commands(tmp / "ex", args.train_steps)
    times = {(c, s, turn): [] for c in wanted for s in SIDES for turn in TURNS}
    speeds = {(c, s): [] for c in wanted for s in SIDES}
    floor = [floor_seconds(base, tmp) for _ in range(args.repeats)]
    print(f"{os.cpu_count()} cores; load before: {load()}; the floor, a process that imports "
          f"jaxninja.cli and exits: {statistics.median(f.wall for f in floor):.2f} s wall, "
          f"{statistics.median(f.cpu for f in floor):.2f} s CPU", flush=True)  # fmt: skip
    for repeat in range(args.repeats):
        for name, argv in wanted.items():
            order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                env = {**base, **SIDES[side], "JAXNINJA_CACHE": tempfile.mkdtemp(dir=tmp)}
                for turn in TURNS:
                    out = tempfile.mkdtemp(dir=tmp)  # a training run of its own each time
                    took, stdout = run([a.replace("{out}", out) for a in argv], env, tmp)
                    times[name, side, turn].append(took)
                    if turn == "second" and (speed := us_per_step(stdout)) is not None:
                        speeds[name, side].append(speed)
        print(f"repeat {repeat + 1} of {args.repeats} done; load {load()}", flush=True)
    print(f"\nthe median of {args.repeats}, each a fresh process; load after: {load()}")
    for what in Took._fields:
        median = {k: statistics.median(getattr(x, what) for x in v) for k, v in times.items()}
        print(f"\n{what} seconds")
        print(f"{'command':12s} {'side':9s} {'first':>7s} {'second':>7s}")
        for name in wanted:
            for side in SIDES:
                first, second = median[name, side, "first"], median[name, side, "second"]
                print(f"{name:12s} {side:9s} {first:7.2f} {second:7.2f}")
        print(f"{'no cache / cache':22s} {'first':>7s} {'second':>7s}")
        for name in wanted:
            ratios = [median[name, "no cache", t] / median[name, "cache", t] for t in TURNS]
            print(f"{name:22s} {ratios[0]:6.2f}x {ratios[1]:6.2f}x")
    for (name, side), values in speeds.items():
        if values:
            print(f"{name} {side}: {statistics.median(values):.1f} µs/step (second run, median)")


if __name__ == "__main__":
    main()
