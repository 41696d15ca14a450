"""The package's layers: imports flow one way, from the CLI down to the base modules.

Each module belongs to a layer (its subpackage, or for the top-level modules their own); a module
may import its own layer and the layers below it, never one above, and never the package's
`__init__` (which is the public API, the top). A new module lands in a layer by its folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxninja"
# lowest first; the base modules have no jaxninja imports but each other's
LAYERS = (
    ("errors", "fileio", "config", "memory", "data", "compile_cache"),
    ("models",),
    ("parity",),
    ("check",),
    ("training",),
    ("learn",),
    ("cli", "cli_flags", "__main__"),
)


def _layer(module: str) -> int:
    """The layer of `jaxninja.a.b`: by its subpackage, or its own name at the top level."""
    head = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py's LAYERS; add it there")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "jaxninja":
            for a in node.names:  # `from jaxninja import x`: x a module, or the API (__init__)
                is_module = (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                found.append(f"jaxninja.{a.name}" if is_module else "jaxninja")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxninja"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("jaxninja")]
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "exercises" in rel.parts or rel.parts == ("jaxninja", "__init__"):
            continue  # the learner's files and the public API stand above every layer
        out[".".join(rel.parts).removesuffix(".__init__")] = path
    return out


def test_imports_flow_one_way():
    upward = []
    for module, path in _modules().items():
        for target in _imports(path):
            if target == "jaxninja":
                upward.append(f"{module} imports the package's __init__")
            elif _layer(target) > _layer(module):
                upward.append(f"{module} imports {target}, a layer above it")
    assert not upward, "\n".join(upward)
