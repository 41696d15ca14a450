"""JAX's persistent compilation cache, kept beside the grader's references.

Most of a short command's time (a grade, `jaxninja check`, a short run) is XLA compiling, and
the same shapes compile to the same program every time. With JAX's persistent cache on, a
program compiled once is written to disk and the next process that lowers the same program
(same HLO, same options, same jax and jaxlib, same devices) loads it instead of compiling.

The folder is the one the grader keeps its references in (learn/references.py):
`$JAXNINJA_CACHE` if set (`off` keeps nothing on disk, and turns this cache off too), else the
user's cache directory (`~/.cache/jaxninja` on Linux), with the programs in its `xla/`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "JAXNINJA_CACHE"  # the same variable learn/references.py reads
SUBFOLDER = "xla"
# every program is kept, not only those that took a second or more to compile (JAX's default):
# a grade or a check compiles dozens of programs of a fraction of a second each, and it is their
# sum a second run saves
MIN_COMPILE_SECONDS = 0.0
# XLA's options for a program a command runs only a few times (parity's sides, at any size):
# LLVM's optimizations off, which are most of a compile's time and buy run time it does not need.
# XLA's own passes still run and fast math stays off, so results may differ from an optimized
# compile in the last bits only; tests/conftest.py runs the whole suite so.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
# ... and for one that is small as well (a check's and a grade's sources, the learner's
# function), XLA's older fusion emitters too: a learner's first grade of exercise 6 with nothing
# cached, 38 s -> 25 s (benchmarks/grade_speed.py). Not at GPT-2's size: there they slow the run
# more than they save in compiling (benchmarks/parity_scale.py).
SMALL_COMPILE = {
    **QUICK_COMPILE,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def quick_jit(fun: Callable, *, small: bool = True, **jit_kwargs: Any) -> Callable:
    """jax.jit for a program run a few times: compiled with SMALL_COMPILE, or QUICK_COMPILE
    where small is False (its inputs may be a whole model's)."""
    import jax

    options = SMALL_COMPILE if small else QUICK_COMPILE
    return jax.jit(fun, compiler_options=options, **jit_kwargs)


# a program no run has read for this long is deleted. JAX's own bound on the folder's size
# (jax_compilation_cache_max_size) reads every entry's size and time on each write: quadratic
# in the number of programs, where this reads the folder once a process
KEEP_DAYS = 30


def cache_root() -> Path | None:
    """$JAXNINJA_CACHE, else the user's cache directory; None when the variable says off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen)
    import platformdirs

    return Path(platformdirs.user_cache_dir("jaxninja"))


def enable() -> Path | None:
    """Turn JAX's persistent compilation cache on in this process; the folder it uses, or None
    when it is off. Call it before the first compile: JAX opens the cache on its first compile
    and keeps that folder for the life of the process. A folder already set wins (an earlier
    call's, or the user's own JAX_COMPILATION_CACHE_DIR), so calling it again changes nothing."""
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return Path(chosen)
    root = cache_root()
    if root is None:
        return None
    folder = root / SUBFOLDER
    prune(folder, KEEP_DAYS)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder


def prune(folder: Path, days: float) -> int:
    """Delete the entries of `folder` that no process has read or written for `days`; how many
    went. By the files' access times, which a read updates at least daily under Linux's default
    (relatime); under noatime an entry goes `days` after it was written, and compiles again. A
    folder that is not there, or an entry another process deletes first, is no error."""
    cutoff = time.time() - days * 86400
    gone = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            st = entry.stat()
            if max(st.st_atime, st.st_mtime) < cutoff:
                os.unlink(entry.path)
                gone += 1
        except OSError:
            continue
    return gone
