"""What a learner gets: the exercise files and the walkthrough notebooks, written into a folder.

They ship as package data (jaxninja/learn/exercises), so a pip install has them. The notebooks are
there as percent-format scripts (they review as code) and written out as .ipynb by jupytext: one
for part 4 (exercises 1 to 4), one for part 5 (exercise 5, the WaveNet), one for part 6 (exercise
6, makemore's GPT). Nothing a learner already has is overwritten: a file already in the folder is
kept as it is, and only the missing ones are written (so a deleted exercise can be had back).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from jaxninja.errors import UsageError
from jaxninja.fileio import atomic_path

EXERCISE_FILES = (
    "ex1_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py", "ex5_wavenet.py",
    "ex6_transformer.py",
)  # fmt: skip
# each notebook's script -> the notebook written out
NOTEBOOKS = {
    "walkthrough.py": "walkthrough.ipynb",
    "wavenet_walkthrough.py": "wavenet_walkthrough.ipynb",
    "gpt_walkthrough.py": "gpt_walkthrough.ipynb",
}
# how each file is graded, from the folder that holds it
GRADE_COMMANDS = {
    "ex1_backward.py": "jaxninja check --candidate ex1_backward.py:backward --exercise 1",
    "ex2_cross_entropy.py": (
        "jaxninja check --candidate ex2_cross_entropy.py:cross_entropy_backward --exercise 2"
    ),
    "ex3_batchnorm.py": (
        "jaxninja check --candidate ex3_batchnorm.py:batchnorm_backward --exercise 3"
    ),
    "ex5_wavenet.py": "jaxninja check --candidate ex5_wavenet.py --exercise 5",
    "ex6_transformer.py": "jaxninja check --candidate ex6_transformer.py --exercise 6",
}


def source(name: str) -> Path:
    """The packaged copy of an exercise file or of a notebook's script."""
    return Path(str(files("jaxninja.learn") / "exercises" / name))


def write_exercises(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Write into `folder` (made if missing) those of the exercise files and notebooks that it
    does not hold yet; (written, kept): a file already there is the learner's, and is left
    exactly as it is."""
    import jupytext

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder: choose a folder for the exercises")
    scripts = {out: script for script, out in NOTEBOOKS.items()}
    targets = [folder / n for n in (*EXERCISE_FILES, *scripts)]
    kept = [p for p in targets if p.exists()]
    written = [p for p in targets if not p.exists()]
    try:
        for target in written:
            with atomic_path(target, suffix=target.suffix) as tmp:
                if target.name in scripts:
                    jupytext.write(jupytext.read(source(scripts[target.name])), tmp, fmt="ipynb")
                else:
                    tmp.write_bytes(source(target.name).read_bytes())
    except OSError as e:
        raise UsageError(
            f"cannot write into {folder} ({e.strerror or e}): choose a folder you can write to"
        ) from None
    return written, kept
