"""How long a learner waits for a grade: `jaxninja check --candidate` on exercises 1, 2 and 3
(and 5 and 6 with --exercises), each a fresh process as a learner runs it, cold (an empty
reference cache) and warm (the cache the cold run left), against the grader of another commit
(by default the one before the cache) in the same run. Also the floor no grade can go below: a
process that only imports jax.

    python benchmarks/grade_speed.py [--baseline REV] [--repeats 3] [--exercises 1 2 3 5 6]

The exercise files are filled with the project's own solutions, so every grade compiles and
compares a complete answer. The baseline's code is `git archive`d into a temporary folder and
put first on PYTHONPATH, and runs once, on an empty reference cache of its own: its cold grade
(the default baseline has no cache, so its cold and warm are the same work; exercises 5 and 6
need a baseline that has them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxninja.learn.files import GRADE_COMMANDS, write_exercises  # noqa: E402
from tests.exercise_fill import fill_ex5, fill_ex6, filled_ex1  # noqa: E402

BASELINE = "e286e35"  # the last commit before the grader kept its references
ANSWERS = {  # exercise file -> (its blank, the project's answer, the import it needs)
    "ex2_cross_entropy.py": ("dlogits_fused(logits, Yb)", "dlogits_fused"),
    "ex3_batchnorm.py": ("dhprebn_fused(dhpreact, bngain, bnvar_inv, bnraw)", "dhprebn_fused"),
}


def filled_folder(where: Path) -> dict[int, str]:
    """The exercises, filled; exercise -> its --candidate spec."""
    write_exercises(where)
    specs = {1: f"{filled_ex1(where, (where / 'ex1_backward.py').read_text())}:backward"}
    for exercise, (name, (answer, helper)) in enumerate(ANSWERS.items(), start=2):
        text = (where / name).read_text().replace("= ...  # TODO", f"= {answer}")
        helper_import = f"from jaxninja.models.mlp_backward import {helper}"
        text = text.replace("import jax\n", f"import jax\n{helper_import}\n")
        (where / name).write_text(text)
        specs[exercise] = f"{where / name}:{GRADE_COMMANDS[name].split(':')[1].split()[0]}"
    for exercise, name, fill in [
        (5, "ex5_wavenet.py", fill_ex5),
        (6, "ex6_transformer.py", fill_ex6),
    ]:
        (where / name).write_text(fill((where / name).read_text()))
        specs[exercise] = str(where / name)  # the module: its functions fill the seats
    return specs


def seconds(command: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return took


def baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "jaxninja", "torch_ref"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"commit to compare ({BASELINE})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each warm grade (3)")
    parser.add_argument(
        "--exercises", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3, 5, 6],
        help="which exercises to grade (1 2 3)",
    )  # fmt: skip
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grade-speed-"))
    specs = filled_folder(tmp / "ex")
    data = os.environ.get("JAXNINJA_DATA", str(ROOT / "data" / "names.txt"))
    env = {**os.environ, "JAXNINJA_DATA": data}
    old = {**env, "PYTHONPATH": str(baseline_tree(args.baseline, Path(tempfile.mkdtemp())))}
    cli = [sys.executable, "-m", "jaxninja.cli", "check", "--exercise"]
    floor = statistics.median(
        seconds([sys.executable, "-c", "import jax"], env, tmp) for _ in range(args.repeats)
    )
    print(f"grade times, s (one process each; {os.cpu_count()} cores; import jax alone: "
          f"{floor:.2f} s)")  # fmt: skip
    print(f"{'exercise':>8s}  {'baseline':>8s}  {'cold':>6s}  {'warm':>6s}  {'speed-up':>8s}")
    for exercise in args.exercises:
        command = [*cli, str(exercise), "--candidate", specs[exercise]]
        before = seconds(command, {**old, "JAXNINJA_CACHE": tempfile.mkdtemp()}, tmp)
        cache = {**env, "JAXNINJA_CACHE": tempfile.mkdtemp()}
        cold = seconds(command, cache, tmp)
        warm = statistics.median(seconds(command, cache, tmp) for _ in range(args.repeats))
        print(f"{exercise:8d}  {before:8.2f}  {cold:6.2f}  {warm:6.2f}  {before / warm:7.1f}x")
    print(f"baseline: {args.baseline}; warm: the median of {args.repeats}")


if __name__ == "__main__":
    main()
