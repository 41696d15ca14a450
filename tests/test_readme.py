"""The README's Python section, executed as written (the parity example is test_parity's)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_python_section_runs(monkeypatch, names_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(names_path.parent.parent)  # where data/names.txt is, as the README runs
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["grads"]) == 7 and float(scope["loss"]) > 0
