"""torch_ref: the notebook (makemore part 4) in PyTorch, the reference jaxninja is checked against.

Numpy in, numpy out, keyed by the notebook's names. Needs the `[torch]` extra.
"""

from torch_ref.notebook import (
    autograd,
    calibrate_bn,
    cmp_table,
    fused_backward,
    load_checkpoint,
    manual_backward,
    run_case,
    split_loss,
    step_manual,
    train_loop,
)

__all__ = [
    "autograd",
    "calibrate_bn",
    "cmp_table",
    "fused_backward",
    "load_checkpoint",
    "manual_backward",
    "run_case",
    "split_loss",
    "step_manual",
    "train_loop",
]
