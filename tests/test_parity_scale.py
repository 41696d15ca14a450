"""Bounded cost (benchmarks/parity_scale.py has the figures): the chunked reductions give the
exact path's numbers, NaN and inf included; a spilled run reads back what it held, in its order,
and its files go with the seed; a compare whose weights spill judges as one that does not."""

import os

import numpy as np
import pytest

from jaxninja.parity import reduce, spill
from jaxninja.parity.verdict import maxdiff, scale

torch = pytest.importorskip("torch")

from jaxninja import parity as P  # noqa: E402


def _exact_maxdiff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a - b)[ok].max()) if ok.any() else 0.0


@pytest.mark.parametrize("n", [0, 1, reduce.CHUNK - 1, reduce.CHUNK + 3, 3 * reduce.CHUNK])
def test_chunked_reductions_are_exact(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n)
    assert maxdiff(a, b) == _exact_maxdiff(a, b)
    assert scale(a) == (float(np.abs(a).max()) if n else 0.0)
    if n > 2:  # one NaN, one inf: the exact path, over the entries finite in both
        a[1], b[n - 2] = np.nan, np.inf
        assert maxdiff(a, b) == _exact_maxdiff(a, b)
        assert scale(b) == float(np.abs(b[np.isfinite(b)]).max())
        assert not np.isfinite(reduce.max_abs_diff(a, b))


def test_spilled_rows_read_back_in_order():
    big = np.arange(spill.SPILL_BYTES // 8 + 1, dtype=np.float64)
    rows = {("out", "b"): big, ("tap", "a"): np.ones(3), ("in", "c"): None}
    folder = spill.seed_folder()
    held = spill.OnDisk(rows, folder)
    assert list(held) == list(rows) and len(held) == 3
    assert np.array_equal(held[("out", "b")], big) and held.get(("in", "c")) is None
    assert len(os.listdir(folder.name)) == 1  # only the large one went to disk


def test_the_files_go_with_the_last_run_holding_them():
    folder = spill.seed_folder()
    path = folder.name
    held = spill.OnDisk({"x": np.zeros(spill.SPILL_BYTES)}, folder)
    del folder
    assert os.listdir(path)  # the run still holds it
    del held
    assert not os.path.exists(path)


def test_a_compare_that_spills_judges_as_one_that_does_not(monkeypatch):
    def jax_fn(p, x):
        return (x @ p["w"]).sum(-1)

    def torch_fn(p, x):
        return (x @ p["w"]).sum(-1)

    params = {"w": P.normal((64, 64))}
    args = (P.normal((4, 64)),)
    held = P.compare(jax_fn, torch_fn, params, *args, seeds=(0,))
    monkeypatch.setattr(spill, "SPILL_BYTES", 1)
    spilled = P.compare(jax_fn, torch_fn, params, *args, seeds=(0,))
    assert held.rows == spilled.rows and held.ok


def test_an_in_place_op_on_a_large_input_still_runs():
    """float64 gives torch its large leaves uncloned; autograd refuses an in-place op on one,
    and the run is made again on clones: the same verdict as a function without it."""

    def torch_fn(p, x):
        x.mul_(2)
        return x.sum(-1)

    def jax_fn(p, x):
        return (2 * x).sum(-1)

    big = P.normal((4, 2**16))  # 2 MiB in float64
    assert P.compare(jax_fn, torch_fn, {}, big, seeds=(0,), dtype="float64").ok
