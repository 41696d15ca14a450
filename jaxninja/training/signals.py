"""Ctrl-C and SIGTERM during a run: a request the loop answers between chunks (save, then stop),
and the one line that says where the run was saved and how to continue it.

SIGTERM is what schedulers send before they kill a job. In one process a handler records the
signal; in a multi-process run SIGTERM belongs to JAX's preemption service, which hears it in
any process and tells them all, so every process stops after the same chunk.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from jaxninja.errors import Interrupted
from jaxninja.training import checkpoint, parallel


class Stop:
    """A signal as a request that the loop asks about once per chunk (`requested`), instead of
    an exception anywhere; the handlers are installed while the `with` block runs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._chunks = 0  # the preemption service's step: the same count in every process
        self._handlers = handling(self._record)

    def __enter__(self) -> Stop:
        self._handlers.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handlers.__exit__(None, None, None)  # the previous handlers back

    def _record(self, signum: int, frame: object) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """Whether to stop before the next chunk; asked once per chunk."""
        if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(self._chunks):
            self.signum = signal.SIGTERM
        self._chunks += 1
        return self.signum is not None


@contextmanager
def handling(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM to `handler` for a while, in one process (in a multi-process run,
    SIGTERM belongs to JAX's preemption service); nothing off the main thread, which cannot."""
    mine = [signal.SIGINT] + ([signal.SIGTERM] if jax.process_count() == 1 else [])
    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in mine} if on_main else {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _how(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def complete(signum: int, step: int, paths: list[Path], out_dir: str | os.PathLike) -> str:
    """The one line of a signal that came once the final checkpoints were written."""
    where = paths[0] if len(paths) == 1 else f"{out_dir}/seed-*/"
    return (
        f"{_how(signum)} after the last step ({step}): the run is complete and saved in {where}; "
        f"`jaxninja eval --checkpoint {paths[0].parent}` gives its split losses"
    )


@contextmanager
def reporting(result: Any, out_dir: str | os.PathLike) -> Iterator[None]:
    """While a finished run (a loop.TrainResult) is reported (its split losses take seconds),
    Ctrl-C or SIGTERM end the report with the line that says the run is complete, not with
    silence or a bare 'interrupted'."""

    def handler(signum: int, frame: object) -> None:
        step = result.checkpoints[0].step
        raise Interrupted(complete(signum, step, result.paths, out_dir), signum)

    with handling(handler):
        yield


def stopped(signum: int, step: int, plan: Any) -> str:
    """The one line of a run (a loop.Plan) stopped by a signal: where it saved, how to resume."""
    how = _how(signum)
    saved = plan.dirs[0] / checkpoint.filename(step)
    if step == plan.steps:  # it came after the last chunk: the final checkpoint is written
        return complete(
            signum, step, [d / checkpoint.filename(step) for d in plan.dirs], plan.out_dir
        )
    if jax.process_count() > 1:
        who = "saved " if parallel.is_main_process() else "process 0 saved "
        return (
            f"{how} at step {step} with every process: {who}{saved}; "
            "to continue, start every process again with its flags and --resume"
        )
    many = f" --seeds {plan.models}" if plan.models > 1 else ""
    others = " and the other seeds" if plan.models > 1 else ""
    return (
        f"{how} at step {step}: saved {saved}{others}; continue with "
        f"`jaxninja train --out {plan.out_dir}{many} --resume`"
    )
