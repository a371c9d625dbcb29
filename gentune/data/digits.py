"""The 8x8 handwritten digits bundled with scikit-learn: a tiny default that needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gentune.data.base import ImageDataset, make_splits, to_unit_range
from gentune.errors import DataError

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


def load_digits(*, data_dir: str | Path | None = None, seed: int = 0) -> ImageDataset:
    """1797 images (1, 8, 8) with values 0..16 scaled to [-1, 1]; 10 classes; 60/20/20 split."""
    if data_dir is not None:
        raise DataError(
            "the digits dataset is built into scikit-learn and reads no files",
            value=str(data_dir),
            fix="drop --data-dir, or use --dataset files / mnist to read a folder",
        )
    from sklearn.datasets import load_digits as sklearn_digits  # slow import; only when used

    bunch = sklearn_digits()
    x = to_unit_range(bunch.images, 16)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return make_splits(
        "digits", x, y, seed=seed, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION, num_classes=10
    )
