"""jaxninja: Karpathy's makemore lectures in JAX, every backward pass written by hand.

The public API: part 4's MLP at the notebook's three grains (atomic, fused cross-entropy, fused
BatchNorm) and its check (`run_check`); the grader of a learner's function (`grade`,
`load_function`, `load_module`); `jaxninja.parity`, the verdict for any JAX and PyTorch pair.
The models, the training loop and the checks live in the subpackages (models/, training/,
check/, learn/, parity/).
"""

from jaxninja.check.mlp import run_check
from jaxninja.config import VERSION, ModelConfig
from jaxninja.data import (
    Vocab,
    build_dataset,
    download_names,
    load_splits,
    read_words,
    resolve_data_path,
    split_words,
)
from jaxninja.errors import UsageError
from jaxninja.learn.grader import Grade, grade, load_function, load_module
from jaxninja.models.mlp import (
    GRAD_ORDER,
    INTERMEDIATES,
    PARAMS,
    Case,
    forward,
    forward_chunked,
    forward_loss,
    init_params,
    make_case,
    to_device,
)
from jaxninja.models.mlp_autodiff import grads_autodiff
from jaxninja.models.mlp_backward import backward_atomic, backward_fused, loss, loss_and_grads
from jaxninja.parity.table import Report

__all__ = [
    "GRAD_ORDER",
    "INTERMEDIATES",
    "PARAMS",
    "Case",
    "Grade",
    "ModelConfig",
    "Report",
    "UsageError",
    "Vocab",
    "backward_atomic",
    "backward_fused",
    "build_dataset",
    "download_names",
    "forward",
    "forward_chunked",
    "forward_loss",
    "grade",
    "grads_autodiff",
    "init_params",
    "load_function",
    "load_module",
    "load_splits",
    "loss",
    "loss_and_grads",
    "make_case",
    "read_words",
    "resolve_data_path",
    "run_check",
    "split_words",
    "to_device",
]
__version__ = VERSION
