"""MNIST from the four original IDX gzip files, downloaded once into the cache.

Every file is checked against its published MD5 before it is used, whether it was just
downloaded, found in the cache or found in a folder the user named: a truncated or altered
file would otherwise give a plausible-looking but wrong dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch

from gentune.data.base import ImageDataset, Split, fingerprint, to_unit_range
from gentune.errors import ChecksumError, DataError
from gentune.paths import gentune_home, writable_folder

log = logging.getLogger(__name__)

# File name -> MD5 of the gzip file as published.
FILES = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRRORS_ENV = "GENTUNE_MNIST_MIRRORS"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
VAL_SIZE = 10_000  # taken from the official 60k training set, as is customary
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded MNIST files live: $GENTUNE_HOME/mnist (default ~/.cache/gentune/mnist)."""
    return gentune_home() / "mnist"


def configured_mirrors() -> tuple[str, ...]:
    """The mirrors to try: $GENTUNE_MNIST_MIRRORS (comma-separated URLs) if set, else MIRRORS."""
    urls = tuple(u.strip() for u in os.environ.get(MIRRORS_ENV, "").split(",") if u.strip())
    return urls or MIRRORS


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_mnist(dest: Path, mirrors: Sequence[str] | None = None, timeout: float = 30) -> Path:
    """Download each MNIST file missing from `dest`, verify its MD5 and return `dest`.

    `mirrors` (default: $GENTUNE_MNIST_MIRRORS, else MIRRORS) are tried in order for every
    file; a mirror that fails or serves a file with the wrong MD5 is skipped with a warning.
    Files are written to a temporary name in `dest` and renamed, so an interrupted download
    never leaves a partial file under the real name. Files already present are left alone
    (they are verified when loaded).
    """
    dest = Path(dest)
    writable_folder(dest)
    mirrors = tuple(mirrors) if mirrors is not None else configured_mirrors()
    for name, expected in FILES.items():
        if not (dest / name).exists():
            _download_one(name, expected, dest, mirrors, timeout)
    return dest


def _download_one(name: str, expected: str, dest: Path, mirrors: Sequence[str], timeout: float) -> None:
    failures, bad_checksums = [], []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        log.info("downloading %s from %s", name, url)
        try:
            actual = _fetch(url, dest / name, expected, timeout)
        except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts, refused, cut off
            log.warning("could not download %s from %s (%s); trying the next mirror", name, url, e)
            failures.append(f"{url}: {e}")
            continue
        if actual == expected:
            log.info("saved %s (MD5 verified)", dest / name)
            return
        log.warning("%s from %s has MD5 %s, expected %s; trying the next mirror", name, url, actual, expected)
        bad_checksums.append(f"{actual} from {url}")
    fix = (
        f"check your network or proxy, or list working mirrors in ${MIRRORS_ENV} "
        f"(comma-separated URLs), or download the files yourself and pass --data-dir"
    )
    if bad_checksums:
        raise ChecksumError(
            f"no mirror gave a good copy of {name}: expected MD5 {expected}, got {'; '.join(bad_checksums)}",
            fix=fix,
        )
    raise DataError(
        f"could not download {name} from any mirror ({'; '.join(failures) or 'no mirrors given'})", fix=fix
    )


def _fetch(url: str, target: Path, expected: str, timeout: float) -> str:
    """Stream `url` into a temp file beside `target`; move it there only if its MD5 matches."""
    h = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "gentune"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() == expected:
            os.replace(tmp, target)
        return h.hexdigest()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzip IDX file of unsigned bytes whose header must carry `magic` (2051 or 2049)."""
    raw = gzip.decompress(Path(path).read_bytes())
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise DataError(
            f"{Path(path).name} is not an IDX file with magic number {magic}",
            value=found,
            fix="replace it with the original MNIST file",
        )
    ndim = magic & 0xFF  # the last header byte is the number of dimensions
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{Path(path).name}: header says shape {dims} but the file holds {data.size} values",
            value=data.size,
            fix="replace it with the original MNIST file",
        )
    return data.reshape(dims)


def _verify(folder: Path, *, cached: bool) -> None:
    """Every file present and matching its MD5, else an error naming the file and the fix."""
    for name, expected in FILES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"MNIST file {name} is missing from {folder}",
                value=str(path),
                fix=f"download it from {MIRRORS[0]}{name} into {folder}, "
                f"or drop --data-dir to download MNIST into the cache",
            )
        actual = md5_of(path)
        if actual != expected:
            fix = (
                f"delete {path} and rerun to download it again"
                if cached
                else f"replace it with the original from {MIRRORS[0]}{name}, "
                f"or drop --data-dir to download MNIST into the cache"
            )
            raise ChecksumError(
                f"{path} is truncated or corrupted: its MD5 is {actual}, "
                f"the published MD5 of {name} is {expected}",
                fix=fix,
            )


def load_mnist(*, data_dir: str | Path | None = None, seed: int = 0) -> ImageDataset:
    """MNIST as (N, 1, 28, 28) in [-1, 1]: train 50k and val 10k from the official training
    set (shuffled by `seed`), test the official 10k.

    With `data_dir`, reads the four files from that folder; otherwise from the cache,
    downloading the missing ones first.
    """
    if data_dir is None:
        folder = download_mnist(cache_dir())
    else:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(
                "--data-dir for mnist must be a folder holding the four MNIST .gz files",
                value=str(folder),
                fix="pass the folder that holds them, or drop --data-dir",
            )
    _verify(folder, cached=data_dir is None)

    train_x = read_idx(folder / "train-images-idx3-ubyte.gz", IMAGES_MAGIC)
    train_y = read_idx(folder / "train-labels-idx1-ubyte.gz", LABELS_MAGIC)
    test_x = read_idx(folder / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    test_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)

    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).numpy()
    val_idx, train_idx = perm[:VAL_SIZE], perm[VAL_SIZE:]
    parts = [(train_x[train_idx], train_y[train_idx]), (train_x[val_idx], train_y[val_idx]), (test_x, test_y)]
    # The uint8 pixels determine the float ones, and hash four times faster.
    fp = fingerprint(*(a for pair in parts for a in pair))
    train, val, test = (Split(to_unit_range(x, 255), torch.from_numpy(y.astype(np.int64))) for x, y in parts)
    return ImageDataset("mnist", train, val, test, num_classes=10, fingerprint=fp)
