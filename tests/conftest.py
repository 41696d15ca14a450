"""Strict JAX for every test: float64 available, rank promotion an error, full-precision matmuls,
and the CPU split into 4 devices for the data-parallel tests (one device unless a test asks);
the grader's cache in a temporary folder."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# the grader's reference cache: a folder of this run's own, never the user's cache directory
# (subprocesses the tests start inherit it)
os.environ["JAXNINJA_CACHE"] = tempfile.mkdtemp(prefix="jaxninja-test-cache-")
atexit.register(shutil.rmtree, os.environ["JAXNINJA_CACHE"], ignore_errors=True)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_num_cpu_devices", 4)

ROOT = Path(__file__).resolve().parent.parent


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
