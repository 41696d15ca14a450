"""torch_ref: the notebook (makemore part 4) in PyTorch, the reference jaxninja is checked against.

Numpy in, numpy out, keyed by the notebook's names. Needs the `[torch]` extra.
"""

from torch_ref.notebook import (
    autograd,
    cmp_table,
    fused_backward,
    manual_backward,
    run_case,
)

__all__ = ["autograd", "cmp_table", "fused_backward", "manual_backward", "run_case"]
