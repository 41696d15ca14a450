"""parity.compare_modules on whole models, no line of either edited: a small GPT in PyTorch
(nanoGPT's layout) against its flax.linen, flax.nnx and equinox ports and a plain JAX function,
right and with a real port bug in one submodule, which the report names; bad input as one line;
the pytest plugin's --parity-report."""

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("flax")
pytest.importorskip("equinox")

from jaxninja import parity as P  # noqa: E402
from jaxninja.errors import UsageError  # noqa: E402
from jaxninja.parity.modules import canonical  # noqa: E402
from tests import gpt_pairs as G  # noqa: E402
from tests import gpt_ports as ports  # noqa: E402

pytest_plugins = ["pytester"]

CFG = G.Config()
IDX = P.integers((2, 5), 0, CFG.vocab)
# flax and equinox name the blocks `h_0` or `h/0`, with no `transformer` around them
NAME_MAP = {f"transformer.{n}": n for n in ("h", "ln_f", "wte", "wpe")}
FLAX_WEIGHTS = G.jax_weights(CFG, ".embedding")


@pytest.fixture(scope="module")
def gpt():
    return G.torch_gpt(CFG)


def one_sided(report):
    return {r["name"] for r in report.rows if r["verdict"] == "one-sided"}


def test_names_agree_after_normalisation():
    assert canonical("h.3.mlp.c_fc") == canonical("h_3/mlp/c_fc") == ("h", "3", "mlp", "c_fc")
    assert canonical("layers.3") == canonical("layers_3") == canonical("layers/3")
    assert canonical("Dense_0") == ("Dense", "0") and canonical("ln_f") == ("ln_f",)


def test_linen_port_agrees_on_every_submodule(gpt):
    """float32, three seeds: every submodule paired (its output and its input gradient) but
    the tied head, which the port computes as wte.attend, and which is listed."""
    report = P.assert_modules(gpt, ports.LinenGPT(CFG), FLAX_WEIGHTS, IDX, name_map=NAME_MAP)
    taps = {r["tap"] for r in report.rows if r["verdict"] == "ok" and r["tap"]}
    assert {"transformer.h.1.mlp.gelu", "transformer.h.0.attn.c_attn (in)"} <= taps
    assert one_sided(report) == {"lm_head", "lm_head (in)", "d lm_head", "d lm_head (in)"}
    # each weight's gradient, in torch's layout and by its name
    assert "d params['transformer.h.1.mlp.c_fc.weight']" in {r["name"] for r in report.rows}


@pytest.mark.parametrize(
    ("bug", "row"),
    [
        ("ln_eps", "transformer.h.1.ln_2"),  # forward: the submodule's output
        ("gelu_vjp", "d transformer.h.0.mlp.gelu (in)"),  # backward: its input's gradient
    ],
)
def test_linen_bug_is_named_at_its_submodule(gpt, bug, row):
    report = P.compare_modules(
        gpt, ports.LinenGPT(CFG, bug), FLAX_WEIGHTS, IDX, name_map=NAME_MAP,
        seeds=(0,), dtype="float64",
    )  # fmt: skip
    assert report.first_failure["name"] == row, report.format()
    assert report.first_tap["name"] == row
    where = "the backward at" if row.startswith("d ") else "at"
    assert f"the difference enters {where} `{row.removeprefix('d ')}`" in report.format()


def test_nnx_port_right_then_wrong(gpt):
    """In float64 (the float32 verdict: the linen test)."""
    kwargs = {"name_map": NAME_MAP, "seeds": (0,), "dtype": "float64"}
    P.assert_modules(gpt, ports.NnxGPT(CFG), FLAX_WEIGHTS, IDX, **kwargs)
    bad = P.compare_modules(gpt, ports.NnxGPT(CFG, "ln_eps"), FLAX_WEIGHTS, IDX, **kwargs)
    assert bad.first_tap["name"] == "transformer.h.1.ln_2", bad.format()


def test_equinox_port_right_then_wrong(gpt):
    """equinox's per-token layers run under jax.vmap: untapped there (a tap cannot leave the
    vmap), listed as torch's only; the blocks, attention, MLP and GELU are tapped."""
    weights, kwargs = ports.eqx_weights(CFG), {"seeds": (0,), "dtype": "float64"}
    good = P.assert_modules(gpt, ports.EqxGPT(CFG), weights, IDX, name_map=NAME_MAP, **kwargs)
    assert {"transformer.h.0.ln_1", "transformer.h.0.mlp.c_fc"} <= one_sided(good)
    assert "transformer.h.0.mlp.gelu" not in one_sided(good)
    bad = P.compare_modules(
        gpt, ports.EqxGPT(CFG, "gelu_vjp"), weights, IDX, name_map=NAME_MAP, **kwargs
    )
    assert bad.first_tap["name"] == "d transformer.h.0.mlp.gelu (in)", bad.format()


