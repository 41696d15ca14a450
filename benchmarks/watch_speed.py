"""How long a learner waits for a re-grade: `jaxninja check --candidate FILE --exercise N` as a
fresh process each time (warm: the reference cache on disk), against one `--watch` process that
grades the file again on each save (jax imported once, the references in memory).

    python benchmarks/watch_speed.py [--exercises 2,1,5,6] [--saves 5] [--no-compile-cache]

Each exercise file is filled with the project's own solution; each save appends a comment, so
the grade is of a new file (imported afresh, the learner's function traced again). The program
it compiles to is the same, so JAX's persistent compilation cache (compile_cache.py) loads it;
`--no-compile-cache` turns that cache off, so that every grade compiles as a real edit would.
Under --watch, two figures: the grade itself (the watcher's own "in X s"), and save-to-verdict,
which adds the polling (up to POLL) and the wait for the file to hold still (one POLL).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.grade_speed import filled_folder, seconds  # noqa: E402
from jaxninja.learn.files import source  # noqa: E402
from tests.exercise_fill import fill_ex5, fill_ex6  # noqa: E402

JAXNINJA = [sys.executable, "-m", "jaxninja"]  # this Python's, whatever is on PATH
FILLS = {5: ("ex5_wavenet.py", fill_ex5), 6: ("ex6_transformer.py", fill_ex6)}


def specs(where: Path) -> dict[int, str]:
    """Every exercise filled: exercise -> its --candidate spec."""
    found = filled_folder(where)
    for exercise, (name, fill) in FILLS.items():
        (where / name).write_text(fill(source(name).read_text()))
        found[exercise] = str(where / name)
    return found


def fresh(spec: str, exercise: int, env, cwd: Path, saves: int) -> list[float]:
    command = [*JAXNINJA, "check", "--candidate", spec, "--exercise", str(exercise)]
    seconds(command, env, cwd)  # the cold one: the references computed and kept on disk
    return [seconds(command, env, cwd) for _ in range(saves)]


def _until(process: subprocess.Popen, pattern: str, timeout: float = 600.0) -> re.Match:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        line = process.stdout.readline()
        if not line:
            sys.exit(f"the watcher ended: {process.stderr.read()}")
        if m := re.search(pattern, line):
            return m
    sys.exit(f"no line matching {pattern!r} in {timeout:g} s")


def watched(spec: str, exercise: int, env, cwd: Path, saves: int):
    """(the grade's own seconds, save-to-verdict seconds) of each save under one --watch."""
    command = [*JAXNINJA, "check", "--candidate", spec, "--exercise", str(exercise), "--watch"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(command, env=env, cwd=cwd, text=True, **pipes)
    done = r": (?:not )?graded in ([0-9.]+) s; watching"
    _until(process, done)
    path, grades, waits = Path(spec.split(":")[0]), [], []
    for i in range(saves):
        with path.open("a") as f:
            f.write(f"# save {i}\n")
        t0 = time.perf_counter()
        grades.append(float(_until(process, done).group(1)))
        waits.append(time.perf_counter() - t0)
    process.send_signal(signal.SIGINT)
    if process.wait(timeout=60) != 0:
        sys.exit(f"Ctrl-C ended the watcher with {process.returncode}")
    return grades, waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exercises", default="2,1,5,6")
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--no-compile-cache", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where, cache = Path(tmp) / "ex", Path(tmp) / "cache"
        env = {**os.environ, "JAXNINJA_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        env.setdefault("JAXNINJA_DATA", str(ROOT / "data" / "names.txt"))
        if args.no_compile_cache:
            env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        found = specs(where)
        for exercise in map(int, args.exercises.split(",")):
            spec = found[exercise]
            cold_and_fresh = fresh(spec, exercise, env, where, args.saves)
            grades, waits = watched(spec, exercise, env, where, args.saves)
            med = statistics.median
            print(
                f"exercise {exercise}: fresh process {med(cold_and_fresh):.2f} s (median of "
                f"{args.saves}); --watch: the grade {med(grades):.2f} s, save to verdict "
                f"{med(waits):.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
