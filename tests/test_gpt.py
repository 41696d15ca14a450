"""Part 6: makemore.py's Transformer on hand-written gradients. Each new layer's backward against
jax.vjp and torch (the parity engine), the model's against jax.grad and torch_ref's makemore
classes, makemore's rows, and the config's GPT."""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxninja import parity
from jaxninja.compile_cache import quick_jit
from jaxninja.config import model_config
from jaxninja.data import IGNORE, Vocab, build_rows, row_block_size, rows_from_words, split_words
from jaxninja.errors import UsageError
from jaxninja.models import gpt
from jaxninja.models import transformer as tf
from torch_ref import gpt as torch_gpt

# every kind of layer at small sizes: 2 blocks of 2 heads, rows of 8 positions
SMALL = model_config(
    "gpt", vocab_size=7, block_size=8, n_embd=16, n_head=2, n_layer=2, dtype="float64"
)
TOL = 1e-10  # float64, relative to the row's largest value: only the order of sums differs


def with_dx(backward):
    """A backward (dout, cache) -> (dparams, dx) in check_backward's shape: dargs a tuple."""

    def run(dout, cache):
        dparams, dx = backward(dout, cache)
        return dparams, (dx,)

    return run


# --- each layer ---------------------------------------------------------------------------------


def ln_forward(p, x):
    return tf.layernorm_forward(x, p["weight"], p["bias"])


def ln_torch(p, x):
    return F.layer_norm(x, (x.shape[-1],), p["weight"], p["bias"], eps=1e-5)


def attn_forward(p, x):
    return tf.attention_forward(x, p, n_head=2)


def attn_torch(p, x):
    """makemore's CausalSelfAttention holding p, its Linear weights (out, in)."""
    C = x.shape[-1]
    cfg = torch_gpt.GPTConfig(n_head=2, n_embd=C, block_size=x.shape[1] + 2)
    module = torch_gpt.CausalSelfAttention(cfg).to(x.dtype)
    weights = {k: v.T if k.endswith("weight") else v for k, v in p.items()}
    return torch.func.functional_call(module, weights, (x,))


def emb_forward(p, X):
    return tf.embeddings_forward(p["wte"], p["wpe"], X)


def emb_backward(dx, cache):
    return tf.embeddings_backward(dx, cache)[0], (None,)  # the indices get no gradient


def emb_torch(p, X):
    pos = torch.arange(X.shape[1])[None]  # (1, T): makemore's wpe(pos)
    return F.embedding(X, p["wte"]) + F.embedding(pos, p["wpe"])


def ce_forward(p, logits, Y):
    return tf.cross_entropy_forward(logits, Y)


def ce_backward(dout, cache):
    dloss, _ = dout  # the count is an integer: no gradient
    return {}, (tf.cross_entropy_backward(dloss, cache), None)


def ce_torch(p, logits, Y):
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), Y.view(-1), ignore_index=-1)
    return loss, (Y != -1).sum()


