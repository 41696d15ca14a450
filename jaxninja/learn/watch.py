"""`jaxninja check --candidate FILE --exercise N --watch`: one process that grades the learner's
file again on every save.

A fresh `jaxninja check` pays for importing jax and reading the references from disk on every
grade; here jax is imported once, the references stay in memory (references.py keeps them), and
a re-grade is the learner's function traced and compiled afresh (candidate.py imports the file
anew each time, so the grade is always of what the file holds now).

The file is polled, its (mtime, size) every POLL seconds; a change is graded once it has held
still for one poll, so an editor's save in two writes is graded once, whole. A file that is gone,
or does not import, or whose function raises is reported in one line, and watched on; Ctrl-C
ends the watch with exit 0 and one line.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jaxninja.errors import UsageError

POLL = 0.3  # seconds between looks at the file
_sleep = time.sleep  # (the tests' to replace)


def watched_file(spec: str) -> Path:
    """The file a --candidate names: `PATH.py[:FUNCTION]`, or `module[:function]` (the module
    beside the learner first, as candidate.py imports it, else the installed one's file)."""
    path_part, sep, func = spec.rpartition(":")
    if not (sep and path_part and func.isidentifier()):
        path_part = spec
    if path_part.endswith(".py") or "/" in path_part or "\\" in path_part:
        return Path(path_part)
    local = Path.cwd().joinpath(*path_part.split("."))
    for candidate in (local.with_suffix(".py"), local / "__init__.py"):
        if candidate.is_file():
            return candidate
    try:
        origin = importlib.util.find_spec(path_part).origin
    except (ImportError, AttributeError, ValueError):
        origin = None
    if not origin or not origin.endswith(".py"):
        raise UsageError(
            f"--watch watches a file: {path_part!r} is not a .py file here or installed"
        )
    return Path(origin)


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size), or None while the file is not there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def watch(
    path: Path,
    grade_once: Callable[[], int],
    *,
    poll: float = POLL,
    rounds: int | None = None,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Call `grade_once` now and after every change of `path`, until Ctrl-C or SIGTERM (then
    exit 0); `rounds`: stop after that many grades or reports (the tests'). A UsageError of a
    round (the file does not import, the function raises) is its one line, and the watch goes
    on."""
    sleep = sleep or _sleep
    done, last = 0, object()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it as Ctrl-C does
    try:
        while rounds is None or done < rounds:
            stamp = _stamp(path)
            if stamp != last:
                sleep(poll)  # held still for a poll: a save in two writes is graded once
                if _stamp(path) != stamp:
                    continue
                last, done = stamp, done + 1
                _round(path, stamp, grade_once, poll)
                continue
            sleep(poll)
    except KeyboardInterrupt:
        print(f"\nstopped watching {path}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _round(path: Path, stamp, grade_once: Callable[[], int], poll: float) -> None:
    if stamp is None:
        print(f"{path} is not there (yet): watching for it", flush=True)
        return
    t0, what = time.perf_counter(), "graded"
    try:
        grade_once()
    except UsageError as e:
        print(f"jaxninja: error: {e}", file=sys.stderr, flush=True)
        what = "not graded"
    saved = time.strftime("%H:%M:%S", time.localtime(stamp[0] / 1e9))
    print(
        f"{path.name} as saved at {saved}: {what} in {time.perf_counter() - t0:.1f} s; "
        f"watching it for changes (every {poll:g} s; Ctrl-C to stop)",
        flush=True,
    )