def test_function_with_its_own_taps(gpt):
    """A plain function tapped by hand (each block), torch tapped three names deep."""
    report = P.compare_modules(
        gpt, G.gpt_jax(CFG), G.jax_weights(CFG), IDX, depth=3, seeds=(0,), dtype="float64"
    )
    assert report.ok, report.format()
    paired = {r["name"] for r in report.rows if r["verdict"] == "ok"}
    assert {"transformer.h.0", "d transformer.h.1"} <= paired
    assert "transformer.wte" in one_sided(report)
    assert not any(r["name"].startswith("transformer.h.0.") for r in report.rows)  # depth 3


def _weights_without(name):
    return {k: v for k, v in FLAX_WEIGHTS.items() if k != name}


BAD = {
    "name_map, torch": (
        {"name_map": {"transformer.hh": "h"}},
        "the torch model has no submodule 'transformer.hh'",
    ),
    "name_map, jax": ({"name_map": {"transformer.h": "blocks"}}, "JAX model has no submodule"),
    "unset": ({"weights": _weights_without("transformer.ln_f.bias")}, "ln_f/bias unset"),
    "twice": (
        {"weights": FLAX_WEIGHTS | {"transformer.ln_f.bias": "ln_f.scale"}},
        "'params/ln_f/scale' is set twice",
    ),
    "unknown path": (
        {"weights": FLAX_WEIGHTS | {"transformer.ln_f.bias": "ln_f.b"}},
        "has no 'ln_f.b'",
    ),
    "no such weight": ({"weights": FLAX_WEIGHTS | {"ln_f.bias": "x"}}, "no 'ln_f.bias' (close"),
    "tied": ({"weights": FLAX_WEIGHTS | {"lm_head.weight": "x"}}, "tied to 'transformer.wte"),
    "layout": (
        {"weights": FLAX_WEIGHTS | {"transformer.h.0.mlp.c_fc.weight": "h.0.mlp.c_fc.kernel"}},
        "transpose it",
    ),
    "not a model": ({"model": np.zeros(3)}, "the JAX model is a ndarray: give a flax.linen"),
    "name_map not a dict": ({"name_map": ["h"]}, "name_map: give a dict of torch submodule"),
    "depth": ({"depth": 0}, "depth 0: give a positive int"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(gpt, case):
    given, message = BAD[case]
    kwargs = {"name_map": given.get("name_map", NAME_MAP), "depth": given.get("depth")}
    model = given.get("model", ports.LinenGPT(CFG))
    with pytest.raises(UsageError, match=re.escape(message)) as e:
        P.compare_modules(gpt, model, given.get("weights", FLAX_WEIGHTS), IDX, **kwargs)
    assert "\n" not in str(e.value)


def test_not_a_torch_module():
    message = "the torch model is a function: give a torch.nn.Module"
    with pytest.raises(UsageError, match=re.escape(message)):
        P.compare_modules(lambda x: x, ports.LinenGPT(CFG), {}, IDX)


INNER = """
import torch, jax.numpy as jnp
from jaxninja import parity

def test_right():
    parity.assert_parity(lambda p, x: jnp.tanh(x), lambda p, x: torch.tanh(x), {},
                         parity.normal((3,)), seeds=(0,), dtype="float64")
    parity.assert_parity(lambda p, x: 2 * x, lambda p, x: 2 * x, {},
                         parity.normal((3,)), seeds=(0,), dtype="float64")

def test_wrong():
    parity.assert_parity(lambda p, x: jnp.tanh(x) * 1.001, lambda p, x: torch.tanh(x), {},
                         parity.normal((3,)), seeds=(0,), dtype="float64")
"""


def test_plugin_writes_each_assertion_report(pytester):
    pytester.makepyfile(test_port=INNER)
    out = pytester.runpytest("--parity-report", "reports", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=1, failed=1)
    assert "first failing row: out" in out.stdout.str()  # the assertion's message: the table
    folder = pytester.path / "reports"
    names = sorted(p.name for p in folder.iterdir())
    stems = ["test_port.py__test_right", "test_port.py__test_right-2", "test_port.py__test_wrong"]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("json", "txt"))
    wrong = json.loads((folder / "test_port.py__test_wrong.json").read_text())
    assert wrong["ok"] is False and wrong["first_failure"]["name"] == "out"
    assert "OK:" in (folder / "test_port.py__test_right.txt").read_text()


def test_plugin_refuses_a_file_for_its_folder(pytester):
    pytester.makepyfile(test_port=INNER)
    (pytester.path / "taken").write_text("")
    out = pytester.runpytest("--parity-report", "taken")
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    assert "--parity-report taken: that is a file; give a folder" in out.stderr.str()
