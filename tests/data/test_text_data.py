"""The character-level text source: tiny-shakespeare downloaded from a local HTTP server with its
MD5 checked, a user's own file, contiguous splits, and clear errors for bad input."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from gentune.data import dataset_kind, load_dataset
from gentune.data.text import MD5, URL_ENV, download_text, load_text
from gentune.errors import ChecksumError, DataError

# The real tiny-shakespeare, where this machine has it (a fresh clone may not: no download in CI).
SHARED_TEXT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text" / "input.txt"
needs_shakespeare = pytest.mark.skipif(not SHARED_TEXT.is_file(), reason=f"{SHARED_TEXT} is not present")
# Text of our own for the download mechanics: 2000 characters over a 40-character vocabulary.
SMALL = "".join(chr(48 + (i * 7) % 40) for i in range(2000))


class _Server:
    """A local HTTP server over one folder that counts the requests it answers."""

    def __init__(self, folder: Path):
        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serves small.txt, and input.txt when the real tiny-shakespeare is present."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "small.txt").write_text(SMALL)
    if SHARED_TEXT.is_file():
        (folder / "input.txt").symlink_to(SHARED_TEXT.resolve())
    s = _Server(folder)
    yield s
    s.close()


def test_download_checks_the_md5_and_moves_the_file_into_place(server, tmp_path):
    md5 = hashlib.md5(SMALL.encode()).hexdigest()
    dest = download_text(tmp_path / "t" / "small.txt", server.url + "small.txt", md5=md5)
    assert dest.read_text() == SMALL
    assert list(dest.parent.iterdir()) == [dest]  # no partial file left beside it


def test_a_wrong_md5_keeps_no_file(server, tmp_path):
    with pytest.raises(ChecksumError, match="does not match its published MD5"):
        download_text(tmp_path / "x.txt", server.url + "small.txt", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match="cannot download tiny-shakespeare.*--data-file"):
        download_text(tmp_path / "x.txt", server.url + "nope.txt")


@needs_shakespeare
def test_tiny_shakespeare_is_downloaded_once_into_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, server.url + "input.txt")
    before = server.requests
    data = load_dataset("text")
    assert server.requests == before + 1
    again = load_text()
    assert server.requests == before + 1 and again.fingerprint == data.fingerprint
    assert data.name == "tinyshakespeare" and data.vocab_size == 65 and data.kind == "text"
    n = len(data.train) + len(data.val) + len(data.test)
    assert n == 1_115_394 and len(data.val) == len(data.test) == int(n * 0.05)
    assert MD5 == "6fb458f1232090904fb40fe944165e91"


def test_a_users_file_splits_contiguously_and_round_trips(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200 + "é"  # any UTF-8
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    data = load_dataset("text", data_dir=path)
    assert data.vocab == "".join(sorted(set(text)))
    joined = torch.cat([data.train, data.val, data.test])
    assert data.decode(joined) == text  # contiguous, in order, nothing lost
    assert len(data.val) == int(len(text) * 0.05) and data.decode(data.encode("First")) == "First"
    assert data.train.dtype == torch.int64 and dataset_kind("text:mine.txt") == "text"
    assert dataset_kind("digits") == "image"


@pytest.mark.parametrize(
    "content, match",
    [
        (b"too short", "at least 1000 characters"),
        (b"\xff\xfe" + b"a" * 2000, "not UTF-8"),
    ],
)
def test_bad_text_files_are_named(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_text(path)


def test_a_missing_text_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "absent.txt")


def test_characters_outside_the_vocabulary_are_named(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("ab" * 600)
    with pytest.raises(DataError, match="outside the dataset's vocabulary"):
        load_text(path).encode("abc")
