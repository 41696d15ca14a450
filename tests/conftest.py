"""Strict JAX for every test: float64 available, rank promotion an error, full-precision matmuls,
and the CPU split into 4 devices for the data-parallel tests (one device unless a test asks);
the grader's cache in a temporary folder; JAX's persistent compilation cache on, so that a
program compiled once (by any test, xdist worker, or process a test starts) is loaded after.

The caches are set in environment variables, which the processes the tests start (the CLI, a
notebook's kernel) and pytest-xdist's workers inherit, and in this process's jax.config: jax
reads its variables when first imported, and a plugin (jaxninja's own parity plugin) imports it
before this file runs.

PyTorch on one thread (OMP_NUM_THREADS, read when torch is first imported, which is after this
file): its tensors here are small, and beside XLA's threads and xdist's other worker on 2 cores a
second thread made the notebook's loop 6x slower (27 s against 4.2 s for 1000 steps)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XLA_CACHE = ROOT / ".cache" / "xla"
# the first process of a run: xdist's controller, or pytest alone (xdist's workers, and every
# process a test starts, inherit what it sets below)
FIRST = "JAXNINJA_TEST_RUN_CACHE" not in os.environ

# the grader's reference cache: a folder of this run's own, never the user's cache directory,
# shared by the run's processes, so that a reference one computed the others read
if FIRST:
    os.environ["JAXNINJA_TEST_RUN_CACHE"] = tempfile.mkdtemp(prefix="jaxninja-test-cache-")
    atexit.register(shutil.rmtree, os.environ["JAXNINJA_TEST_RUN_CACHE"], ignore_errors=True)
os.environ["JAXNINJA_CACHE"] = os.environ["JAXNINJA_TEST_RUN_CACHE"]

# JAX's compiled programs, kept across tests, workers and runs in .cache/xla (git-ignored);
# $JAX_COMPILATION_CACHE_DIR puts them elsewhere (a fresh folder: a cold run, as CI has). Every
# program is kept, however quick its compile (jaxninja/compile_cache.py says why). No size bound:
# JAX's bound (jax_compilation_cache_max_size) reads every entry's size and time on each write,
# which made a cold run of the suite quadratic in its ~2000 programs; instead what no run read
# for compile_cache.KEEP_DAYS goes, once a run. (`rm -rf .cache` empties it.)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(XLA_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# XLA compiles all the suite's programs as checks and grades compile theirs
# (compile_cache.SMALL_COMPILE: LLVM's optimizations off, XLA's older fusion emitters): most of
# the suite's time is compiling small programs it runs a few times, and these halve a cold run's
# time (-n 2 on 2 cores: 255 s against 547 s). The numerics are IEEE either way (XLA's fast math
# is off by default). Flags the user sets come after and win:
# XLA_FLAGS="--xla_backend_optimization_level=3 --xla_cpu_use_fusion_emitters=true" runs it as
# XLA compiles by default.
from jaxninja.compile_cache import SMALL_COMPILE  # noqa: E402 (jax is imported, not started)

SUITE_XLA_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in SMALL_COMPILE.items())
if FIRST:
    os.environ["XLA_FLAGS"] = f"{SUITE_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxninja import compile_cache  # noqa: E402

if FIRST and Path(os.environ["JAX_COMPILATION_CACHE_DIR"]) == XLA_CACHE:
    compile_cache.prune(XLA_CACHE, compile_cache.KEEP_DAYS)
# (this process imported jax before the variables above were set)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_num_cpu_devices", 4)


@pytest.fixture(scope="session")
def names_path() -> Path:
    """data/names.txt, downloaded (SHA-256 checked) on first use if it is not there."""
    from jaxninja.data import download_names

    path = ROOT / "data" / "names.txt"
    if not path.exists():
        download_names(path)
    return path


@pytest.fixture(scope="session")
def splits(names_path):
    from jaxninja.data import load_splits

    return load_splits(names_path, 3)


@pytest.fixture(scope="session")
def few_names(names_path, tmp_path_factory) -> Path:
    """names.txt's first 2,000 names and its longest (so that a GPT's rows keep block size 16):
    for tests of the command line that evaluate every split, which on all 32,033 names take
    seconds each under the suite's unoptimized XLA."""
    names = names_path.read_text().split()
    path = tmp_path_factory.mktemp("few-names") / "names.txt"
    path.write_text("\n".join([*names[:2000], max(names, key=len)]) + "\n")
    return path
