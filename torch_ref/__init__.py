"""torch_ref: the lectures in PyTorch, the reference jaxninja is checked against: part 4's
notebook (these names), part 5's WaveNet on the lecture's layer classes (`torch_ref.wavenet`)
and part 6's makemore.py Transformer on makemore's classes (`torch_ref.gpt`).

Numpy in, numpy out, keyed by the notebook's names (a stack's: by layer and parameter name).
Needs the `[torch]` extra.
"""

from torch_ref import gpt, wavenet
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
    "gpt",
    "load_checkpoint",
    "manual_backward",
    "run_case",
    "split_loss",
    "step_manual",
    "train_loop",
    "wavenet",
]
