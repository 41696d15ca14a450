"""Parity tests for any pair of JAX and PyTorch functions, and for any hand-written backward.

`compare(jax_fn, torch_fn, params, *args)` runs both on the same seeded values and judges every
output, every `tap` and every gradient (a shared random cotangent, `jax.vjp` against autograd):
shapes, dtypes and NaNs first, then float64 within a bound calibrated on the row's own rounding,
then the dtype under test against the reference's float64 run, `jaxninja check`'s verdict
generalised. `check_backward` checks a layers.py-style layer the project's three ways.
`parity.jax(fn)`, `parity.torch(fn)` and `parity.numpy(fn)` make any two implementations a pair
(a Pallas kernel against its JAX reference, two torch functions, a NumPy reference).
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
