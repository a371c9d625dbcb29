"""MNIST: download from mirrors served by a real HTTP server on 127.0.0.1, checksums, loading.

The shared folder ../shared/data/mnist (relative to the repo root) holds the four original
files; corrupted copies are made in tmp_path, never in the repo.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import socket
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from gentune.data import load_dataset
from gentune.data.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, download_mnist, read_idx
from gentune.errors import ChecksumError, DataError

MNIST_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
SMALL = "t10k-labels-idx1-ubyte.gz"  # 4.5 kB: the file the corruption tests tamper with
OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

pytestmark = pytest.mark.skipif(
    not all((MNIST_DIR / name).is_file() for name in FILES),
    reason=f"the shared MNIST files are not in {MNIST_DIR}",
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@contextmanager
def serve(folder: Path):
    """A real HTTP server on 127.0.0.1 serving `folder`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def good_mirror():
    with serve(MNIST_DIR) as url:
        yield url


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there now: connection refused


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def folder_with_bad_small_file(folder: Path, how: str) -> tuple[Path, str]:
    """`folder` with links to the good large files and a damaged copy of SMALL; its MD5."""
    folder.mkdir(parents=True)
    for name in FILES:
        if name != SMALL:
            (folder / name).symlink_to(MNIST_DIR / name)
    data = bytearray((MNIST_DIR / SMALL).read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # same length, one byte changed
        data[100] ^= 0xFF
    (folder / SMALL).write_bytes(bytes(data))
    return folder, md5(folder / SMALL)


# --- download ---------------------------------------------------------------------------------


def test_download_skips_failing_mirrors_then_loads(
    tmp_path, monkeypatch, good_mirror, closed_port_url, caplog
):
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path / "home"))
    missing = good_mirror + "no/such/folder/"  # the same server answers 404 there
    monkeypatch.setenv("GENTUNE_MNIST_MIRRORS", f"{closed_port_url}, {missing},{good_mirror}")
    with caplog.at_level(logging.WARNING, logger="gentune.data.mnist"):
        ds = load_dataset("mnist", seed=0)

    cache = tmp_path / "home" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no temp files left
    assert all(md5(cache / name) == expected for name, expected in FILES.items())
    warned = caplog.text
    assert closed_port_url in warned and "404" in warned and good_mirror + "t10k" not in warned
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)

    caplog.clear()  # a second load uses the cache and asks no mirror
    monkeypatch.setenv("GENTUNE_MNIST_MIRRORS", closed_port_url)
    assert load_dataset("mnist", seed=0).fingerprint == ds.fingerprint


@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_download_bad_checksum_from_every_mirror(tmp_path, how):
    bad_folder, bad_md5 = folder_with_bad_small_file(tmp_path / "bad", how)
    dest = tmp_path / "dest"
    with serve(bad_folder) as bad:
        with pytest.raises(ChecksumError) as info:
            download_mnist(dest, mirrors=[bad])
    msg = str(info.value)
    assert SMALL in msg and FILES[SMALL] in msg and bad_md5 in msg and "Fix:" in msg
    assert not (dest / SMALL).exists()  # the bad bytes were never kept
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


def test_download_uses_good_mirror_after_bad_one(tmp_path, good_mirror, caplog):
    bad_folder, bad_md5 = folder_with_bad_small_file(tmp_path / "bad", "altered")
    dest = tmp_path / "dest"
    with serve(bad_folder) as bad, caplog.at_level(logging.WARNING, logger="gentune.data.mnist"):
        download_mnist(dest, mirrors=[bad, good_mirror])
    assert all(md5(dest / name) == expected for name, expected in FILES.items())
    assert f"has MD5 {bad_md5}" in caplog.text


def test_download_moves_on_after_a_timeout(tmp_path, good_mirror, caplog):
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in FILES:  # only SMALL is missing, so only it is fetched
        if name != SMALL:
            (dest / name).symlink_to(MNIST_DIR / name)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        hanging = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with caplog.at_level(logging.WARNING, logger="gentune.data.mnist"):
            download_mnist(dest, mirrors=[hanging, good_mirror], timeout=0.5)
    assert md5(dest / SMALL) == FILES[SMALL]
    assert hanging in caplog.text and "timed out" in caplog.text


def test_download_with_no_working_mirror_says_how_to_fix(tmp_path, closed_port_url):
    with pytest.raises(DataError) as info:
        download_mnist(tmp_path, mirrors=[closed_port_url])
    assert not isinstance(info.value, ChecksumError)
    assert "could not download" in str(info.value) and "GENTUNE_MNIST_MIRRORS" in str(info.value)


# --- loading ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", data_dir=MNIST_DIR, seed=0)


def test_load_from_data_dir(mnist):
    assert mnist.name == "mnist" and mnist.num_classes == 10 and mnist.shape == (1, 28, 28)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (50_000, 10_000, 10_000)
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.min() == -1 and split.x.max() == 1
    assert mnist.test.y[:5].tolist() == [7, 2, 1, 0, 4]  # the official test set, in order
    train_and_val = torch.cat([mnist.train.y, mnist.val.y])
    assert torch.bincount(train_and_val).tolist() == OFFICIAL_TRAIN_COUNTS


def test_seed_changes_train_val_but_not_test(mnist):
    again = load_dataset("mnist", data_dir=MNIST_DIR, seed=0)
    assert again.fingerprint == mnist.fingerprint and torch.equal(again.val.x, mnist.val.x)
    other = load_dataset("mnist", data_dir=MNIST_DIR, seed=1)
    assert other.fingerprint != mnist.fingerprint
    assert not torch.equal(other.val.y, mnist.val.y)
    assert torch.equal(other.test.x, mnist.test.x)


@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_damaged_file_in_data_dir_is_refused(tmp_path, how):
    folder, bad_md5 = folder_with_bad_small_file(tmp_path / "mnist", how)
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=folder)
    msg = str(info.value)
    assert SMALL in msg and FILES[SMALL] in msg and bad_md5 in msg and "Fix: replace it" in msg


def test_damaged_file_in_cache_is_refused(tmp_path, monkeypatch, closed_port_url):
    folder_with_bad_small_file(tmp_path / "home" / "mnist", "truncated")
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENTUNE_MNIST_MIRRORS", closed_port_url)
    with pytest.raises(ChecksumError, match="Fix: delete .* and rerun"):
        load_dataset("mnist")


def test_missing_file_in_data_dir(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in FILES:
        if name != SMALL:
            os.symlink(MNIST_DIR / name, folder / name)
    with pytest.raises(DataError, match=f"{SMALL} is missing.*drop --data-dir"):
        load_dataset("mnist", data_dir=folder)


# --- IDX parsing ------------------------------------------------------------------------------


def _idx(path: Path, magic: int, dims: tuple[int, ...], n_values: int) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + bytes(range(n_values))))
    return path


def test_read_idx_parses_a_good_header(tmp_path):
    a = read_idx(_idx(tmp_path / "ok.gz", IMAGES_MAGIC, (2, 3, 4), 24), IMAGES_MAGIC)
    assert a.shape == (2, 3, 4) and a.dtype == np.uint8 and a[1, 2, 3] == 23


def test_read_idx_rejects_bad_headers(tmp_path):
    labels = _idx(tmp_path / "labels.gz", LABELS_MAGIC, (5,), 5)
    with pytest.raises(DataError, match="magic number 2051"):
        read_idx(labels, IMAGES_MAGIC)
    short = _idx(tmp_path / "short.gz", LABELS_MAGIC, (6,), 5)
    with pytest.raises(DataError, match=r"header says shape \(6,\)"):
        read_idx(short, LABELS_MAGIC)
