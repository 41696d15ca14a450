"""The notebook's data pipeline: a words file -> Vocab -> shuffled 80/10/10 split -> (X, Y),
context windows (parts 4 and 5) or, for part 6's GPT, makemore's padded rows (`build_rows`).

The split and the context windows reproduce the notebook's `build_dataset` element for element
(`random.seed(42)`, `random.shuffle`, `int(0.8*n)`, `int(0.9*n)`), but the windows are built with
numpy index arithmetic instead of a Python loop per character. This module also says where the
words file lives and downloads names.txt, checked against its SHA-256, when it is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxninja import memory
from jaxninja.errors import UsageError
from jaxninja.fileio import atomic_path

TERMINATOR = "."
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DEFAULT_DATA = Path("data") / "names.txt"
DATA_ENV = "JAXNINJA_DATA"
SPLITS = ("train", "val", "test")
IGNORE = -1  # a row's target after its stop token: makemore's F.cross_entropy(ignore_index=-1)
# bytes per context-window element that build_dataset holds at its peak: the int64 sources and
# their gather, the mask, and X itself
WINDOW_BYTES = 32


def read_words(path: str | os.PathLike) -> list[str]:
    """One word per line (UTF-8); blank lines are skipped, a word with '.' is an error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"words file {path} not found: pass --data PATH, or run `jaxninja data download`"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory: pass --data PATH to a words file") from None
    except OSError as e:
        raise UsageError(f"cannot read words file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(
            f"{path} is not UTF-8 (byte 0x{raw[e.start]:02x} on line {line}): save it as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark is not a character of the first word
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if TERMINATOR in line:
            raise UsageError(
                f"{path} line {lineno}: {line!r} contains {TERMINATOR!r}, which the model uses as "
                "its terminator: remove or replace it"
            )
        words.append(line)
    if not words:
        raise UsageError(f"{path} holds no words: give a file with one word per line")
    return words


@dataclass(frozen=True)
class Vocab:
    """Characters in sorted order from index 1; the terminator '.' is 0 (the notebook's stoi)."""

    chars: tuple[str, ...]

    @classmethod
    def from_words(cls, words: list[str]) -> Vocab:
        return cls(tuple(sorted(set("".join(words)))))

    @property
    def itos(self) -> dict[int, str]:
        return {0: TERMINATOR, **{i + 1: c for i, c in enumerate(self.chars)}}

    @property
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in self.itos.items()}

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """Indices of every character of `text`, vectorized over code points."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted, as chars are
        pos = np.searchsorted(table, codes)
        found = (pos < len(table)) & (table[np.minimum(pos, len(table) - 1)] == codes)
        ids = np.where(codes == ord(TERMINATOR), 0, pos + 1)
        unknown = ~found & (codes != ord(TERMINATOR))
        if unknown.any():
            c = chr(int(codes[np.argmax(unknown)]))
            raise UsageError(f"character {c!r} is not in the vocabulary: use the training data's")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        itos = self.itos
        return "".join(itos[int(i)] for i in ids)


def split_words(words: list[str], seed: int = 42) -> dict[str, list[str]]:
    """The notebook's split: shuffle with `random.seed(42)`, then 80% / 10% / 10% of the words."""
    words = list(words)
    random.Random(seed).shuffle(words)  # same permutation as random.seed(seed); random.shuffle
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return {"train": words[:n1], "val": words[n1:n2], "test": words[n2:]}


