"""data.py against the notebook's own build_dataset, bad input, and the download path."""

import hashlib
import http.server
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxninja.data import (
    Vocab,
    build_dataset,
    download_names,
    load_splits,
    read_words,
    resolve_data_path,
    split_words,
)
from jaxninja.errors import UsageError


def notebook_build_dataset(words, stoi, block_size):
    """The notebook's cell, verbatim but for numpy in place of torch."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = [*context[1:], ix]
    return np.array(X, dtype=np.int64).reshape(-1, block_size), np.array(Y, dtype=np.int64)


def test_notebook_counts(splits):
    assert splits.vocab.size == 27
    assert [splits.data[s][0].shape for s in ("train", "val", "test")] == [
        (182625, 3),
        (22655, 3),
        (22866, 3),
    ]


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_same_arrays_as_notebook(names_path, block_size):
    words = open(names_path).read().splitlines()
    chars = sorted(set("".join(words)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    random.seed(42)
    random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    ours = load_splits(names_path, block_size)
    assert ours.vocab.stoi == stoi
    for name, part in (("train", words[:n1]), ("val", words[n1:n2]), ("test", words[n2:])):
        X, Y = notebook_build_dataset(part, stoi, block_size)
        assert np.array_equal(ours.data[name][0], X) and np.array_equal(ours.data[name][1], Y)


def test_split_leaves_global_random_alone():
    state = random.getstate()
    split_words([f"w{i}" for i in range(10)])
    assert random.getstate() == state


def test_other_alphabet(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("Zoë\nJean-Luc\n\nmary ann\nÅsa\r\n", encoding="utf-8")
    words = read_words(f)
    assert words == ["Zoë", "Jean-Luc", "mary ann", "Åsa"]
    vocab = Vocab.from_words(words)
    assert vocab.size == len(set("".join(words))) + 1
    assert vocab.itos[0] == "." and vocab.chars == tuple(sorted(set("".join(words))))
    X, Y = build_dataset(words, vocab, 2)
    X_ref, Y_ref = notebook_build_dataset(words, vocab.stoi, 2)
    assert np.array_equal(X, X_ref) and np.array_equal(Y, Y_ref)
    assert vocab.decode(Y[:4]) == "Zoë."


def test_encode_rejects_unknown_character():
    with pytest.raises(UsageError, match="not in the vocabulary"):
        Vocab(("a", "b")).encode("abc")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "holds no words"),
        (b"\n\n  \n", "holds no words"),
        (b"ok\n\xff\xfe\n", "not UTF-8 .* line 2"),
        (b"ann\nmr.smith\n", "line 2: 'mr.smith' contains '.'"),
    ],
)
def test_bad_words_file(tmp_path, content, match):
    f = tmp_path / "w.txt"
    f.write_bytes(content)
    with pytest.raises(UsageError, match=match) as e:
        read_words(f)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found: pass --data PATH, or run `jaxninja data"):
        read_words(tmp_path / "nope.txt")


def test_block_size_below_one():
    with pytest.raises(UsageError, match="block size must be an integer >= 1"):
        build_dataset(["ab"], Vocab(("a", "b")), 0)


def test_data_path_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXNINJA_DATA", "from_env.txt")
    assert resolve_data_path("flag.txt") == Path("flag.txt")
    assert resolve_data_path(None) == Path("from_env.txt")
    monkeypatch.delenv("JAXNINJA_DATA")
    assert resolve_data_path(None, download=False) == Path("data/names.txt")


# --- the download, against a server on 127.0.0.1 ------------------------------------------------

GOOD = b"emma\nolivia\nava\n"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/names.txt": GOOD, "/corrupt.txt": GOOD + b"x"}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_good(server, tmp_path):
    dest = tmp_path / "data" / "names.txt"
    download_names(dest, url=f"{server}/names.txt", sha256=GOOD_SHA)
    assert dest.read_bytes() == GOOD
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind


@pytest.mark.parametrize(
    ("path", "match"), [("/corrupt.txt", "has SHA-256 .* nothing was saved"), ("/404", "failed")]
)
def test_download_bad_leaves_nothing(server, tmp_path, path, match):
    dest = tmp_path / "names.txt"
    with pytest.raises(UsageError, match=match):
        download_names(dest, url=f"{server}{path}", sha256=GOOD_SHA)
    assert list(tmp_path.iterdir()) == []


def test_download_unreachable(tmp_path):
    with pytest.raises(UsageError, match="failed"):
        download_names(tmp_path / "n.txt", url="http://127.0.0.1:9/names.txt", timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_download_keeps_existing_file_on_failure(server, tmp_path):
    dest = tmp_path / "names.txt"
    dest.write_bytes(b"mine\n")
    with pytest.raises(UsageError):
        download_names(dest, url=f"{server}/corrupt.txt", sha256=GOOD_SHA)
    assert dest.read_bytes() == b"mine\n"


def test_cli_download(server, tmp_path, monkeypatch, capsys):
    from jaxninja.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("jaxninja.data.NAMES_URL", f"{server}/names.txt")
    monkeypatch.setattr("jaxninja.data.NAMES_SHA256", GOOD_SHA)
    assert main(["data", "download"]) == 0
    assert (tmp_path / "data" / "names.txt").read_bytes() == GOOD
    assert main(["data", "download"]) == 0  # already there: nothing to do
    assert "already exists" in capsys.readouterr().out
    assert main(["data", "download", "--force", "--url", f"{server}/404"]) == 2
    assert "failed" in capsys.readouterr().err
    assert (tmp_path / "data" / "names.txt").read_bytes() == GOOD


def test_first_command_downloads(server, tmp_path, monkeypatch, capsys):
    from jaxninja.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXNINJA_DATA", raising=False)
    monkeypatch.setattr("jaxninja.data.NAMES_URL", f"{server}/names.txt")
    monkeypatch.setattr("jaxninja.data.NAMES_SHA256", GOOD_SHA)
    assert main(["data"]) == 0
    out = capsys.readouterr()
    assert "downloading" in out.err and "vocab_size: 8" in out.out
