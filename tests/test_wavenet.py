"""Part 5: the WaveNet's layers and stack, its check, its training through the one loop, and
the refusals that keep the two models apart."""

import json
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxninja import parity
from jaxninja.check import wavenet as wavenet_check
from jaxninja.cli import main
from jaxninja.config import model_config, training_config
from jaxninja.data import load_splits
from jaxninja.errors import UsageError
from jaxninja.models import layers, wavenet
from jaxninja.training import checkpoint
from jaxninja.training.loop import train

# the lecture's model at small sizes: every layer kind, two stages, quick to compile
SMALL = model_config("wavenet", vocab_size=27, block_size=4, n_embd=5, n_hidden=7, dtype="float64")
TC = training_config("wavenet", steps=300, chunk_steps=100, checkpoint_every=100)


def stacked(layer: layers.Layer):
    """A stack layer in parity.check_backward's shape: (dparams, dargs)."""

    def backward(dout, cache):
        dparams, dx = layer.backward(dout, cache)
        return dparams, (dx,)

    return layer.forward, backward


@pytest.mark.parametrize(
    "layer, params, x",
    [
        (layers.flatten_consecutive("f", 2), {}, parity.normal((3, 8, 5))),  # 8 -> 4 positions
        (layers.flatten_consecutive("f", 2), {}, parity.normal((3, 2, 5))),  # 2 -> 1, squeezed
        (
            layers.linear("l", bias=False),
            {"weight": parity.normal((5, 4))},
            parity.normal((3, 6, 5)),
        ),
        (
            layers.linear("l"),
            {"weight": parity.normal((5, 4)), "bias": parity.normal((4,))},
            parity.normal((3, 6, 5)),
        ),
        (
            layers.batchnorm("bn", 1e-5),
            {"gamma": parity.uniform((6,), 0.5, 1.5), "beta": parity.normal((6,))},
            parity.normal((4, 3, 6), 3.0),  # statistics over (0, 1): n = 12
        ),
        (
            layers.batchnorm("bn", 1e-5),
            {"gamma": parity.uniform((6,), 0.5, 1.5), "beta": parity.normal((6,))},
            parity.normal((5, 6), 3.0),
        ),
        (layers.tanh("t"), {}, parity.normal((4, 3, 6), 2.0)),
    ],
    ids=["flatten", "flatten-squeeze", "linear-nobias", "linear", "bn-3d", "bn-2d", "tanh"],
)
def test_each_layer_is_its_forwards_vjp(layer, params, x):
    """Every stack layer's backward against jax.vjp of its forward, with the parity engine."""
    report = parity.check_backward(*stacked(layer), params, x, dtype="float64")
    assert report.ok, report.format()


def test_flatten_squeezes_a_single_position_as_the_lecture():
    out, shape = layers.flatten_consecutive_forward(jnp.zeros((3, 2, 5)), 2)
    assert out.shape == (3, 10) and shape == (3, 2, 5)
    assert layers.flatten_consecutive_forward(jnp.zeros((3, 8, 5)), 2)[0].shape == (3, 4, 10)


def test_the_lecture_model_has_its_parameter_count():
    cfg = model_config("wavenet", vocab_size=27)
    assert wavenet.n_params(cfg) == 76_579  # the lecture's printed count
    assert wavenet.grad_order(cfg)[:3] == ("linear4", "linear4.weight", "linear4.bias")
    assert wavenet.grad_order(cfg)[-2:] == ("embedding", "embedding.weight")


def test_stack_backward_is_jax_grad_in_float64():
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in wavenet.check_params(SMALL, 3).items()}
        rng = np.random.default_rng(0)
        X, Y = jnp.asarray(rng.integers(0, 27, (6, 4))), jnp.asarray(rng.integers(0, 27, 6))
        _, manual, stats = jax.jit(wavenet.loss_and_grads(SMALL))(p, X, Y)
        auto = jax.jit(lambda p, X, Y: wavenet.grads_autodiff(SMALL, p, X, Y))(p, X, Y)
    assert set(manual) == set(auto) == set(wavenet.grad_order(SMALL))
    for k in auto:
        scale = float(jnp.abs(auto[k]).max())
        assert float(jnp.abs(manual[k] - auto[k]).max()) <= 1e-10 * scale, k
    assert set(stats) == {"bn1", "bn2"} and stats["bn1"].mean.shape == (7,)


