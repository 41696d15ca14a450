"""A seed's runs, their large arrays kept on disk until the verdict reads them, one row at a time.

The verdict of a row needs that row from every run of the seed at once (both sides in float64,
the reference moved, both in the dtype under test), and a run makes all its rows together: held
in memory, a model's weight gradients are there five times over (GPT-2 small: 5 GB of them). A
spilled run keeps each array of SPILL_BYTES or more in a file of its own and reads it back when
the verdict asks for that row, so the arrays in memory are one run's while it runs, then one
row's. The files are the operating system's cache, reclaimable, and are removed with the seed.
"""

from __future__ import annotations

import ctypes
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SPILL_BYTES = 2**20  # smaller arrays stay in memory: a layer's check never touches disk


class OnDisk(Mapping):
    """A run's rows by key, in their order: the large ones read from their files on access."""

    def __init__(self, rows: Mapping[Any, Any], folder: tempfile.TemporaryDirectory) -> None:
        self._folder = folder  # kept: the files go when the last run holding them does
        self._order = list(rows)
        self._kept: dict[Any, Any] = {}
        self._files: dict[Any, Path] = {}
        for key, x in rows.items():
            if _spillable(x):
                path = Path(folder.name) / f"{uuid.uuid4().hex}.npy"
                np.save(path, x, allow_pickle=False)
                self._files[key] = path
            else:
                self._kept[key] = x

    def __getitem__(self, key: Any) -> Any:
        if key in self._files:
            return np.load(self._files[key], allow_pickle=False)
        return self._kept[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


def _spillable(x: Any) -> bool:
    # numpy's own dtypes only: a bfloat16 (ml_dtypes) would come back as bytes
    return isinstance(x, np.ndarray) and x.nbytes >= SPILL_BYTES and x.dtype.kind in "fiub"


def spill(run: Any, folder: tempfile.TemporaryDirectory) -> Any:
    """`run` (sides.Run) with its large value and gradient arrays on disk, in `folder`."""
    out = run._replace(values=OnDisk(run.values, folder), grads=OnDisk(run.grads, folder))
    del run
    _trim()
    return out


def _trim() -> None:
    """Hand the memory of the run just spilled back to the system: glibc keeps freed blocks
    under its mmap threshold (up to 32 MiB, a weight matrix's size) for reuse, where the next
    run's larger arrays cannot use them, and a process's peak adds both up."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")  # glibc; elsewhere nothing to trim
    except OSError:
        return None


_libc = _load_libc()


def seed_folder() -> tempfile.TemporaryDirectory:
    """A folder for one seed's runs, removed when the seed and its runs are dropped."""
    return tempfile.TemporaryDirectory(prefix="jaxninja-parity-")
