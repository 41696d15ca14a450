"""Sizes that cannot fit are refused before anything is allocated, saying what they would need.

numpy's own refusal (`_ArrayMemoryError: Unable to allocate 136. GiB`) comes as a traceback from
deep inside, after other work; asking first gives one line that names the flag to lower.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxninja.config import EVAL_CHUNK
from jaxninja.errors import UsageError


def available_bytes() -> int:
    """The memory this machine can still give (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def require(nbytes: int, what: str, fix: str) -> None:
    """Refuse, in one line, what needs more memory than there is."""
    have = available_bytes()
    if nbytes > have:
        raise UsageError(f"{what} needs about {gib(nbytes)} of memory, {gib(have)} is free: {fix}")


# Copies of the parameters that a run holds at once, at most: the float64 draw, params, grads,
# optimizer state, a checkpoint on its way to disk, and in a check each source's gradients.
PARAM_COPIES = 12


def check_model(cfg: Any, n_params: int, floats_per_example: int) -> None:
    """Refuse a model too large for this machine, before a byte of it is allocated: its
    parameters' copies, and an evaluation chunk's activations (`floats_per_example` for each of
    EVAL_CHUNK examples, a few arrays of each)."""

    activations = EVAL_CHUNK * floats_per_example * np.dtype(cfg.dtype).itemsize * 4
    require(
        n_params * 8 * PARAM_COPIES + activations,
        f"a model of {n_params:,} parameters (n_embd {cfg.n_embd}, n_hidden {cfg.n_hidden})",
        "lower --n-hidden or --n-embd",
    )
