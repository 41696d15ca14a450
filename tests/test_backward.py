"""The manual backward of the whole model against jax.grad and torch_ref, at every grain.

Tolerances are parity's (parity/verdict.py; float64: within 16x the row's own sensitivity to a
few-ulp move of the inputs, + 1e-12 of the largest gradient; float32: the distance from a
float64 truth within 16x float32 autodiff's own, + 4 ulps of the row's scale).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxninja.check.mlp import WAYS, gradient_sources, rules, run_check, shapes_of
from jaxninja.config import ModelConfig
from jaxninja.data import build_dataset
from jaxninja.models.mlp import PARAMS, Case, forward_chunked, forward_loss, make_case, to_device
from jaxninja.models.mlp_backward import backward_atomic, loss, loss_and_grads
from jaxninja.parity.named import judge_rows
from jaxninja.parity.sides import check_context, torch_available

HAS_TORCH = torch_available()
# jitted, as training runs them (eager, each of their ops would compile on its own)
grad_loss = jax.jit(jax.grad(loss))


def assert_all_ways(case: Case, dtype: str):
    with check_context(dtype):
        sources, losses, values = gradient_sources(case, 1e-5, HAS_TORCH)
    rows = judge_rows(sources, rules(shapes_of(case, values[dtype])), dtype)
    bad = [(r["name"], w, r[w]) for r in rows for w in WAYS if r[w] and r[w]["verdict"] != "ok"]
    assert not bad, bad
    # the manual backward differs from jax.grad by rounding alone, never by a missing term
    for name in sources["manual"]:
        assert np.abs(sources["manual"][name]).max() > 0 or name == "b1", name
    assert len({round(v, 5) for v in losses.values()}) == 1, losses
    return rows


@pytest.mark.parametrize(
    ("dtype", "seed", "batch_size", "n_hidden", "block_size"),
    [
        ("float32", 0, 32, 64, 3),  # the notebook's case, both dtypes
        ("float64", 0, 32, 64, 3),
        ("float32", 1, 2, 64, 3),  # BatchNorm over 2 examples: ill-conditioned in float32
        ("float64", 1, 2, 64, 3),
        ("float32", 2, 3, 17, 3),
        ("float64", 3, 256, 64, 3),
        ("float32", 4, 32, 200, 1),
        ("float64", 5, 7, 8, 8),
    ],
)
def test_model_three_ways(names_path, dtype, seed, batch_size, n_hidden, block_size):
    """float32 included at batches of 2 and 3, where BatchNorm is ill-conditioned: no false alarm
    (benchmarks/check_sweep.py runs 560 such cases)."""
    from jaxninja.data import load_splits

    splits = load_splits(names_path, block_size)
    cfg = ModelConfig(
        vocab_size=splits.vocab.size, block_size=block_size, n_hidden=n_hidden, dtype=dtype
    )
    report = run_check(cfg, *splits.data["train"], batch_size=batch_size, seed=seed)
    assert report.ok, report.failures()
    assert len(report.rows) == 26
    if not HAS_TORCH:
        assert report.skipped and "torch" in report.skip_reason


def _case(splits, dtype="float64", batch_size=32, seed=0, n_hidden=64) -> Case:
    cfg = ModelConfig(vocab_size=splits.vocab.size, dtype=dtype, n_hidden=n_hidden)
    return make_case(cfg, *splits.data["train"], batch_size, seed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ties_at_the_max(splits, dtype):
    """Two logits equal and largest in every row: the max's gradient routes to one of them."""
    case = _case(splits, dtype)
    p = {k: v.copy() for k, v in case.params.items()}
    p["W2"][:, 2] = p["W2"][:, 1]
    p["b2"][1] = p["b2"][2] = 20.0
    case = case._replace(params=p)
    _, values = forward_chunked(to_device(p), case.Xb, case.Yb)
    logits = np.asarray(values["logits"])
    assert np.array_equal(logits[:, 1], logits[:, 2]) and (logits.argmax(1) == 1).all()
    assert_all_ways(case, dtype)


