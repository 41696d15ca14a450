"""What a grade compares the learner's function against, computed once and kept.

None of it depends on the learner's code: the seeded case, the forward's intermediates and every
reference source (jax.grad and its float64 truth, PyTorch autograd and manual, the project's
atomic and fused backwards); for exercises 5 and 6, the WaveNet's and the GPT's (their checks'
sources, check/sources.py: jax.grad, its truth, PyTorch autograd, the model's own backward). A
notebook grades many times in one process, so an entry is kept in memory; a learner's
edit-and-grade loop is many processes, so it is kept on disk as well, in the user's cache
directory (`$JAXNINJA_CACHE` to put it elsewhere, `off` to keep nothing on disk).

An entry on disk is named by everything it is computed from: the project's version and a digest
of the source files that compute it, the data file's SHA-256, the sizes, dtype, batch and seed,
and whether PyTorch took part. It carries a SHA-256 of its own tensors: an entry that does not
read back whole, or does not match, is recomputed and rewritten, never trusted.

What is left for a warm grade: a process that only imports jax takes about 1 s on a 2-core
x86-64 CPU VM, and no grade in a fresh process can go below it; a warm grade of exercises 1 to 3
takes about 1.5 s in all, mostly compiling the learner's function, which is compiled quickly
since it runs once, on small batches (compile_cache.SMALL_COMPILE). In a notebook, where jax is
imported already, a warm grade is the part past the import alone. `python
benchmarks/grade_speed.py` measures it, cold and warm, in fresh processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from jaxninja.check import gpt as gpt_check
from jaxninja.check import mlp as mlp_check
from jaxninja.check import sources as checked_sources
from jaxninja.check import wavenet as wavenet_check
from jaxninja.config import VERSION, ModelConfig
from jaxninja.data import load_rows, load_splits
from jaxninja.fileio import atomic_path
from jaxninja.models.mlp import Case, make_case
from jaxninja.parity.sides import check_context

CACHE_ENV = "JAXNINJA_CACHE"
FORMAT = 2  # bump when what an entry holds changes
# the packages whose code computes an entry (and this module): a change to any is a new entry
SOURCES = ("models", "check", "parity")
# the models whose references are their check's sources: each check's say (check/sources.py)
SEATED = {"wavenet": wavenet_check.CHECKED, "gpt": gpt_check.CHECKED}


class References(NamedTuple):
    cfg: ModelConfig
    seed: int
    case: Case  # numpy: params, Xb, Yb
    values: dict[str, dict[str, np.ndarray]]  # dtype -> forward_chunked's 19 intermediates
    sources: dict[str, dict[str, np.ndarray]]  # the check's sources (parity/named.py's flat dict)
    losses: dict[str, float]
    shapes: dict[str, tuple[int, ...]]


class Sizes(NamedTuple):
    block_size: int
    n_embd: int
    n_hidden: int
    dtype: str
    model: str = "mlp"  # or "wavenet" (exercise 5), "gpt" (exercise 6)
    n_layer: int = 4  # the GPT's (other models: unused)
    n_head: int = 4


_memory: dict[str, References] = {}


def references(
    data: Path, sizes: Sizes, batch_size: int, seed: int, with_torch: bool
) -> References:
    """The references of one case: from memory, else from the disk cache, else computed (and
    then kept in both)."""
    key = _key(data, sizes, batch_size, seed, with_torch)
    if key in _memory:
        return _memory[key]
    path = _cache_path(key)
    refs = _read(path, key) if path else None
    if refs is None:
        refs = _compute(data, sizes, batch_size, seed, with_torch)
        if path:
            _write(path, key, refs)
    _memory[key] = refs
    return refs


def _compute(data: Path, sizes: Sizes, batch_size: int, seed: int, with_torch: bool):
    splits = (load_rows if sizes.model == "gpt" else load_splits)(data, sizes.block_size)
    cfg = ModelConfig(splits.vocab.size, **sizes._asdict())
    if cfg.model in SEATED:
        return _compute_seated(cfg, splits.data["train"], batch_size, seed, with_torch)
    case = make_case(cfg, *splits.data["train"], batch_size, seed)
    with check_context(cfg.dtype):
        sources, losses, values = mlp_check.gradient_sources(case, cfg.eps, with_torch)
    shapes = mlp_check.shapes_of(case, values[cfg.dtype])
    return References(cfg, seed, case, values, sources, losses, shapes)


def _compute_seated(cfg: ModelConfig, train, batch_size: int, seed: int, with_torch: bool):
    """The WaveNet's or the GPT's references: its check's case and sources, but for its layer
    vjps, which are fed the backward under test and so are computed with the learner's."""
    checked = SEATED[cfg.model]
    case = make_case(cfg, *train, batch_size, seed, init=checked.init)
    with check_context(cfg.dtype):
        sources, losses = checked_sources.gradient_sources(
            checked, cfg, case, with_torch, vjps=False
        )
    shapes = dict(checked_sources.rules(checked, cfg, batch_size).shapes)
    return References(cfg, seed, case, {}, sources, losses, shapes)


