"""`jaxninja check --candidate FILE --exercise N --watch`: one process grading the file again on
every save. The clock is the test's: the watcher's sleep is replaced by one that edits the file
(right, gone, wrong, not Python, saved in two writes), then presses Ctrl-C; no real waiting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaxninja.cli import main
from jaxninja.errors import UsageError
from jaxninja.learn import references, watch
from jaxninja.learn.files import source

EX2 = "ex2_cross_entropy.py"
BLANK = "    dlogits = ...  # TODO"
RIGHT = "    dlogits = (jax.nn.softmax(logits, 1) - jax.nn.one_hot(Yb, V, dtype=logits.dtype)) / n"


@pytest.fixture
def folder(tmp_path, names_path, monkeypatch) -> Path:
    monkeypatch.setenv("JAXNINJA_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / EX2).write_text(source(EX2).read_text())
    return tmp_path


def _saver(path: Path):
    """save(text): write the file, its mtime a second on from the last save's (a save within
    the filesystem's clock tick, of the same size, would otherwise look unchanged)."""
    blank, clock = path.read_text(), [path.stat().st_mtime_ns]

    def save(text: str | None) -> None:
        if text is None:
            path.unlink()
            return
        path.write_text(blank.replace(BLANK, text))
        clock[0] += 10**9
        os.utime(path, ns=(clock[0], clock[0]))

    return save


def test_watch_regrades_each_save_in_one_process_until_ctrl_c(folder, capsys, monkeypatch):
    path, loads = folder / EX2, []
    save = _saver(path)
    real = references._cache_path  # asked where an entry is kept only when not in memory
    monkeypatch.setattr(references, "_cache_path", lambda k: loads.append(k) or real(k))

    def ctrl_c():
        raise KeyboardInterrupt

    # each sleep of the watcher, in turn: after a grade it polls (an edit lands there), after a
    # change it waits one poll for the file to hold still (the two-write save's second write)
    actions = iter([
        None, lambda: save(RIGHT), None, lambda: save(None), None,
        lambda: save(RIGHT.replace("/ n", "/ 32")), None, lambda: save("    dlogits = ("), None,
        lambda: save("    dlogits ="), lambda: save(RIGHT), None, ctrl_c,
    ])  # fmt: skip
    monkeypatch.setattr(watch, "_sleep", lambda s: (next(actions) or (lambda: None))())
    spec = f"{EX2}:cross_entropy_backward"
    assert main(["check", "--candidate", spec, "--exercise", "2", "--watch"]) == 0
    out, err = capsys.readouterr()
    verdicts = [x.split(":")[0] for x in out.splitlines() if x.startswith(("OK", "NOT", "FAIL"))]
    assert verdicts == ["NOT STARTED", "OK", "FAILED", "OK"], out
    assert f"{EX2} is not there (yet): watching for it" in out  # the path as the learner gave it
    assert out.count("watching it for changes") == 5  # 5 rounds: the half-saved file is not one
    assert out.rstrip().endswith(f"stopped watching {EX2}")
    assert len(err.strip().splitlines()) == 1 and "SyntaxError" in err, err  # `dlogits = (`
    assert len(loads) <= 2, loads  # once a case (32, 0) and (5, 1), at the first grade


def test_the_watched_file_is_the_one_the_candidate_names(folder):
    assert watch.watched_file(f"{EX2}:cross_entropy_backward") == Path(EX2)
    assert watch.watched_file("ex5_wavenet.py") == Path("ex5_wavenet.py")
    assert watch.watched_file("ex2_cross_entropy:cross_entropy_backward") == folder / EX2
    assert watch.watched_file("jaxninja.learn.watch").name == "watch.py"  # installed module
    with pytest.raises(UsageError, match="--watch watches a file: 'no_such_module'"):
        watch.watched_file("no_such_module:fn")


def test_watch_alone_asks_for_the_candidate(capsys):
    assert main(["check", "--watch"]) == 2
    assert "--candidate and --exercise go together" in capsys.readouterr().err


def test_sigterm_stops_the_watch_as_ctrl_c_does(folder, capsys):
    """A watch stopped by SIGTERM (a terminal closed, a job ended) says so and exits 0."""
    import os
    import signal

    def grade_once():
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the grade, as it would
        return 0

    (folder / EX2).write_text("x = 1\n")
    before = signal.getsignal(signal.SIGTERM)
    assert watch.watch(folder / EX2, grade_once, sleep=lambda s: None) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"stopped watching {folder / EX2}")
    assert signal.getsignal(signal.SIGTERM) is before  # the handler put back
