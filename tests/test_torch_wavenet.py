"""torch_ref.wavenet: the lecture's part-5 layer classes in PyTorch against jaxninja's WaveNet:
gradients, a checkpoint's split losses, and a 500-step training run replayed step for step
(benchmarks/torch_replay.py --model wavenet replays 5000).

PyTorch runs on one thread here: at batch 32 a second one buys nothing, and on a 2-core machine
shared with XLA's threads it made the replay more than ten times slower."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch_ref = pytest.importorskip("torch_ref")

from jaxninja.config import model_config, training_config  # noqa: E402
from jaxninja.data import load_splits  # noqa: E402
from jaxninja.models import registry, wavenet  # noqa: E402
from jaxninja.models.mlp import make_case, to_device  # noqa: E402
from jaxninja.training import checkpoint  # noqa: E402
from jaxninja.training.loop import train  # noqa: E402
from jaxninja.training.step import batch_indices  # noqa: E402

STEPS = 500
# the run trains (and calibrates its checkpoint) on the train split's first rows: calibrating
# over all 182k took most of the fixture's time
ROWS = 32_000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits8(names_path):
    return load_splits(names_path, 8)  # the lecture's block size


@pytest.fixture(scope="module")
def run(splits8, tmp_path_factory):
    """One short WaveNet run at the lecture's sizes and schedule (its last, calibrated
    checkpoint), on the train split's first ROWS rows: the checkpoint test and the replay
    share it."""
    mc = model_config("wavenet", "train", vocab_size=splits8.vocab.size)
    tc = training_config("wavenet", steps=STEPS, checkpoint_every=STEPS)
    out = tmp_path_factory.mktemp("wavenet")
    X, Y = splits8.data["train"]
    result = train(mc, tc, (X[:ROWS], Y[:ROWS]), splits8.vocab, out, progress=False,
                   log=lambda _: None)  # fmt: skip
    return mc, tc, result


def test_autograd_matches_the_hand_written_backward(splits8):
    """Every layer output's and parameter's gradient, float64, off-default gamma/beta/bias."""
    cfg = model_config("wavenet", "check", vocab_size=splits8.vocab.size, dtype="float64")
    case = make_case(cfg, *splits8.data["train"], 32, seed=0, init=wavenet.check_params)
    loss, grads = torch_ref.wavenet.autograd(*case, eps=cfg.eps)
    ours_loss, ours, _ = wavenet.loss_and_grads(cfg)(to_device(case.params), case.Xb, case.Yb)
    assert abs(loss - float(ours_loss)) < 1e-12
    assert set(grads) == set(wavenet.grad_order(cfg))
    shapes = {**wavenet.output_shapes(cfg, 32), **wavenet.param_shapes(cfg)}
    for name in wavenet.grad_order(cfg):
        got, want = grads[name], np.asarray(ours[name])
        assert got.dtype == np.float64 and got.shape == want.shape == shapes[name], name
        assert np.abs(got).max() > 0, name  # a gradient that vanished would agree with anything
        # float64 round-off: seen 1.2e-16 at most, on gradients of 1e-3 to 1e-1
        assert np.allclose(got, want, rtol=1e-10, atol=1e-14), name


def test_autograd_keeps_float32(splits8):
    cfg = model_config("wavenet", "check", vocab_size=splits8.vocab.size)
    case = make_case(cfg, *splits8.data["train"], 8, seed=1, init=wavenet.check_params)
    _, grads = torch_ref.wavenet.autograd(*case)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert grads["flatten3"].shape == (8, 2 * cfg.n_hidden)  # the lecture's squeeze of T = 1


def _stats(bn) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {k: (np.asarray(m), np.asarray(v)) for k, (m, v) in bn.items()}


def test_checkpoint_in_torch_ref_gives_the_same_split_losses(run, splits8):
    """Running statistics and calibrated ones: within 1e-5 (seen 4.3e-7 and 1.6e-7). On val
    and test: the train split's 182k examples would take PyTorch's one thread seconds more."""
    mc, _, result = run
    params, running = torch_ref.wavenet.load_checkpoint(result.path)
    ckpt = checkpoint.load(result.path)
    assert ckpt.bn_calibrated is not None
    for name, bn in (("running", running), ("calibrated", _stats(ckpt.bn_calibrated))):
        ours_bn = ckpt.bn_running if name == "running" else ckpt.bn_calibrated
        for s in ("val", "test"):
            ours = registry.split_loss(mc, to_device(ckpt.params), ours_bn, *splits8.data[s])
            theirs = torch_ref.wavenet.split_loss(params, bn, *splits8.data[s], eps=mc.eps)
            assert abs(ours - theirs) < 1e-5, (name, s, ours, theirs)


def test_calibration_matches_the_lecture_layers(run, splits8):
    """jaxninja's streamed calibration against each BatchNorm1d's statistics over the split."""
    mc, _, result = run
    X = splits8.data["val"][0]
    ours = registry.calibrate(mc, to_device(result.checkpoint.params), X)
    theirs = torch_ref.wavenet.calibrate_bn(result.checkpoint.params, X, eps=mc.eps)
    assert list(theirs) == list(ours)
    for name, (mean, var) in theirs.items():
        assert mean.shape == var.shape == (mc.n_hidden,)
        assert np.allclose(mean, ours[name].mean, rtol=1e-5, atol=1e-6), name
        assert np.allclose(var, ours[name].var, rtol=1e-5, atol=1e-6), name


def test_replay_parity_with_the_lecture_loop(run, splits8):
    """Same initial parameters and batches: the lecture's loop gives the same run. Every step's
    loss within 1e-5; the final parameters and running statistics within float32 drift; split
    losses on them within 1e-5 (seen after the 5000 steps of benchmarks/torch_replay.py: 1.4e-6,
    a few float32 ulps; 3.6e-6 and 6.7e-6, largest differences)."""
    mc, tc, result = run
    ours = result.checkpoint
    X, Y = (a[:ROWS] for a in splits8.data["train"])
    ix = batch_indices(tc.seed, STEPS, len(X), tc.batch_size)
    losses, params, running = torch_ref.wavenet.train_loop(
        wavenet.init_params(mc, tc.seed), X, Y, ix,
        tc.lr_decay_step, tc.lr, tc.lr_decayed, tc.bn_momentum, mc.eps,
    )  # fmt: skip
    assert losses.shape == ours.losses.shape == (STEPS,)
    assert np.abs(losses - ours.losses).max() <= 1e-5
    for k, p in params.items():
        assert np.allclose(p, ours.params[k], rtol=1e-4, atol=1e-5), k
    for k, (mean, var) in running.items():
        assert np.allclose(mean, ours.bn_running[k].mean, rtol=1e-4, atol=1e-5), k
        assert np.allclose(var, ours.bn_running[k].var, rtol=1e-4, atol=1e-5), k
    a = registry.split_loss(mc, to_device(ours.params), ours.bn_running, *splits8.data["val"])
    b = torch_ref.wavenet.split_loss(params, running, *splits8.data["val"], eps=mc.eps)
    assert abs(a - b) <= 1e-5, (a, b)
