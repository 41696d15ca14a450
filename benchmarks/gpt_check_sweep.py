"""False alarms of `jaxninja check --model gpt`: the check of the GPT's own (right) backward on
many seeds and small batches, where a calibrated verdict is most likely to cry wolf.

    python benchmarks/gpt_check_sweep.py [--seeds 0:40] [--batch-sizes 2,3] [--dtype float32]
        [--n-layer 4 --n-embd 64 --n-head 4]

Prints every failing case (none is expected), the rows float32 could not judge, and the worst
ratio of a cell's error to its bound over every case (1 would be the edge of a false alarm).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxninja.check import gpt as gpt_check  # noqa: E402
from jaxninja.config import model_config  # noqa: E402
from jaxninja.data import load_rows, resolve_data_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="first:last (last excluded)")
    parser.add_argument("--batch-sizes", default="2,3")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    sizes = {"n_layer": 4, "n_embd": 64, "n_head": 4}
    for name, default in sizes.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    args = parser.parse_args()
    rows = load_rows(resolve_data_path(None), 16)
    cfg = model_config("gpt", "check", vocab_size=rows.vocab.size, dtype=args.dtype,
                       **{k: getattr(args, k) for k in sizes})  # fmt: skip
    first, last = map(int, args.seeds.split(":"))
    cases, alarms, worst, t0 = 0, 0, 0.0, time.perf_counter()
    for batch_size in map(int, args.batch_sizes.split(",")):
        for seed in range(first, last):
            report = gpt_check.run_check(cfg, *rows.data["train"], batch_size, seed)
            cells = [row[w] for row in report.rows for w in report.ways if row.get(w)]
            worst = max([worst, *(c["error"] / c["bound"] for c in cells if c.get("bound"))])
            cases, alarms = cases + 1, alarms + (not report.ok)
            if not report.ok:
                print(f"FALSE ALARM: batch {batch_size}, seed {seed}: {report.first_failure()}")
            if report.cannot_tell():
                print(f"batch {batch_size}, seed {seed}: cannot tell {report.cannot_tell()}")
    print(
        f"{cases} cases ({args.dtype}, {cfg.n_layer} layers of {cfg.n_head} heads, n_embd "
        f"{cfg.n_embd}): {alarms} false alarms, worst error/bound {worst:.3f}, "
        f"{time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
