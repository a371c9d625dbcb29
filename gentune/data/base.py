"""The in-memory form every data source produces.

Images are held as one float32 tensor per split, shape (N, C, H, W), scaled to [-1, 1] as in
the tutorial, so that a training loop indexes a tensor and never touches a Python object per
sample.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """One split: images in [-1, 1] of shape (N, C, H, W); labels (N,) int64, or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class ImageDataset:
    """Train, validation and test splits of one image dataset, fixed by a seed.

    `fingerprint` is a hash of the pixels and labels of all splits; caches (feature
    extractors, reference statistics) are keyed by it.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int | None  # None for unlabelled data
    fingerprint: str

    def __post_init__(self) -> None:
        # Code narrows on num_classes where it means "has labels"; the two must agree.
        if (self.num_classes is None) != (self.train.y is None):
            raise ValueError(f"{self.name}: num_classes must be given exactly when the data has labels")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.x.shape[1:]
        return c, h, w

    @property
    def labelled(self) -> bool:
        return self.train.y is not None

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


# Labels name classes 0..K-1, and the classifier extractor gets one output per class: a stray
# label of 1e12 would otherwise ask for a terabyte-sized layer. ImageNet has 1000 classes.
MAX_CLASSES = 1000


def fingerprint(*arrays: np.ndarray | torch.Tensor | None) -> str:
    """A short, stable hash of the given arrays (their bytes, shapes and dtypes)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def to_unit_range(images: np.ndarray, max_value: float) -> torch.Tensor:
    """uint8-like images (N, H, W) or (N, C, H, W) with values in [0, max_value] -> float32 [-1, 1]."""
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        a = a[:, None]
    return torch.from_numpy(a / (max_value / 2.0) - 1.0).contiguous()


def make_splits(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    num_classes: int | None,
    min_val: int = 0,
) -> ImageDataset:
    """Shuffle (N, ...) data with `seed` and cut it into train/val/test; the validation split
    gets at least `min_val` images (a small dataset's share of 10% can be too few to score)."""
    n = int(x.shape[0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = int(round(n * test_fraction)), max(int(round(n * val_fraction)), min_val)
    idx_test, idx_val, idx_train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]

    def take(idx):
        return Split(x[idx].contiguous(), None if y is None else y[idx].contiguous())

    train, val, test = take(idx_train), take(idx_val), take(idx_test)
    fp = fingerprint(train.x, train.y, val.x, val.y, test.x, test.y)
    return ImageDataset(name, train, val, test, num_classes, fp)