@pytest.fixture(scope="module")
def splits8(names_path):
    return load_splits(names_path, 8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_passes_at_the_lecture_sizes(names_path, capsys, dtype):
    assert main(["check", "--model", "wavenet", "--data", str(names_path), "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("linear4 ") and "embedding.weight" in out
    assert out.splitlines()[-1].startswith("OK: 26 tensors") and dtype in out.splitlines()[-1]
    args = ["check", "--model", "wavenet", "--data", str(names_path), "--dtype", dtype, "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["model"] == "wavenet" and len(report["rows"]) == 26


def _bn_backward_over_axis0(dout, cache):
    """The learner's mistake: the batch sums of dx over axis 0 only, n = B, for a (B, T, C)
    input (right for (B, C), wrong for the stages that keep positions)."""
    n = dout.shape[0]
    gamma = layers.along_last(cache.bngain, dout.ndim)
    dbeta = dout.sum(0, keepdims=True)
    dgamma = (dout * cache.bnraw).sum(0, keepdims=True)
    dx = gamma * cache.bnvar_inv / n * (n * dout - dbeta - n / (n - 1) * cache.bnraw * dgamma)
    axes = layers.batch_axes(dout)
    return {"gamma": (dout * cache.bnraw).sum(axes), "beta": dout.sum(axes)}, dx


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_names_where_the_axis0_batchnorm_mistake_enters(splits8, dtype):
    cfg = replace(model_config("wavenet", vocab_size=27), dtype=dtype)
    net = wavenet.with_backwards(wavenet.stack(cfg), bn=_bn_backward_over_axis0)
    report = wavenet_check.run_check(cfg, *splits8.data["train"], with_torch=False, net=net)
    first = report.first_failure()
    # bn3 sees (B, C), where axis 0 is right; bn2 sees (B, 2, C): its input's gradient is wrong
    assert not report.ok and first["name"] == "linear2", first
    assert first["way"] == "jax.grad" and "dlinear2 is off by" in first["message"]
    failing = {name for name, _, _ in report.failures()}
    assert "bn3.gamma" not in failing and "linear3" not in failing


def test_train_resumes_bit_identical_and_refuses_the_other_model(names_path, tmp_path, capsys):
    splits = load_splits(names_path, SMALL.block_size)
    data, vocab = splits.data["train"], splits.vocab
    whole = train(SMALL, TC, data, vocab, tmp_path / "whole", progress=False)
    train(SMALL, replace(TC, steps=200), data, vocab, tmp_path / "split", progress=False)
    resumed = train(SMALL, TC, data, vocab, tmp_path / "split", resume=True, progress=False)
    a, b = whole.checkpoint, resumed.checkpoint
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    for name in ("bn1", "bn2"):
        for x, y in zip(a.bn_running[name], b.bn_running[name], strict=True):
            assert np.array_equal(x, y), name
    assert np.array_equal(a.losses, b.losses) and a.losses[-1] < a.losses[0]
    loaded = checkpoint.load(whole.path)
    assert loaded.model == SMALL and set(loaded.bn_calibrated) == {"bn1", "bn2"}
    argv = ["--checkpoint", str(whole.path), "--model", "mlp"]
    assert main(["eval", *argv]) == 2
    assert "is a checkpoint of the wavenet model, not of mlp" in capsys.readouterr().err
    resume = ["train", "--out", str(tmp_path / "whole"), "--resume", "--model", "mlp"]
    assert main([*resume, "--steps", "400"]) == 2
    err = capsys.readouterr().err
    assert "a checkpoint of the wavenet model, and --model says mlp" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "invalid choice: 'nope' (choose from mlp, wavenet, gpt)"),
        (["--model", "wavenet", "--block-size", "6"], "--block-size 6 does not reduce to 1"),
    ],
)
def test_bad_model_flags_are_one_line_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    try:
        code = main(["train", "--out", str(out), *args])
    except SystemExit as e:  # argparse's own errors exit from the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message.replace("'", "") in err.replace("'", "") and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(UsageError, match="power of 2"):
        model_config("wavenet", block_size=12)


def test_data_parallel_wavenet_follows_one_device(names_path, tmp_path):
    """--devices 2: each device a half of the batch, the three BatchNorms' sums all-reduced."""
    splits = load_splits(names_path, SMALL.block_size)
    data, vocab = splits.data["train"], splits.vocab
    tc = replace(TC, steps=100)
    one = train(SMALL, tc, data, vocab, tmp_path / "one", progress=False).checkpoint
    two = train(SMALL, tc, data, vocab, tmp_path / "two", devices=2, progress=False).checkpoint
    assert np.abs(one.losses - two.losses).max() <= 1e-12  # float64: sums in another order
    for k in one.params:
        assert np.abs(one.params[k] - two.params[k]).max() <= 1e-10, k
    for name in one.bn_running:
        for x, y in zip(one.bn_running[name], two.bn_running[name], strict=True):
            assert np.abs(x - y).max() <= 1e-10, name
