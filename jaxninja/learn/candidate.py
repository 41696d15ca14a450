"""A learner's function: loaded afresh from their file, and run under watch.

Loading: `PATH.py:FUNCTION` or `module:function` (`load_function`), or a whole file, `PATH.py` or
`module` (`load_module`: exercise 5 grades two functions of one file), imported anew on every
call (a module is looked for first in the folder the learner stands in), so an edit is always
what runs.

Running (`watching`): whatever the learner's code does goes back to them as one line with their
file and line, never a traceback, and JAX's surprises for someone coming from PyTorch get a hint:
`np.` on a traced array, a Python `range` as an index, a traced value in an `if`, a `print` that
shows a tracer (jax.debug.print shows values). A function still running after `timeout` seconds
is stopped; `sys.exit` inside it is reported as such instead of ending the grader.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import re
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from jaxninja.compile_cache import SMALL_COMPILE
from jaxninja.config import DEFAULT_TIMEOUT
from jaxninja.errors import UsageError
from jaxninja.parity.watch import TRACER_NOTE, shows_tracer
from jaxninja.parity.watch import Tee as _Tee

__all__ = [
    "DEFAULT_TIMEOUT", "HINT_NOTE", "check_arity", "load_function", "load_module", "run_once",
    "their_exception", "watching",
]  # fmt: skip
# A grader that knows why the learner's code raised says so in a note of this prefix on the
# exception (e.add_note): their one line then carries it as its hint.
HINT_NOTE = "jaxninja hint: "


class _TimedOut(BaseException):
    """Raised in the learner's code when its time is up (a BaseException: their `except
    Exception` cannot swallow it)."""


@contextlib.contextmanager
def watching(fn: Callable, exercise: int, timeout: float | None) -> Iterator[list[str]]:
    """Run the block under the time limit, with the learner's output watched; yields the list of
    notes (a printed tracer) it adds to. Their exceptions become one-line UsageErrors."""
    notes: list[str] = []
    out = _Tee(sys.stdout)
    try:
        with _time_limit(timeout), contextlib.redirect_stdout(out):
            yield notes
    except UsageError:
        raise
    except _TimedOut:
        raise UsageError(
            f"exercise {exercise}: your function was still running after {timeout:g} s and was "
            "stopped: look for a loop that never ends (or give --timeout more seconds)"
        ) from None
    except SystemExit as e:
        raise UsageError(
            f"{_where(fn, e, exercise)} called sys.exit({e.code!r}): return the gradients instead"
        ) from None
    except Exception as e:
        raise UsageError(their_exception(fn, e, exercise)) from None
    finally:
        if shows_tracer(out.seen.getvalue()):
            notes.append(TRACER_NOTE)


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """SIGALRM after `seconds`, raised as _TimedOut wherever the Python code then is (only in
    the main thread, where signals are delivered; elsewhere there is no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_once(f: Callable, *args: Any) -> Any:
    """f(*args), traced afresh (a new jit wrapper each call) and compiled quickly, since it runs
    once (compile_cache.SMALL_COMPILE; exercise 1's compile: 1.5 s -> 0.5 s)."""
    return jax.jit(f).lower(*args).compile(SMALL_COMPILE)(*args)


def check_arity(fn: Callable, n_args: int, exercise: int, signature: str) -> None:
    """Refuse, in one line, a function that cannot be called as the exercise calls it."""
    try:
        inspect.signature(fn).bind(*range(n_args))
    except TypeError:
        raise UsageError(
            f"{getattr(fn, '__name__', 'the function')} takes {inspect.signature(fn)}; exercise "
            f"{exercise} calls it with {n_args} arguments: {signature}"
        ) from None
    except ValueError:  # a builtin without a signature: let the call say
        pass


# JAX's errors that someone new to it meets first, and what to do instead
def _jax_hint(e: Exception) -> str | None:
    text = str(e)
    if isinstance(e, jax.errors.TracerArrayConversionError):
        return "inside jit the arrays are traced: use jnp, not np, on them"
    if isinstance(e, jax.errors.TracerIntegerConversionError | jax.errors.ConcretizationTypeError):
        return (
            "a traced value cannot be a Python int or bool: use the shapes (x.shape[0]), "
            "jnp.where for an if"
        )
    if "<class 'range'>" in text or "range(" in text:
        return "JAX indexes with arrays, not a Python range: use jnp.arange(n)"
    return None


def _their_frames(fn: Callable, e: BaseException) -> list[traceback.FrameSummary]:
    try:
        theirs = Path(inspect.getsourcefile(inspect.unwrap(fn)) or "").resolve()
    except TypeError:
        return []
    return [
        f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == theirs
    ]


def _where(fn: Callable, e: BaseException, exercise: int) -> str:
    frames = _their_frames(fn, e)
    if not frames:
        return f"exercise {exercise}: your function"
    f = frames[-1]
    return f"exercise {exercise}: {Path(f.filename).name}:{f.lineno}: `{f.line}`"


def their_exception(fn: Callable, e: Exception, exercise: int) -> str:
    """One line for an exception raised in the learner's code: their file and line, and theirs."""
    message = (str(e).strip().splitlines() or [""])[0]
    message = re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", message)  # no addresses
    what = f"{type(e).__name__}: {message}" if message else type(e).__name__
    noted = [n[len(HINT_NOTE) :] for n in getattr(e, "__notes__", ()) if n.startswith(HINT_NOTE)]
    hint = noted[0] if noted else _jax_hint(e)
    return f"{_where(fn, e, exercise)} raised {what}" + (f" (hint: {hint})" if hint else "")


# --- loading ------------------------------------------------------------------------------------


def load_function(spec: str) -> tuple[Callable, str]:
    """`PATH.py:FUNCTION` or `module:function` -> (the function, its name as given). The file is
    imported afresh on each call, so an edit is always seen."""
    path_part, sep, func = spec.rpartition(":")
    if not sep or not path_part or not func:
        raise UsageError(f"{spec!r}: name a function as PATH.py:FUNCTION or module:function")
    module = _load_module(path_part)
    fn = getattr(module, func, None)
    if not callable(fn):
        defined = sorted(
            k
            for k, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__
        )
        raise UsageError(
            f"{path_part} has no function {func!r}"
            + (f" (it defines {', '.join(defined)})" if defined else "")
        )
    return fn, spec


def load_module(spec: str, exercise: int = 5) -> tuple[ModuleType, str]:
    """`PATH.py` or `module` -> (the module, its name as given), imported afresh on each call;
    `exercise`: the one (5 or 6) that looks up its functions in it."""
    path_part, sep, func = spec.rpartition(":")
    if sep and path_part and func.isidentifier():
        raise UsageError(
            f"{spec!r}: name the file alone, {path_part}: exercise {exercise} looks up both its "
            "functions"
        )
    return _load_module(spec), spec


def _load_module(path_part: str) -> ModuleType:
    """A file (it ends in .py or names a folder), a module beside the learner, or an installed
    module; anything else is a one-line error."""
    if path_part.endswith(".py") or "/" in path_part or "\\" in path_part:
        return _import_file(Path(path_part))
    if Path(path_part).is_file() or not all(p.isidentifier() for p in path_part.split(".")):
        kind = "a file, not Python" if Path(path_part).is_file() else "not a module name"
        raise UsageError(
            f"{path_part!r} is {kind}: name a .py file (PATH.py:FUNCTION) or a module "
            "(module:function)"
        )
    here = Path.cwd().joinpath(*path_part.split("."))
    for local in (here.with_suffix(".py"), here / "__init__.py"):
        if local.is_file():  # the learner's own file, where they stand: imported afresh
            return _import_file(local)
    try:
        return importlib.import_module(path_part)
    except ModuleNotFoundError as e:
        if e.name and path_part.startswith(e.name):
            raise UsageError(
                f"no module named {path_part!r} here or installed (or a file: PATH.py)"
            ) from None
        raise UsageError(_import_error(path_part, e)) from None
    except (Exception, SystemExit) as e:
        raise UsageError(_import_error(path_part, e)) from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(
            f"no such file: {path}: check the path, or write the exercises with "
            "`jaxninja exercises DIR`"
        )
    if path.suffix != ".py":
        raise UsageError(f"{path} is not a Python file: name a .py file (PATH.py:FUNCTION)")
    name = f"jaxninja_candidate_{uuid.uuid4().hex}"  # a fresh module: never a cached import
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and the like look themselves up there
    try:
        # compiled from the source as it is now: not a __pycache__ .pyc, which Python trusts
        # when the file's size and mtime (in whole seconds) match, and writes into their folder
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except (Exception, SystemExit) as e:
        raise UsageError(_import_error(str(path), e, path)) from None
    finally:
        sys.modules.pop(name, None)
    return module


def _import_error(what: str, e: BaseException, path: Path | None = None) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}: " if frames else ""
    if isinstance(e, SyntaxError) and e.lineno:
        where = f"{Path(e.filename or what).name}:{e.lineno}: "
        message = e.msg
    else:
        message = (str(e).strip().splitlines() or [""])[0]
    return f"importing {what} failed: {where}{type(e).__name__}: {message}"