C = 8  # the attention's n_embd: two heads of 4
LAYERS = {
    "layernorm": (
        ln_forward, with_dx(tf.layernorm_backward), ln_torch,
        {"weight": parity.uniform((6,), 0.5, 1.5), "bias": parity.normal((6,))},
        (parity.normal((2, 3, 6), 3.0),),
    ),
    "gelu": (
        lambda p, x: tf.gelu_forward(x), with_dx(tf.gelu_backward),
        lambda p, x: torch_gpt.NewGELU()(x), {}, (parity.normal((2, 3, 5), 2.0),),
    ),
    "attention": (
        attn_forward, with_dx(tf.attention_backward), attn_torch,
        {
            "c_attn.weight": parity.normal((C, 3 * C), 0.5), "c_attn.bias": parity.normal(3 * C),
            "c_proj.weight": parity.normal((C, C), 0.5), "c_proj.bias": parity.normal(C),
        },
        (parity.normal((3, 5, C)),),  # T 5: a causal mask of its own size
    ),
    "embeddings": (
        emb_forward, emb_backward, emb_torch,
        {"wte": parity.normal((5, 4)), "wpe": parity.normal((6, 4))},
        (parity.integers((3, 4), 0, 5),),  # T 4 < block size 6: wpe's last rows get none
    ),
    "cross_entropy": (
        ce_forward, ce_backward, ce_torch, {},
        (parity.normal((2, 4, 5), 3.0), parity.integers((2, 4), IGNORE, 5)),  # some ignored
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_three_ways(name):
    """(1) the backward against jax.vjp of its forward, (2) against torch autograd of makemore's
    (or torch's) layer, (3) jax.vjp against torch, on two seeds."""
    forward, backward, torch_fn, params, args = LAYERS[name]
    report = parity.check_backward(
        forward, backward, params, *args, torch_fn=torch_fn, seeds=(0, 1), dtype="float64"
    )
    assert report.ok, report.format()


def test_rows_longer_than_the_block_are_refused():
    wte, wpe = np.zeros((5, 4)), np.zeros((6, 4))
    with pytest.raises(UsageError, match="rows of 7 positions: the block size is 6"):
        tf.embeddings_forward(wte, wpe, np.zeros((2, 7), int))


def test_cross_entropy_counts_and_ignores():
    logits = np.random.default_rng(0).standard_normal((2, 3, 4))
    Y = np.array([[1, 0, IGNORE], [3, IGNORE, IGNORE]])

    @jax.jit
    def run(logits, Y):
        (loss, count), cache = tf.cross_entropy_forward(logits, Y)
        return loss, count, tf.cross_entropy_backward(1.0, cache)

    loss, count, dlogits = run(logits, Y)
    logp = np.asarray(jax.nn.log_softmax(logits))
    want = -(logp[0, 0, 1] + logp[0, 1, 0] + logp[1, 0, 3]) / 3
    assert int(count) == 3 and abs(float(loss) - want) <= 1e-14
    assert not np.asarray(dlogits)[Y == IGNORE].any()


# --- the model ----------------------------------------------------------------------------------


def rows(batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random words of 1 to 7 characters in makemore's rows: padding in every row but one."""
    rng = np.random.default_rng(seed)
    vocab = Vocab(tuple("abcdef"))
    words = ["".join(rng.choice(list("abcdef"), n)) for n in rng.integers(1, 8, batch_size)]
    return build_rows(words, vocab, SMALL.block_size)


@pytest.fixture(scope="module")
def params():
    """check_params (LayerNorm weights off 1, biases off 0), the weights 10x makemore's 0.02 so
    that attention is far from uniform."""
    p = gpt.check_params(SMALL, 0)
    return {k: v * 10 if v.ndim == 2 else v for k, v in p.items()}


@pytest.fixture(scope="module")
def manual():
    return quick_jit(gpt.loss_and_grads(SMALL))


def close(got: dict, want: dict, tol: float = TOL) -> None:
    assert set(got) == set(want), set(got) ^ set(want)
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.shape == w.shape, (k, g.shape, w.shape)
        assert np.abs(g - w).max() <= tol * np.abs(w).max(), k


def test_backward_is_jax_grad_and_torch(params, manual):
    """Batch 3: the hand-written gradients equal jax.grad's and makemore's autograd's, every
    parameter and every module output, in float64."""
    X, Y = rows(3, seed=1)
    loss, grads, stats = manual(params, X, Y)
    auto = quick_jit(lambda p, X, Y: gpt.grads_autodiff(SMALL, p, X, Y))
    assert set(grads) == set(gpt.grad_order(SMALL)) and stats == {}
    close(grads, auto(params, X, Y))
    torch_loss, torch_grads = torch_gpt.autograd(params, X, Y, SMALL.n_head)
    assert abs(float(loss) - torch_loss) <= 1e-12 * abs(torch_loss)
    close(grads, torch_grads)


def test_batch_of_two_is_torch(params, manual):
    X, Y = rows(2, seed=2)
    loss, grads, _ = manual(params, X, Y)
    torch_loss, torch_grads = torch_gpt.autograd(params, X, Y, SMALL.n_head)
    assert abs(float(loss) - torch_loss) <= 1e-12 * abs(torch_loss)
    close(grads, torch_grads)


def test_padded_positions_get_no_gradient(params, manual):
    """The logits of an ignored position get none, and an input at an ignored position reaches
    no counted one (attention looks back only, and every later position is ignored too): other
    padding there changes nothing."""
    X, Y = rows(3, seed=1)
    loss, grads, _ = manual(params, X, Y)
    ignored = Y == IGNORE
    assert ignored.any() and not np.asarray(grads["lm_head"])[ignored].any()
    noise = np.random.default_rng(3).integers(1, SMALL.vocab_size, X.shape, X.dtype)
    X2 = np.where(ignored, noise, X)
    assert (X2 != X).any()
    loss2, grads2, _ = manual(params, X2, Y)
    assert float(loss2) == float(loss)
    for k in gpt.param_shapes(SMALL):
        np.testing.assert_allclose(grads2[k], grads[k], rtol=0, atol=1e-15, err_msg=k)


def test_data_parallel_is_one_device(params, manual):
    """The batch split over 2 devices (shard_map): the loss and every parameter's gradient
    all-reduced are one device's, though each device counts a different number of positions."""
    X, Y = rows(2, seed=2)
    assert (Y[0] != IGNORE).sum() != (Y[1] != IGNORE).sum()
    mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))

    def local(params, X, Y):
        loss, grads, _ = gpt.loss_and_grads(SMALL, "data")(params, X, Y)
        return loss, {k: grads[k] for k in params}

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
    )
    loss, grads = quick_jit(sharded)(params, X, Y)
    want_loss, want, _ = manual(params, X, Y)
    assert abs(float(loss) - float(want_loss)) <= 1e-14
    close(grads, {k: want[k] for k in params}, tol=1e-13)


def test_grad_order_and_names():
    order = gpt.grad_order(SMALL)
    assert order[:6] == ("lm_head", "lm_head.weight", "ln_f", "ln_f.weight", "ln_f.bias", "h.1")
    assert order[-4:] == ("wpe", "wpe.weight", "wte", "wte.weight")
    assert set(order) == set(gpt.param_shapes(SMALL)) | set(gpt.output_shapes(SMALL, 2))
    assert len(order) == len(set(order))


