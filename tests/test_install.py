"""What an install ships: a non-editable install (`pip install .`, a wheel) holds only the
packages pyproject.toml lists, so every folder of code must be listed, subpackages included."""

import tomllib

from tests.conftest import ROOT


def test_every_folder_of_code_is_a_listed_package():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("jaxninja", "torch_ref")
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert folders <= listed, f"not shipped by a non-editable install: {sorted(folders - listed)}"
