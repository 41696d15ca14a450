"""The pytest plugin (registered by the package: `[project.entry-points.pytest11]`):
`pytest --parity-report DIR` writes the report of each parity assertion (`assert_parity`,
`assert_modules`), passing or failing, to DIR as text (the table) and JSON, named by the test's
id: `tests_test_port.py__test_block.txt`, then `...-2.txt` for a test's second assertion. The
assertion's message stays the table; without the option the plugin does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jaxninja.parity.assertion import listening
from jaxninja.parity.report import Report


def pytest_addoption(parser: Any) -> None:
    parser.getgroup("jaxninja").addoption(
        "--parity-report",
        metavar="DIR",
        default=None,
        help="write each parity assertion's report (text and JSON) to DIR, named by test id",
    )


def pytest_configure(config: Any) -> None:
    folder = config.getoption("--parity-report", default=None)
    if folder and Path(folder).exists() and not Path(folder).is_dir():
        raise pytest.UsageError(f"--parity-report {folder}: that is a file; give a folder")


def file_stem(nodeid: str) -> str:
    """A test id as a file name: `tests/test_a.py::test_b[x-1]` -> `tests_test_a.py__test_b_x-1`."""
    stem = re.sub(r"[^\w.\-]+", "_", nodeid.replace("::", "__")).strip("_")
    return stem[:200] or "test"


def write_report(folder: Path, stem: str, report: Report) -> None:
    (folder / f"{stem}.txt").write_text(report.format() + "\n")
    (folder / f"{stem}.json").write_text(report.to_json() + "\n")


@pytest.fixture(autouse=True)
def _parity_report(request: Any) -> Iterator[None]:
    option = request.config.getoption("--parity-report", default=None)
    if not option:
        yield
        return
    folder = Path(option)
    folder.mkdir(parents=True, exist_ok=True)
    stem, count = file_stem(request.node.nodeid), [0]

    def save(report: Report) -> None:
        count[0] += 1
        write_report(folder, stem if count[0] == 1 else f"{stem}-{count[0]}", report)

    with listening(save):
        yield