@pytest.mark.parametrize("scale", [0.0, 1e-6])
def test_batchnorm_column_with_near_zero_variance(splits, scale):
    case = _case(splits)
    p = {k: v.copy() for k, v in case.params.items()}
    p["W1"][:, 0] *= scale  # hprebn[:, 0] is (nearly) the constant b1[0]
    # 0.5 sums and averages exactly, so a constant column's bndiff is exactly 0 in every
    # framework (another b1[0] leaves rounding noise there that each framework rounds its own way)
    p["b1"][0] = 0.5
    case = case._replace(params=p)
    _, values = forward_chunked(to_device(p), case.Xb, case.Yb)
    assert float(values["bnvar"][0, 0]) < 1e-9
    assert_all_ways(case, "float64")


def test_chunked_and_compact_forward_agree(splits):
    case = _case(splits)
    p = to_device(case.params)
    chunked = forward_chunked(p, case.Xb, case.Yb)[0]
    compact = forward_loss(p, case.Xb, case.Yb)
    assert abs(float(chunked) - float(compact)) < 1e-13


def test_fused_loss_finite_differences(splits):
    case = _case(splits, batch_size=8, n_hidden=16)
    p = to_device(case.params)
    f = jax.jit(lambda q: loss(q, case.Xb, case.Yb))
    check_grads(f, (p,), order=1, modes=("rev",), eps=1e-6)


def test_custom_vjp_is_the_fused_backward(splits):
    case = _case(splits)
    p = to_device(case.params)
    g = grad_loss(p, case.Xb, case.Yb)
    _, fused = loss_and_grads(p, case.Xb, case.Yb)
    for k in PARAMS:  # the same function underneath; XLA may fuse the two programs differently
        assert np.allclose(g[k], fused[k], rtol=1e-13, atol=1e-16), k
    value, g2 = jax.jit(jax.value_and_grad(loss), static_argnums=3)(p, case.Xb, case.Yb, 1e-5)
    assert float(value) == float(forward_loss(p, case.Xb, case.Yb))
    assert all(np.allclose(g[k], g2[k], rtol=1e-13, atol=1e-16) for k in PARAMS)


def test_custom_vjp_under_vmap(splits):
    """Per-example batches under vmap give what a Python loop over them gives."""
    X, Y = splits.data["train"]
    case = _case(splits)
    p = to_device(case.params)
    Xs, Ys = X[:96].reshape(3, 32, -1), Y[:96].reshape(3, 32)
    batched = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(p, Xs, Ys)
    for i in range(3):
        one = grad_loss(p, Xs[i], Ys[i])
        for k in PARAMS:  # vmapped matmuls may sum in another order
            assert np.allclose(batched[k][i], one[k], rtol=1e-12, atol=1e-15), k


def test_atomic_backward_float32_is_float32(splits):
    case = _case(splits, "float32")
    p = to_device(case.params)
    _, values = forward_chunked(p, case.Xb, case.Yb)
    grads = backward_atomic(p, values, case.Xb, case.Yb)
    assert {g.dtype for g in grads.values()} == {jnp.dtype("float32")}


def test_dC_sums_repeated_rows():
    """A character used twice in one context gets both rows of demb (scatter-add, not set)."""
    from jaxninja.data import Vocab

    vocab = Vocab(("a", "b"))
    X, Y = build_dataset(["aab", "ba"], vocab, 3)
    cfg = ModelConfig(vocab_size=3, n_hidden=5, dtype="float64")
    case = make_case(cfg, X, Y, len(X), seed=0)
    assert_all_ways(case, "float64")


def test_optax_through_the_custom_vjp(splits):
    """optax on jax.grad(loss) applies exactly the hand-written fused gradients."""
    import optax

    case = _case(splits, n_hidden=16)
    p = to_device(case.params)
    opt = optax.sgd(0.1, momentum=0.9)  # linear in the gradient (adam would amplify b1's noise)
    state = opt.init(p)
    update = jax.jit(opt.update)
    updates, _ = update(grad_loss(p, case.Xb, case.Yb), state, p)
    _, fused = loss_and_grads(p, case.Xb, case.Yb)
    expected, _ = update({k: fused[k] for k in PARAMS}, state, p)
    for k in PARAMS:
        assert np.allclose(updates[k], expected[k], rtol=1e-12, atol=1e-15), k
    value = jax.jit(loss)
    stepped = jax.jit(optax.apply_updates)(p, updates)
    assert float(value(stepped, case.Xb, case.Yb)) < float(value(p, case.Xb, case.Yb))
