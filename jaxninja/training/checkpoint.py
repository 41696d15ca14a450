"""Checkpoints as safetensors: params, BatchNorm statistics, optimizer state, loss log, the
evaluations of the val split so far, and in the metadata the configs, the vocabulary and the
step. A run that evaluates keeps its best model too, as `best.safetensors` beside the others.

Written atomically (a temp file in the same directory, fsync, rename), so a crash or Ctrl-C
mid-write leaves the previous checkpoint intact. Loading validates everything a later command
relies on and turns any problem into a one-line UsageError.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from jaxninja.config import ModelConfig, TrainConfig
from jaxninja.data import Vocab
from jaxninja.errors import UsageError
from jaxninja.fileio import atomic_path
from jaxninja.models import registry
from jaxninja.models.layers import BNStats

FORMAT = "jaxninja-checkpoint-1"
NAME = re.compile(r"ckpt-(\d+)\.safetensors")


class BadCheckpoint(UsageError):
    """A checkpoint that cannot be used; the message says what is wrong with it, and the advice
    (`advice`) what to do, which a caller that knows more (a resume) replaces."""

    def __init__(self, what: str, advice: str = "use another") -> None:
        super().__init__(f"{what}: {advice}")
        self.what = what


class Checkpoint(NamedTuple):
    step: int  # training steps done
    model: ModelConfig
    train: TrainConfig
    vocab: Vocab
    params: dict[str, np.ndarray]
    bn_running: dict[str, BNStats]  # by BatchNorm name: running mean/var kept during training
    bn_calibrated: dict[str, BNStats] | None  # over the whole train split, once training ended
    opt_leaves: list[np.ndarray]  # the optimizer state, flattened
    losses: np.ndarray  # (step,) the training loss of every step so far
    path: Path | None = None  # the file it was loaded from
    # (k, 2) float64: each evaluation so far (train --eval-every), its step and val loss
    evals: np.ndarray = np.zeros((0, 2))

    @property
    def best(self) -> tuple[int, float] | None:
        """The evaluation of the lowest val loss so far (the first, on a tie): (step, val loss),
        the model best.safetensors holds; None before any."""
        if len(self.evals) == 0:
            return None
        i = int(np.argmin(self.evals[:, 1]))
        return int(self.evals[i, 0]), float(self.evals[i, 1])

    @property
    def bn(self) -> dict[str, BNStats]:
        """The statistics inference uses: calibrated where there are some, else running."""
        return self.bn_calibrated if self.bn_calibrated is not None else self.bn_running


BEST = "best.safetensors"  # in a run directory: the checkpoint of the lowest val loss so far


def filename(step: int) -> str:
    return f"ckpt-{step:07d}.safetensors"


def save(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write `ckpt` to `path` atomically."""
    path = Path(path)
    tensors = {
        f"params/{k}": np.asarray(ckpt.params[k])
        for k in registry.of(ckpt.model).param_shapes(ckpt.model)
    }
    for name, (mean, var) in ckpt.bn_running.items():  # the MLP's: bn/running_mean, ...
        tensors[f"{name}/running_mean"], tensors[f"{name}/running_var"] = mean, var
    for name, (mean, var) in (ckpt.bn_calibrated or {}).items():
        tensors[f"{name}/mean"], tensors[f"{name}/var"] = mean, var
    for i, leaf in enumerate(ckpt.opt_leaves):
        tensors[f"opt/{i:03d}"] = np.asarray(leaf)
    tensors["losses"] = np.asarray(ckpt.losses, ckpt.model.dtype)  # as trained: a resume is exact
    tensors["evals"] = np.asarray(ckpt.evals, np.float64).reshape(-1, 2)
    metadata = {
        "format": FORMAT,
        "step": str(ckpt.step),
        "model": json.dumps(asdict(ckpt.model)),
        "train": json.dumps(asdict(ckpt.train)),
        "vocab": json.dumps(list(ckpt.vocab.chars), ensure_ascii=False),
    }
    # np.asarray, not np.ascontiguousarray, which makes optax's 0-d step count shape (1,)
    blob = safetensors.numpy.save(
        {k: np.asarray(v, order="C") for k, v in tensors.items()}, metadata
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


def latest(run_dir: str | os.PathLike, below: int | None = None) -> Path | None:
    """The checkpoint of the highest step in a run directory (below step `below`, if given), or
    None (also if there is no such directory)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := NAME.fullmatch(p.name))]
    found = [(step, p) for step, p in found if below is None or step < below]
    return max(found)[1] if found else None


LOCK = ".lock"  # in a run directory: the flock of the run that writes there, and its pid
_held: dict[Path, int] = {}  # run directories this process holds: path -> the lock's fd


@contextmanager
def hold_run_dir(out_dir: str | os.PathLike) -> Iterator[None]:
    """Be the only writer of a run directory while the block runs (made if missing).

    An flock, which the kernel drops when the process ends however it ends (a crash, kill -9),
    so no lock is ever left stuck. Re-entrant within a process: an inner hold of a directory
    held already is a no-op, and only the outermost releases it.
    """
    path = Path(out_dir).resolve()
    if path in _held:
        yield
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(
            f"cannot write to {out_dir} ({e.strerror or e}): choose another --out"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UsageError(
            f"{out_dir} is being written by another run (pid {holder}): wait for it to end, "
            "or choose another --out"
        ) from None
    if not re.fullmatch(rb"\d*\n?", os.read(fd, 64)):  # ours hold a pid, or nothing yet
        os.close(fd)
        raise UsageError(
            f"{path / LOCK} is not a jaxninja run's lock, and a run would overwrite it: move it "
            "away, or choose another --out"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    try:
        yield
    finally:
        del _held[path]
        if created and [p.name for p in path.iterdir()] == [LOCK]:  # a run that wrote nothing
            (path / LOCK).unlink()  # leaves no empty directory of its own making behind
            path.rmdir()
        os.close(fd)  # releases the flock


def seed_dir(out_dir: str | os.PathLike, seed: int) -> Path:
    """Where a run of many seeds (train --seeds) keeps one seed's checkpoints."""
    return Path(out_dir) / f"seed-{seed}"


def seed_runs(out_dir: str | os.PathLike) -> dict[int, Path]:
    """The seeds of a run of many seeds that hold checkpoints, by seed, in order."""
    found = {int(d.name[5:]): d for d in Path(out_dir).glob("seed-*") if d.name[5:].isdigit()}
    return {seed: found[seed] for seed in sorted(found) if latest(found[seed])}


def load_run(
    out_dir: str | os.PathLike, models: int = 1, path: str | os.PathLike | None = None
) -> list[Checkpoint]:
    """The latest checkpoints of a run to resume, loaded once: out_dir's (one model), or each
    seed-* directory's (a run of `models` seeds), checked to be one run at one step; or the one
    checkpoint `path` (train --resume PATH)."""
    out_dir = Path(out_dir)
    if path is not None:
        if models > 1:
            raise UsageError(
                "--resume PATH continues one model's checkpoint; a run of --seeds continues "
                "from its --out: give --resume alone"
            )
        return [load(path)]
    found = seed_runs(out_dir)
    if found and len(found) != models:
        first = next(iter(found))
        raise UsageError(
            f"--resume: {out_dir} holds a run of {len(found)} seeds from {first}: "
            f"pass --seeds {len(found)} --seed {first}"
        )
    paths = [latest(d) for d in found.values()] if models > 1 else [latest(out_dir)]
    if not found and (models > 1 or paths[0] is None):
        raise UsageError(
            f"--resume: {out_dir} holds no checkpoint to resume from: give the --out of the run "
            "to continue, or drop --resume to start one there"
        )
    ckpts = [_load_to_resume(path) for path in paths]
    if len({c.step for c in ckpts}) > 1:
        raise UsageError(
            f"the seeds' checkpoints in {out_dir} are at different steps: resume each seed-* "
            "directory alone, or start anew"
        )
    return ckpts


def _load_to_resume(path: Path) -> Checkpoint:
    """The newest checkpoint of a run; where it cannot be used, the message offers the one
    before it (--resume PATH) instead of the newest, which --resume alone would take again."""
    try:
        return load(path)
    except BadCheckpoint as e:
        m = NAME.fullmatch(path.name)
        earlier = latest(path.parent, below=int(m.group(1))) if m else None
        advice = (
            f"continue from the one before it with --resume {earlier}"
            if earlier
            else "start anew with another --out"
        )
        raise UsageError(f"{e.what}: {advice}") from None


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = latest(path)
        seeds = list(seed_runs(path).values())
        if found is None and seeds:
            raise UsageError(
                f"{path} is a run of {len(seeds)} seeds: give one of its directories, "
                f"such as {seeds[0]}"
            )
        if found is None:
            raise UsageError(
                f"{path} holds no checkpoint (ckpt-*.safetensors): train into it first"
            )
        return found
    if not path.exists():
        raise UsageError(
            f"checkpoint {path} not found: give a .safetensors file or a run directory"
        )
    return path


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint (a file, or a run directory's latest)."""
    path = resolve(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadCheckpoint(
            f"{path} is not a readable checkpoint (truncated or corrupt: {reason})"
        ) from None
    if meta.get("format") != FORMAT:
        raise BadCheckpoint(f"{path} is not a jaxninja checkpoint (format {meta.get('format')!r})")
    model, train, vocab, step = _metadata(path, meta)
    m = registry.of(model)
    bn_names = tuple(m.bn_shapes(model))
    expected = {f"params/{k}": shape for k, shape in m.param_shapes(model).items()}
    for name, shape in m.bn_shapes(model).items():
        expected |= {f"{name}/running_{stat}": shape for stat in ("mean", "var")}
    if missing := [k for k in expected if k not in tensors]:
        raise BadCheckpoint(f"{path} is an incomplete checkpoint (no tensor {missing[0]!r})")
    if vocab.size != model.vocab_size:
        raise BadCheckpoint(
            f"{path} is inconsistent: {vocab.size} characters, vocab_size {model.vocab_size}"
        )
    for k, shape in expected.items():
        if tensors[k].shape != shape or tensors[k].dtype != np.dtype(model.dtype):
            raise BadCheckpoint(
                f"{path} is inconsistent: {k} is {tensors[k].dtype}{list(tensors[k].shape)}, "
                f"its config says {model.dtype}{list(shape)}"
            )
    _check_finite(path, tensors, bn_names)
    params = {k[len("params/") :]: tensors[k] for k in expected if k.startswith("params/")}
    bn_running = {
        n: BNStats(tensors[f"{n}/running_mean"], tensors[f"{n}/running_var"]) for n in bn_names
    }
    calibrated = None
    if all(f"{n}/mean" in tensors for n in bn_names):
        calibrated = {n: BNStats(tensors[f"{n}/mean"], tensors[f"{n}/var"]) for n in bn_names}
    opt_keys = sorted(k for k in tensors if k.startswith("opt/"))
    losses = tensors.get("losses", np.zeros((0,), np.float32))
    evals = tensors.get("evals", np.zeros((0, 2)))
    if evals.ndim != 2 or evals.shape[1] != 2:
        raise BadCheckpoint(f"{path} is inconsistent: evals is {list(evals.shape)}, not (k, 2)")
    calibrated = calibrated if bn_names else None  # no BatchNorm: nothing was calibrated
    return Checkpoint(
        step, model, train, vocab, params, bn_running, calibrated,
        [tensors[k] for k in opt_keys], losses, path, evals,
    )  # fmt: skip


def _metadata(path: Path, meta: dict[str, str]) -> tuple[ModelConfig, TrainConfig, Vocab, int]:
    """The configs, vocabulary and step a checkpoint's metadata holds; a missing entry is an
    incomplete checkpoint, one that does not parse a corrupt one."""
    missing = [k for k in ("model", "train", "vocab", "step") if k not in meta]
    if missing:
        raise BadCheckpoint(
            f"{path} is an incomplete checkpoint (no {missing[0]!r} in its metadata)"
        )
    try:
        model = ModelConfig(**json.loads(meta["model"]))
        train = TrainConfig(**json.loads(meta["train"]))
        vocab = Vocab(tuple(json.loads(meta["vocab"])))
        step = int(meta["step"])
    except (TypeError, ValueError, UsageError) as e:  # JSONDecodeError is a ValueError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadCheckpoint(
            f"{path} is a corrupt checkpoint (its metadata does not read: {reason})"
        ) from None
    return model, train, vocab, step


def _check_finite(path: Path, tensors: dict[str, np.ndarray], bn_names: tuple[str, ...]) -> None:
    """A model with a NaN or inf in it is no trained model: sampling and evaluating it would print
    empty names and `nan` losses as if they were results."""
    for name, x in tensors.items():
        if name.startswith(("params/", *(f"{n}/" for n in bn_names))) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise BadCheckpoint(
                f"{path} holds {bad} NaN or inf of {x.size} values in {name}, so it is no usable "
                "model",
                "use an earlier checkpoint, or train again",
            )


def check_vocab(ckpt: Checkpoint, vocab: Vocab, source: str) -> None:
    """A checkpoint only makes sense on data of the vocabulary it was trained on."""
    if ckpt.vocab != vocab:
        theirs, ours = set(ckpt.vocab.chars), set(vocab.chars)
        only = [
            f"{''.join(sorted(chars))!r} only in {where}"
            for chars, where in ((theirs - ours, "the checkpoint's"), (ours - theirs, source))
            if chars
        ]
        raise UsageError(
            f"the checkpoint's vocabulary is not that of {source} ({'; '.join(only)}): pass the "
            "--data it was trained on"
        )
