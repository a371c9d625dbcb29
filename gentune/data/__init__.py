"""Image datasets, each loaded into train/val/test splits in [-1, 1] of shape (N, C, H, W).

Sources:

- ``digits``: the 8x8 handwritten digits shipped inside scikit-learn (no download).
- ``mnist``: the original MNIST IDX files, downloaded into the cache (or read from a folder).
- ``files``: a user's own images: a ``.npy`` / ``.npz`` array or a folder of PNG files.
- ``text``: characters of a user's text file, or tiny-shakespeare (downloaded); a TextDataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gentune.data.base import ImageDataset, Split
from gentune.errors import unknown_choice

if TYPE_CHECKING:  # text.py is imported only when a text dataset is loaded
    from gentune.data.text import TextDataset

DATASETS = ("digits", "mnist", "files", "text")
TEXT_DATASETS = ("text",)

__all__ = ["DATASETS", "ImageDataset", "Split", "dataset_kind", "load_dataset"]


def dataset_kind(name: str) -> str:
    """ "text" or "image": what a dataset `name` (as stored in a study, e.g. "files:x") holds."""
    return "text" if name.partition(":")[0] in TEXT_DATASETS else "image"


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0
) -> ImageDataset | TextDataset:
    """Load dataset `name` (one of DATASETS), its train/val split shuffled by `seed`.

    `data_dir` is a local folder of MNIST files for ``mnist`` (instead of the download cache),
    and the array file or PNG folder for ``files``, the text file for ``text`` (default:
    tiny-shakespeare); ``digits`` takes none.
    """
    # Each loader is imported on demand so that, e.g., `digits` never imports Pillow.
    if name == "digits":
        from gentune.data.digits import load_digits

        return load_digits(data_dir=data_dir, seed=seed)
    if name == "mnist":
        from gentune.data.mnist import load_mnist

        return load_mnist(data_dir=data_dir, seed=seed)
    if name == "files":
        from gentune.data.files import load_files

        return load_files(data_dir, seed=seed)
    if name == "text":
        from gentune.data.text import load_text

        return load_text(data_dir, seed=seed)
    raise unknown_choice("dataset", name, DATASETS)
