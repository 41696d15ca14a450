"""The one place a parity assertion is made: `assert_parity` and `assert_modules` end here, and
whoever listens (the pytest plugin's `--parity-report DIR`) is handed each report, passing or
failing, before the assertion raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jaxninja.parity.report import Report

_listeners: list[Callable[[Report], None]] = []


@contextmanager
def listening(listener: Callable[[Report], None]) -> Iterator[None]:
    """Hand `listener` every report an assertion judges while inside."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def assert_ok(report: Report) -> Report:
    """The report, after the listeners have it; AssertionError with its table unless it passes."""
    for listener in list(_listeners):
        listener(report)
    if not report.ok:
        raise AssertionError("\n" + report.format())
    return report