# --- sizes, initialisation, torch_ref -----------------------------------------------------------


def test_makemore_defaults():
    cfg = model_config("gpt", vocab_size=27)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (4, 4, 64, 16)
    shapes = gpt.param_shapes(cfg)
    no_head = gpt.n_params(cfg) - np.prod(shapes["lm_head.weight"])
    assert gpt.n_params(cfg) == 204_544 and f"{no_head / 1e6:.2f}M" == "0.20M"  # makemore's print
    with pytest.raises(UsageError, match="does not split into 3 heads"):
        model_config("gpt", n_head=3)


def test_init_is_makemores():
    p = gpt.init_params(model_config("gpt", vocab_size=27), seed=0)
    assert all(v.dtype == np.float32 for v in p.values())
    assert abs(p["h.0.mlp.c_fc.weight"].std() - 0.02) < 1e-3
    assert (p["h.3.ln_2.weight"] == 1).all() and not p["h.3.attn.c_attn.bias"].any()
    assert "lm_head.bias" not in p and p["lm_head.weight"].shape == (64, 27)
    moved = gpt.check_params(SMALL, 0)
    assert (moved["ln_f.weight"] != 1).all() and (moved["h.0.mlp.c_proj.bias"] != 0).all()


def test_torch_ref_loads_our_params_by_makemores_names(params):
    model, ours = torch_gpt.build(params, SMALL.n_head)
    state = model.state_dict()
    assert state["transformer.h.1.attn.c_attn.weight"].shape == (3 * 16, 16)  # (out, in)
    np.testing.assert_array_equal(state["lm_head.weight"].numpy().T, params["lm_head.weight"])
    back = torch_gpt.numpy_params(ours)
    assert all((back[k] == v).all() and back[k].dtype == v.dtype for k, v in params.items())


def adamw(params: dict, grads: list[dict], lr=5e-4, b1=0.9, b2=0.99, eps=1e-8, wd=0.01) -> dict:
    """AdamW (Loshchilov & Hutter; torch.optim.AdamW, optax.adamw) in numpy, a step per grads."""
    p = dict(params)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat, vhat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            p[k] = p[k] * (1 - lr * wd) - lr * mhat / (np.sqrt(vhat) + eps)
    return p


def test_torch_ref_train_loop_is_adamw_on_our_gradients(params, manual):
    """Three steps of makemore's AdamW (torch_ref.train_loop) against AdamW at makemore's
    settings on the hand-written gradients: what a replay of a training run rests on. Moves
    compared, not values: c_attn's key bias has a gradient of exactly 0 in theory (a constant
    added to every score of a row leaves its softmax as it was), so its rounding noise, ~1e-17,
    is all AdamW sees of it, and normalizes (to lr * 1e-17 / eps, 5e-13, either way)."""
    X, Y = rows(2, seed=2)
    batch_ix = np.tile(np.arange(2), (3, 1))  # (steps, B): the whole batch each step
    losses, final = torch_gpt.train_loop(params, X, Y, batch_ix, SMALL.n_head)
    p, grads = params, []
    for i in range(3):  # each step's gradients at the parameters torch had at that step
        loss, g, _ = manual(p, X, Y)
        assert abs(float(loss) - losses[i]) <= 1e-12 * losses[i]
        grads.append({k: np.asarray(g[k]) for k in params})
        p = adamw(params, grads)
    moved = {k: v - params[k] for k, v in p.items()}
    close(moved, {k: v - params[k] for k, v in final.items()}, tol=1e-8)


# --- makemore's rows ----------------------------------------------------------------------------


def test_rows_are_makemores():
    words = ["emma", "ab", "x"]
    vocab = Vocab.from_words(words)  # . a b e m x -> 0 1 2 3 4 5
    X, Y = build_rows(words, vocab, row_block_size(words))
    assert row_block_size(words) == 5 and X.dtype == Y.dtype == np.int32
    np.testing.assert_array_equal(X, [[0, 3, 4, 4, 1], [0, 1, 2, 0, 0], [0, 5, 0, 0, 0]])
    np.testing.assert_array_equal(Y, [[3, 4, 4, 1, 0], [1, 2, 0, -1, -1], [5, 0, -1, -1, -1]])
    assert build_rows(words, vocab, 7)[1][2].tolist() == [5, 0, -1, -1, -1, -1, -1]
    with pytest.raises(UsageError, match=r"'emma' has 4 characters.*block size 5") as info:
        build_rows(words, vocab, 4)
    assert "\n" not in str(info.value)


def test_row_splits_are_the_notebooks_split():
    words = [f"w{'abc'[i % 3] * (1 + i % 5)}" for i in range(20)]
    s = rows_from_words(words)
    assert s.words == split_words(words)
    for name, (X, Y) in s.data.items():
        assert X.shape == Y.shape == (len(s.words[name]), row_block_size(words))
