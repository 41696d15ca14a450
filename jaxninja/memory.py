"""Sizes that cannot fit are refused before anything is allocated, saying what they would need.

numpy's own refusal (`_ArrayMemoryError: Unable to allocate 136. GiB`) comes as a traceback from
deep inside, after other work; asking first gives one line that names the flag to lower.
"""

from __future__ import annotations

import os

from jaxninja.errors import UsageError


def available_bytes() -> int:
    """The memory this machine can still give (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def require(nbytes: int, what: str, fix: str) -> None:
    """Refuse, in one line, what needs more memory than there is."""
    have = available_bytes()
    if nbytes > have:
        raise UsageError(f"{what} needs about {gib(nbytes)} of memory, {gib(have)} is free: {fix}")
