"""What a learner gets: the exercise files and the walkthrough notebook, written into a folder.

They ship as package data (jaxninja/exercises), so a pip install has them. The notebook is kept
there as a percent-format script (it reviews as code) and written out as .ipynb by jupytext.
Nothing a learner already has is overwritten: a folder holding any of the files is refused whole.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from jaxninja.errors import UsageError
from jaxninja.fileio import atomic_path

EXERCISE_FILES = ("ex1_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py")
NOTEBOOK = "walkthrough.py"  # written out as walkthrough.ipynb
# how each file is graded, from the folder that holds it
GRADE_COMMANDS = {
    "ex1_backward.py": "jaxninja check --candidate ex1_backward.py:backward --exercise 1",
    "ex2_cross_entropy.py": (
        "jaxninja check --candidate ex2_cross_entropy.py:cross_entropy_backward --exercise 2"
    ),
    "ex3_batchnorm.py": (
        "jaxninja check --candidate ex3_batchnorm.py:batchnorm_backward --exercise 3"
    ),
}


def source(name: str) -> Path:
    """The packaged copy of an exercise file or of the notebook's script."""
    return Path(str(files("jaxninja") / "exercises" / name))


def write_exercises(folder: str | os.PathLike) -> list[Path]:
    """Write the three exercise files and walkthrough.ipynb into `folder` (made if missing);
    refused, with nothing written, if it holds any of them already."""
    import jupytext

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder: choose a folder for the exercises")
    targets = [folder / n for n in EXERCISE_FILES] + [folder / "walkthrough.ipynb"]
    if taken := [p.name for p in targets if p.exists()]:
        raise UsageError(
            f"{folder} already holds {', '.join(taken)}: nothing written, so your work is kept; "
            "choose another folder, or move those files away"
        )
    for name, target in zip(EXERCISE_FILES, targets, strict=False):
        with atomic_path(target, suffix=".py") as tmp:
            tmp.write_bytes(source(name).read_bytes())
    notebook = jupytext.read(source(NOTEBOOK))
    with atomic_path(targets[-1], suffix=".ipynb") as tmp:
        jupytext.write(notebook, tmp, fmt="ipynb")
    return targets
