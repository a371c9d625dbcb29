"""Character-level text: a user's own file, or tiny-shakespeare downloaded once into the cache.

The text is cut into contiguous train / validation / test stretches (90 / 5 / 5 %), never
shuffled: shuffling characters would leak the validation text into training windows. The
vocabulary is the sorted set of characters of the whole file, so every split encodes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import torch

from gentune.data.base import fingerprint
from gentune.errors import ChecksumError, DataError
from gentune.paths import gentune_home, writable_folder

log = logging.getLogger(__name__)

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
MD5 = "6fb458f1232090904fb40fe944165e91"
FILE_NAME = "tinyshakespeare.txt"
URL_ENV = "GENTUNE_TEXT_URL"  # another address for the same file (a mirror, a local server)
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
MIN_CHARS = 1000  # below this the validation split would hold a few dozen characters


@dataclass(frozen=True)
class TextDataset:
    """Train, validation and test stretches of one text, as int64 character ids."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: str  # character i of the vocabulary has id i
    fingerprint: str

    kind = "text"  # a class constant: image datasets are "image"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of `text`; a character outside the vocabulary is a DataError."""
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise DataError(
                "the text holds characters outside the dataset's vocabulary",
                value="".join(missing)[:20],
                fix="use characters of the training text",
            )
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def cache_path() -> Path:
    """Where the downloaded tiny-shakespeare lives: $GENTUNE_HOME/text/tinyshakespeare.txt."""
    return gentune_home() / "text" / FILE_NAME


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def download_text(dest: Path, url: str | None = None, md5: str = MD5, timeout: float = 30) -> Path:
    """Download `url` (default: $GENTUNE_TEXT_URL, else tiny-shakespeare's public address) to
    `dest`, check its MD5, and move it into place; a partial or altered file is never kept."""
    url = url or os.environ.get(URL_ENV) or URL
    dest = Path(dest)
    writable_folder(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        log.info("downloading %s", url)
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            f.write(r.read())
        got = md5_of(Path(tmp))
        if got != md5:
            raise ChecksumError(
                f"the file downloaded from {url} does not match its published MD5 {md5}",
                value=got,
                fix="try again later, or download it yourself and pass --data-file FILE",
            )
        os.replace(tmp, dest)
    except (OSError, HTTPException) as e:
        raise DataError(
            f"cannot download tiny-shakespeare from {url}: {e}",
            fix=f"check the connection, set {URL_ENV} to a mirror, or pass "
            "--data-file FILE with a text file of your own",
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def load_text(data_file: str | Path | None = None, *, seed: int = 0, url: str | None = None) -> TextDataset:
    """The text of `data_file` (UTF-8), or tiny-shakespeare (downloaded once, MD5-checked).

    `seed` is accepted for the common loader signature; text splits are contiguous, not shuffled.
    """
    del seed
    if data_file is None:
        path = cache_path()
        if not path.is_file() or md5_of(path) != MD5:
            download_text(path, url)
        name = "tinyshakespeare"
    else:
        path = Path(data_file)
        if not path.is_file():
            raise DataError(
                "the text file is a folder, not a file" if path.is_dir() else "the text file does not exist",
                value=str(path),
                fix="pass --data-file with the path of a UTF-8 text file",
            )
        name = path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path.name} is not UTF-8 text ({e.reason} at byte {e.start})",
            value=str(path),
            fix="convert it to UTF-8, e.g. iconv -t utf-8",
        ) from None
    if len(text) < MIN_CHARS:
        raise DataError(
            f"a text dataset needs at least {MIN_CHARS} characters",
            value=len(text),
            fix="use a longer text file",
        )
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    n_val, n_test = int(len(ids) * VAL_FRACTION), int(len(ids) * TEST_FRACTION)
    n_train = len(ids) - n_val - n_test
    train, val, test = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    fp = fingerprint(train, val, test, torch.tensor([ord(c) for c in vocab]))
    return TextDataset(name, train, val, test, vocab, fp)
