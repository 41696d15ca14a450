"""torch_ref: the notebook's manual backward (exercises 1-3) against its own autograd."""

import numpy as np
import pytest

torch_ref = pytest.importorskip("torch_ref")

from jaxninja.config import ModelConfig  # noqa: E402
from jaxninja.models.mlp import GRAD_ORDER, make_case  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_manual_matches_autograd(splits, dtype):
    cfg = ModelConfig(vocab_size=splits.vocab.size, dtype=dtype)
    case = make_case(cfg, *splits.data["train"], 32, seed=0)
    r = torch_ref.run_case(*case)
    assert list(r["manual"]) == list(GRAD_ORDER) and len(GRAD_ORDER) == 26
    for name in GRAD_ORDER:
        got, want = r["manual"][name], r["autograd"][name]
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape
        # torch.allclose's defaults, as the notebook's cmp uses
        assert np.allclose(got, want, rtol=1e-5, atol=1e-8), name
    for name, got in r["fused"].items():
        assert np.allclose(got, r["autograd"][name], rtol=1e-5, atol=1e-8), name
    assert abs(r["loss"] - float(-r["values"]["logprobs"][np.arange(32), case.Yb].mean())) < 1e-6


def test_values_and_cmp_table(splits):
    cfg = ModelConfig(vocab_size=splits.vocab.size, dtype="float64")
    case = make_case(cfg, *splits.data["train"], 8, seed=1)
    r = torch_ref.run_case(*case)
    assert r["values"]["embcat"].shape == (8, 30) and r["values"]["logit_maxes"].shape == (8, 1)
    table = torch_ref.cmp_table(r["manual"], r["autograd"])
    assert len(table.splitlines()) == 26 and "approximate: False" not in table


def test_inputs_are_bit_identical(splits):
    """The shared case is numpy: torch sees exactly the arrays JAX sees."""
    cfg = ModelConfig(vocab_size=splits.vocab.size, dtype="float32")
    a = make_case(cfg, *splits.data["train"], 32, seed=3)
    b = make_case(cfg, *splits.data["train"], 32, seed=3)
    c = make_case(cfg, *splits.data["train"], 32, seed=4)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]) and a.params[k].dtype == np.float32
        assert not np.array_equal(a.params[k], c.params[k])
    assert np.array_equal(a.Xb, b.Xb) and not np.array_equal(a.Xb, c.Xb)
