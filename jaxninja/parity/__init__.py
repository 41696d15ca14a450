"""Parity tests for any pair of JAX and PyTorch functions, and for any hand-written backward.

`compare(jax_fn, torch_fn, params, *args)` runs both on the same seeded values and judges every
output, every `tap` and every gradient (a shared random cotangent, `jax.vjp` against autograd):
shapes, dtypes and NaNs first, then float64 within a bound calibrated on the row's own rounding,
then the dtype under test against the reference's float64 run, `jaxninja check`'s verdict
generalised. `check_backward` checks a layers.py-style layer the project's three ways.
`parity.jax(fn)`, `parity.torch(fn)` and `parity.numpy(fn)` make any two implementations a pair
(a Pallas kernel against its JAX reference, two torch functions, a NumPy reference).

Code that fixes its own dtype. flax's `Dense(dtype=jnp.float32)`, as HF's Flax models build
every module, or a `.astype(jnp.float32)` for the statistics, computes in float32 inside the
float64 run. parity finds where (the jaxpr's narrowing `convert_element_type`, with its line),
says so, and judges that side in float32 against the reference's float64 truth, by float32's
rule; what it leaves unseen is any difference below float32's resolution (LayerNorm's `eps`
1e-6). To let float64 judge, build flax modules with `dtype=None` and cast with
`jnp.promote_types(x.dtype, jnp.float32)`. A torch side's casts (`softmax(..., dtype=
torch.float32)`, `.float()`) are found by a `TorchDispatchMode` and skipped in its float64 run,
so float64 judges it; a reference that computes in float32 has no float64 truth, and the sides
must agree within its sensitivity in float32. `flax.linen.Dense(dtype=jnp.float32)` against
`F.linear` used to fail on `dtype` and on every gradient ("off by ~1e-6 in float64 (bound
1.6e-11)"):

    import flax.linen as nn
    import jax.numpy as jnp
    import torch.nn.functional as F

    from jaxninja import parity

    dense = nn.Dense(8, dtype=jnp.float32)  # as HF's Flax models build every module


    def flax_fn(p, x):  # flax keeps the kernel (in, out), torch W (out, in)
        return dense.apply({"params": {"kernel": p["W"].T, "bias": p["b"]}}, x)


    def torch_fn(p, x):
        return F.linear(x, p["W"], p["b"])


    params = {"W": parity.normal((8, 8), 8**-0.5), "b": parity.normal((8,))}
    print(parity.compare(flax_fn, torch_fn, params, parity.normal((4, 8))).format())

    jax~torch: jax against torch (the reference), float32, seeds 0, 1, 2
    row           shape       verdict   | f64 diff   bound | float32     ref   bound | seed
    ---------------------------------------------------------------------------------------
    out           (4, 8)      ok        | 2.2e-07 4.6e-06 | 2.2e-07 2.2e-07 4.6e-06 | 1
    d params['W'] (8, 8)      ok        | 3.2e-07 8.5e-06 | 3.2e-07 4.0e-07 8.5e-06 | 2
    d params['b'] (8,)        ok        | 4.8e-07 1.0e-05 | 4.8e-07 4.8e-07 1.0e-05 | 2
    d args[0]     (4, 8)      ok        | 2.9e-07 4.8e-06 | 2.9e-07 2.3e-07 4.8e-06 | 0
    ---------------------------------------------------------------------------------------
    f64 diff: jax - torch, in float64 (float32 for jax: the dtype it computes in); worst seed shown
    float32: jax's distance from the truth (torch in float64); ref: torch's own
    note: jax computes in float32 inside its float64 run: convert_element_type at
      flax/linen/dtypes.py:79 (promote_dtype), from dense.py:10 (flax_fn)
      judged against the truth (torch in float64) in float32, by float32's rule; differences below
        float32's resolution go unseen. For float64 to judge: flax modules with dtype=None,
        jnp.promote_types(x.dtype, jnp.float32) for a fixed cast
    OK: 4 rows x 3 seeds agree, dtype float32

With the kernel not transposed (`"kernel": p["W"]`), the same call fails:
`jax is 3.62 from the truth in float32 (bound 4.58e-06: 16x torch's own 2.19e-07 + ulps), the
dtype it computes in`.

bfloat16 and float16. Four ulps of bfloat16 are 1.6% of a row: float32's rule would call
every row noise and let float64, exact arithmetic, pass a port that is useless in bfloat16. In
bfloat16 and float16 the port's RMS distance from the truth must be within 2x the original's
own (FlashAttention's factor; `python benchmarks/parity_sweep.py` set it) plus a quarter ulp,
and its largest within float32's bound; `noise` only where the original's own error is half the
row (a row that cancels to zero). A LayerNorm whose variance is `E[x^2] - E[x]^2`, in bfloat16 on
inputs of mean 8, against `F.layer_norm`:

    jax~torch: jax against torch (the reference), bfloat16, seeds 0, 1, 2
    row           shape       verdict   | f64 diff   bound |    bf16     ref   bound | seed
    ---------------------------------------------------------------------------------------
    out           (8, 64)     WRONG     | 2.4e-15 1.1e-11 | 1.7e-01 2.4e-03 7.4e-03 | 2
    d params['w'] (64,)       WRONG     | 4.4e-15 9.5e-12 | 4.5e-01 3.3e-02 7.1e-02 | 2
    d args[0]     (8, 64)     WRONG     | 2.2e-15 8.5e-12 | 1.5e-01 3.1e-03 8.0e-03 | 0
    d params['b'] (64,)       ok        | 8.9e-16 8.8e-12 | 1.2e-02 9.0e-03 2.3e-02 | 2
    ---------------------------------------------------------------------------------------
    f64 diff: jax - torch, in float64; worst seed shown
    bfloat16: jax's RMS distance from the truth (torch in float64); ref: torch's own
      out: jax is 0.173 RMS from the truth in bfloat16 (bound 0.00742: 2x torch's own 0.00236
        + ulps)
      ... (d params['w'] and d args[0] likewise)
    FAILED: first failing row: out (jax~torch, seed 2)
      wrong: jax is 0.173 RMS from the truth in bfloat16 (bound 0.00742: 2x torch's own
        0.00236 + ulps)

The same LayerNorm with its statistics upcast as torch computes them on the CPU
(`xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))`, the result cast back) passes: its
RMS distance is torch's own.

The evidence. `benchmarks/parity_sweep.py` runs three sets over seeds 0-4, shapes and input
scales 0.1 to 10, each case judged by parity, by `torch.testing.assert_close` (its defaults for
the dtype), by a fixed atol of 1e-5, and by FlashAttention's rule (at most 2x the original's own
error in the dtype). float32: 10 correct JAX/PyTorch pairs (LayerNorm, GELU, softmax, attention,
BatchNorm, ...) and 9 real port bugs (`tests/parity_pairs.py`). Fixed dtype: 6 pairs whose port
or reference fixes its own dtype (flax's `Dense(dtype=jnp.float32)` as port and as reference, a
float32 LayerNorm, torch's `softmax(dtype=torch.float32)`, a float32 `custom_vjp` kernel against
its JAX reference, a NumPy reference) and 5 bugs. bfloat16/float16: 7 mixed-precision ports that
upcast as torch does and 7 bugs, right in exact arithmetic, that cancel (`E[x^2] - E[x]^2`, a mean
kept in bfloat16), accumulate (a running sum) or overflow in the low precision
(`tests/parity_dtype_pairs.py`):

`python benchmarks/parity_sweep.py` (456 s), false alarms / misses:
    float32 (of 300 / 135): parity 0 / 0; assert_close 10 (attention 6, BatchNorm 4) / 12
      (`eps` 1e-6: 5, `eps` outside sqrt: 6, GELU tanh: 1); atol 1e-5 13 (attention 6,
      BatchNorm 4, conv1d 3) / 11 (5, 5, 1); FlashAttention's 2x 0 / 11 (5, 5, 1)
    fixed dtype (of 105 / 75): 0 / 0 for every judge
    bfloat16/float16 (of 360 / 150): parity 0 / 0; assert_close 178 / 0; atol 1e-5 293 / 0;
      FlashAttention's 2x 18 (linear 11, attention 7) / 0

In bfloat16 and float16 the margins are thin: the right ports came within 0.86 of their bound
(their RMS up to 2.8x torch's own, where the quarter-ulp floor counts), and the subtler bugs (a
mean kept in bfloat16, a running sum over 64 terms) fail by as little as 1.10x theirs; the
others (the variance, rounded attention scores: 10x and more; the overflows: NaN) by far more.
"""

from jaxninja.parity.engine import assert_parity, check_backward, compare
from jaxninja.parity.kinds import Side
from jaxninja.parity.kinds import on_jax as jax
from jaxninja.parity.kinds import on_numpy as numpy
from jaxninja.parity.kinds import on_torch as torch
from jaxninja.parity.modules import assert_modules, compare_modules
from jaxninja.parity.report import Report
from jaxninja.parity.specs import Spec, integers, normal, uniform
from jaxninja.parity.taps import tap

__all__ = [
    "Report",
    "Side",
    "Spec",
    "assert_modules",
    "assert_parity",
    "check_backward",
    "compare",
    "compare_modules",
    "integers",
    "jax",
    "normal",
    "numpy",
    "tap",
    "torch",
    "uniform",
]
