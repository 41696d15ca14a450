"""What a user sees while a check runs: a print that showed a tracer gets its hint, and a check
that runs long says on stderr where it is.

A `print` inside a traced JAX function prints a tracer (`Traced<float32[4,8]>`), not numbers; the
hint names `jax.debug.print`. The grader (learn/candidate.py) and parity watch stdout through the
same `Tee` and say the same. `Progress` is a daemon thread: it stays silent for the first
QUIET_S seconds, then prints the current stage every EVERY_S seconds, so a compile that takes a
minute shows signs of life.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Iterator

TRACER_NOTE = (
    "your print showed a tracer, not numbers: inside jit use "
    'jax.debug.print("{x}", x=x) to see values'
)
QUIET_S = 10.0
EVERY_S = 10.0


class Tee(io.TextIOBase):
    """Writes through to the real stream and keeps a copy, to read what the user printed."""

    def __init__(self, stream) -> None:
        self.stream, self.seen = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.seen.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def shows_tracer(printed: str) -> bool:
    """Whether printed text shows a JAX tracer instead of values."""
    return any(t in printed for t in ("Tracer", "Traced<"))


@contextlib.contextmanager
def watched_prints(notes: list[str]) -> Iterator[None]:
    """Run the block with stdout watched; a printed tracer adds TRACER_NOTE to `notes`."""
    out = Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        if shows_tracer(out.seen.getvalue()) and TRACER_NOTE not in notes:
            notes.append(TRACER_NOTE)


class Progress:
    """`with Progress("parity") as p: p.stage("seed 0: jax in float64")`: after QUIET_S seconds,
    the stage and the time so far on stderr every EVERY_S seconds, and the total at the end."""

    def __init__(self, name: str, quiet: float | None = None, every: float | None = None) -> None:
        self.name = name
        self.quiet = QUIET_S if quiet is None else quiet
        self.every = EVERY_S if every is None else every
        self.current, self.spoke = "starting", False
        self._done = threading.Event()
        self._start = time.monotonic()

    def stage(self, text: str) -> None:
        self.current = text

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self._start
        print(f"{self.name}: {text} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
        self.spoke = True

    def _watch(self) -> None:
        if self._done.wait(self.quiet):
            return
        while True:
            self._say(self.current)
            if self._done.wait(self.every):
                return

    def __enter__(self) -> Progress:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.spoke:
            self._say("done")