def build_dataset(words: list[str], vocab: Vocab, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Context windows X (N, block_size) and next characters Y (N,), the notebook's order.

    Every word contributes len(word)+1 examples (its characters, then the terminator); the
    context of example k is the block_size characters before it within its own word, 0-padded.
    """
    if not isinstance(block_size, int) or block_size < 1:
        raise UsageError(f"block size must be an integer >= 1, got {block_size!r}")
    if not words:
        return np.zeros((0, block_size), np.int32), np.zeros((0,), np.int32)
    n = sum(len(w) + 1 for w in words)
    memory.require(
        n * block_size * WINDOW_BYTES,
        f"{n:,} context windows of block size {block_size:,}",
        "lower --block-size",
    )
    Y = vocab.encode(TERMINATOR.join(words) + TERMINATOR)  # (N,) each word then its terminator
    lengths = np.array([len(w) + 1 for w in words])  # examples per word
    starts = np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )  # (N,) where each example's word starts
    k = np.arange(len(Y))
    back = np.arange(-block_size, 0)  # (block_size,) offsets of the context, oldest first
    src = k[:, None] + back[None, :]  # (N, block_size)
    inside = src >= starts[:, None]
    X = np.where(inside, Y[np.maximum(src, 0)], 0).astype(np.int32)
    return X, Y


def row_block_size(words: list[str]) -> int:
    """makemore's block size for its rows: the longest word + 1 (the start token and the word,
    or the word and the stop token). 16 for names.txt."""
    return max((len(w) for w in words), default=0) + 1


def build_rows(words: list[str], vocab: Vocab, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """makemore's rows (its CharDataset), one per word, X and Y (N, block_size) int32: x is 0
    (the start token, '.') then the word, 0-padded; y is the word then 0 (the stop token, '.'
    too), then IGNORE, the positions the loss leaves out."""
    if not isinstance(block_size, int) or block_size < 1:
        raise UsageError(f"block size must be an integer >= 1, got {block_size!r}")
    if words and (need := row_block_size(words)) > block_size:
        longest = max(words, key=len)
        raise UsageError(
            f"the word {longest!r} has {len(longest)} characters: its row needs block size "
            f"{need}, above {block_size}; give --block-size {need} or more, or drop the word"
        )
    n = len(words)
    memory.require(
        n * block_size * 16, f"{n:,} rows of block size {block_size:,}", "use a smaller words file"
    )
    lengths = np.array([len(w) for w in words], np.int64)  # (N,)
    ids = vocab.encode("".join(words))  # (sum of lengths,) every word's characters
    row = np.repeat(np.arange(n), lengths)  # each character's word
    col = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # its place
    X = np.zeros((n, block_size), np.int32)
    X[row, col + 1] = ids
    Y = np.full((n, block_size), IGNORE, np.int32)
    Y[row, col] = ids
    Y[np.arange(n), lengths] = 0  # the stop token
    return X, Y


class Splits(NamedTuple):
    vocab: Vocab
    words: dict[str, list[str]]
    data: dict[str, tuple[np.ndarray, np.ndarray]]  # split name -> (X, Y)


def load_splits(path: str | os.PathLike, block_size: int) -> Splits:
    """Read a words file and build the notebook's three splits."""
    return splits_from_words(read_words(path), block_size)


def splits_from_words(words: list[str], block_size: int) -> Splits:
    """The vocabulary of `words` and the notebook's three splits of them."""
    vocab = Vocab.from_words(words)
    parts = split_words(words)
    data = {name: build_dataset(ws, vocab, block_size) for name, ws in parts.items()}
    return Splits(vocab, parts, data)


def load_rows(path: str | os.PathLike, block_size: int | None = None) -> Splits:
    """Read a words file and build makemore's rows of our three splits."""
    return rows_from_words(read_words(path), block_size)


def rows_from_words(words: list[str], block_size: int | None = None) -> Splits:
    """The vocabulary of `words` and makemore's rows of each of the notebook's three splits (the
    same words as splits_from_words's), at `block_size` (None: row_block_size of all words, as
    makemore's max_word_length + 1)."""
    vocab = Vocab.from_words(words)
    block_size = row_block_size(words) if block_size is None else block_size
    parts = split_words(words)
    data = {name: build_rows(ws, vocab, block_size) for name, ws in parts.items()}
    return Splits(vocab, parts, data)


def resolve_data_path(data: str | os.PathLike | None = None, download: bool = True) -> Path:
    """`--data PATH` > `$JAXNINJA_DATA` > `data/names.txt`, downloading only the last if missing."""
    if data is not None:
        return Path(data)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    if not DEFAULT_DATA.exists() and download:
        print(f"{DEFAULT_DATA} is missing: downloading names.txt", file=sys.stderr)
        download_names(DEFAULT_DATA)
    return DEFAULT_DATA


def download_names(
    dest: str | os.PathLike = DEFAULT_DATA,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch names.txt (from NAMES_URL unless `url`) and check its SHA-256 (NAMES_SHA256 unless
    `sha256`); on any failure nothing new is left behind (no file, no folder made for it) and an
    existing file at `dest` is untouched."""
    url, sha256, dest = url or NAMES_URL, sha256 or NAMES_SHA256, Path(dest)
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    if blocked := next((p for p in dest.parents if p.exists() and not p.is_dir()), None):
        raise UsageError(
            f"{blocked} is a file, not a folder: choose another place with --data PATH"
        )
    try:
        with atomic_path(dest) as tmp:
            digest = _fetch(url, tmp, timeout, dest)
            if digest != sha256:
                raise UsageError(
                    f"download of {url} has SHA-256 {digest}, expected {sha256}: nothing was "
                    f"saved; try again, or {_yourself(dest)}"
                )
    except OSError as e:  # the destination itself: a read-only or missing place
        raise UsageError(
            f"cannot write {dest} ({e.strerror or e}): choose another place with --data PATH"
        ) from None
    finally:
        if not dest.exists():
            for folder in made:  # innermost first; only what this call made, and only if empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return dest


def _yourself(dest: Path) -> str:
    """Where the user can put a words file instead, for a message that sends them to one."""
    return f"put a copy of names.txt at {dest}, or point --data PATH or ${DATA_ENV} at one"


def _fetch(url: str, tmp: Path, timeout: float, dest: Path) -> str:
    """Stream `url` into `tmp`; its SHA-256. A failure of the network is a UsageError."""
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                while chunk := response.read(1 << 16):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise UsageError(
                f"download of {url} failed ({reason}): check the network, or {_yourself(dest)}"
            ) from None
    return digest.hexdigest()
