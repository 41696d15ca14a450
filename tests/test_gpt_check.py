"""Part 6's check, `jaxninja check --model gpt`: the GPT's hand-written backward against jax.grad,
PyTorch autograd on makemore's classes and each layer's jax.vjp, on parity's engine. It passes
at makemore's sizes in float32 and float64; a backward with LayerNorm's third term dropped fails
in both, naming the first tensor it reaches; small batches of other seeds raise no false alarm;
the model's own classic mistakes (a residual's two gradients not added, the position table's
gradient not summed over the batch) fail with their hint.

The failing and sweeping cases run at small sizes (2 Blocks of 2 heads, n_embd 16), to keep
them short; a replaced layer is traced once per hook (models/gpt.py's `Backwards`).
"""

from __future__ import annotations

import json

import pytest

from jaxninja.check import gpt as gpt_check
from jaxninja.cli import main
from jaxninja.config import model_config
from jaxninja.data import load_rows
from jaxninja.models import gpt
from jaxninja.models import transformer as tf
from tests.mutate import mutate

SMALL = {"n_layer": 2, "n_embd": 16, "n_head": 2}
THIRD_TERM = " - xhat * (dnorm * xhat).mean(-1, keepdims=True)"


@pytest.fixture(scope="module")
def rows(names_path):
    return load_rows(names_path, 16)


def _small(rows, dtype: str):
    return model_config("gpt", "check", vocab_size=rows.vocab.size, dtype=dtype, **SMALL)


def test_check_passes_at_makemores_sizes_row_by_row_in_the_backwards_order(names_path, capsys):
    args = ["check", "--model", "gpt", "--data", str(names_path)]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = model_config("gpt", "check")
    assert report["ok"] and report["model"] == "gpt" and report["dtype"] == "float32"
    names = [r["name"] for r in report["rows"]]
    assert names == list(gpt.grad_order(cfg)) and len(names) == 89
    assert names[:4] == ["lm_head", "lm_head.weight", "ln_f", "ln_f.weight"]
    assert names[-4:] == ["wpe", "wpe.weight", "wte", "wte.weight"]
    assert report["rows"][0]["shape"] == [32, 16, 27]  # makemore's rows: (B, T, V)
    ways = ("jax.grad", "torch", "layer vjp", "grad~torch")
    assert all(r[w]["verdict"] == "ok" for r in report["rows"] for w in ways), report
    assert report["skipped"] == [] and not report["first_failure"]
    assert abs(report["losses"]["stack"] - report["losses"]["torch"]) < 1e-5  # float32
    assert main([*args, "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "OK: 89 tensors, 356 comparisons, dtype float64" in out, out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layernorms_third_term_dropped_fails_at_the_first_tensor_it_reaches(rows, dtype):
    """ln_f's backward runs first: its dx is the last Block's output row, h.1."""
    dropped = gpt.Backwards(layernorm=mutate(tf.layernorm_backward, THIRD_TERM, ""))
    report = gpt_check.run_check(
        _small(rows, dtype), *rows.data["train"], with_torch=False, backwards=dropped
    )
    first = report.first_failure()
    assert not report.ok and first["name"] == "h.1" and first["verdict"] == "wrong", first
    assert first["way"] == "jax.grad" and "dh.1 is off by" in first["message"]
    passed = [r["name"] for r in report.rows[:5]]  # lm_head ... ln_f.bias: before the mistake
    assert all(r["jax.grad"]["verdict"] == "ok" for r in report.rows[:5]), passed
    failing = {n for n, w, _ in report.failures() if w == "layer vjp"}
    assert "h.1" in failing  # ln_f's own vjp, fed the same gradient, disagrees at its own row


@pytest.mark.parametrize(("batch_size", "seed"), [(2, 11), (3, 29), (2, 57), (3, 83)])
def test_small_batches_of_hidden_seeds_raise_no_false_alarm(rows, batch_size, seed):
    report = gpt_check.run_check(_small(rows, "float32"), *rows.data["train"], batch_size, seed)
    assert report.ok, report.first_failure()
    assert report.cannot_tell() == []  # float32 judges every row


@pytest.mark.parametrize(
    ("mistake", "row", "hint"),
    [
        (  # the attention's residual: the Block's input gets the branch's gradient alone
            lambda: mutate(gpt.block_backward, "return g, dx + dh", "return g, dx"),
            "h.0",
            "dh.0 is one of its residual's two gradients alone",
        ),
        (  # the mlp's residual: x2's gradient is the skip's alone
            lambda: mutate(gpt.block_backward, "dx = dx + dh  # the residual", "dx = dx  #"),
            "h.1.attn.c_proj",
            "d x is their sum (dh.1 plus f's)",
        ),
    ],
    ids=["attention's residual", "mlp's residual"],
)
def test_a_residual_not_added_is_named_with_its_hint(rows, mistake, row, hint):
    broken = gpt.Backwards(block=mistake())
    report = gpt_check.run_check(
        _small(rows, "float64"), *rows.data["train"], with_torch=False, backwards=broken
    )
    first = report.first_failure()
    assert first["name"] == row and hint in first["message"], first


def test_the_position_tables_gradient_not_summed_over_the_batch_has_its_hint(rows, capsys):
    mean = mutate(tf.embeddings_backward, "dpos = dx.sum(0)", "dpos = dx.mean(0)")
    report = gpt_check.run_check(
        _small(rows, "float64"), *rows.data["train"], with_torch=False,
        backwards=gpt.Backwards(embeddings=mean),
    )  # fmt: skip
    first = report.first_failure()
    assert first["name"] == "wpe.weight", first
    assert "its gradient is dx summed over the batch" in first["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--block-size", "8"], "its row needs block size 16, above 8; give --block-size 16"),
    ],
)
def test_bad_sizes_are_one_line(names_path, capsys, args, message):
    assert main(["check", "--model", "gpt", "--data", str(names_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