# --- the key ------------------------------------------------------------------------------------


def _key(data: Path, sizes: Sizes, batch_size: int, seed: int, with_torch: bool) -> str:
    parts = {
        "format": FORMAT, "version": VERSION, "code": _code_digest(with_torch),
        "jax": jax.__version__, "data": _file_digest(data), "sizes": sizes._asdict(),
        "batch_size": batch_size, "seed": seed, "torch": with_torch,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


@cache
def _code_digest(with_torch: bool) -> str:
    root = Path(__file__).parent.parent
    files = [*sorted(f for pkg in SOURCES for f in (root / pkg).glob("*.py")), Path(__file__)]
    if with_torch:
        import importlib.util

        torch_ref = Path(importlib.util.find_spec("torch_ref").origin).parent
        files += sorted(torch_ref.glob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


_file_digests: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """The data file's SHA-256 (read once per process while it is unchanged)."""
    try:
        st = path.stat()
    except OSError:
        return "unreadable"  # load_splits says why, with its own message
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _file_digests[key]


# --- the disk -----------------------------------------------------------------------------------


def cache_dir() -> Path | None:
    """Where entries are kept: $JAXNINJA_CACHE, else the user's cache directory; None for off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen)
    import platformdirs

    return Path(platformdirs.user_cache_dir("jaxninja"))


def _cache_path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"grade-{key}.safetensors"


def _tensors(refs: References) -> dict[str, np.ndarray]:
    tensors = {f"case/params/{k}": v for k, v in refs.case.params.items()}
    tensors["case/Xb"], tensors["case/Yb"] = refs.case.Xb, refs.case.Yb
    for dtype, values in refs.values.items():
        tensors |= {f"values/{dtype}/{k}": v for k, v in values.items()}
    for source, grads in refs.sources.items():
        tensors |= {f"sources/{source}/{k}": v for k, v in grads.items()}
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def _digest(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        x = tensors[name]
        digest.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
        digest.update(x.tobytes())
    return digest.hexdigest()


def _write(path: Path, key: str, refs: References) -> None:
    """Keep an entry; a cache that cannot be written is only slower, never an error."""
    tensors = _tensors(refs)
    meta = {
        "key": key, "digest": _digest(tensors), "cfg": json.dumps(asdict(refs.cfg)),
        "seed": str(refs.seed),
        "losses": json.dumps(refs.losses), "shapes": json.dumps(refs.shapes),
    }  # fmt: skip
    try:
        with atomic_path(path, suffix=".tmp") as tmp:
            tmp.write_bytes(safetensors.numpy.save(tensors, meta))
    except OSError:
        pass


def _read(path: Path, key: str) -> References | None:
    """An entry read back whole and matching its digest, or None."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("key") != key or meta.get("digest") != _digest(tensors):
            return None
        cfg = ModelConfig(**json.loads(meta["cfg"]))
        losses = json.loads(meta["losses"])
        shapes = {k: tuple(v) for k, v in json.loads(meta["shapes"]).items()}
        return _from_tensors(cfg, int(meta["seed"]), tensors, losses, shapes)
    except (OSError, SafetensorError, ValueError, KeyError, TypeError):
        return None


def _from_tensors(cfg, seed, tensors, losses, shapes) -> References:
    def under(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    params = under("case/params/")
    case = Case(params, tensors["case/Xb"], tensors["case/Yb"])
    names = {k.split("/")[1] for k in tensors if k.startswith("sources/")}
    sources = {s: under(f"sources/{s}/") for s in sorted(names)}
    dtypes = {k.split("/")[1] for k in tensors if k.startswith("values/")}
    values = {d: under(f"values/{d}/") for d in sorted(dtypes)}
    return References(cfg, seed, case, values, sources, losses, shapes)
