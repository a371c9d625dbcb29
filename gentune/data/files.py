"""A user's own images: a .npy array, a .npz archive or a folder of PNG files.

Shapes: (N, H, W) and (N, H, W, 1) become one channel, (N, H, W, 3) becomes three; (N, 1, H, W)
and (N, 3, H, W) are taken as they are. When both readings fit, the smaller of axes 1 and 3
is the channel axis, and a tie, e.g. (N, 3, 32, 3), goes to channels-first.

PNG folders are read as one channel when every image is grayscale, else as RGB (gray images
repeated to three channels, an alpha channel dropped); PNGs must have 8 bits per channel.

Values: integer arrays must lie in [0, 255]; float arrays in [0, 1] are scaled to [-1, 1]; float
arrays with negative values must already lie in [-1, 1] and are kept.

Labels (optional) are integers 0..K-1 with K <= MAX_CLASSES, one per image. Arrays of Python
objects are refused, never unpickled.

Splits: 80/10/10, except that the validation split, the reference every sample is scored
against, gets a quarter of a small set, up to SMALL_SET_VAL images: 10% of 200 images would
leave 20 to score against, and the metric wants more than its 64 feature dimensions.

At least MIN_IMAGES = 100 images: FID fits 64-d Gaussians to N generated and N real images, its
floor takes the N real ones from the train split, and at N <= 64 (a train split of 64 or fewer)
FID was measured to rank pure noise and blur as better than real images. 100 images leave 65 to
train on, 25 for validation and 10 for the test.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from gentune.data.base import MAX_CLASSES, ImageDataset, make_splits, to_unit_range
from gentune.errors import DataError

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
SMALL_SET_VAL = 65  # one more than the metric's 64 feature dimensions: full-rank FID from 650 images
MIN_IMAGES = 100  # see the module docstring: a train split of 65, one more than FID's 64 dimensions
IMAGE_KEYS = ("x", "images")
LABEL_KEYS = ("y", "labels")
SHAPES = "(N, H, W), (N, 1, H, W), (N, H, W, 1), (N, 3, H, W) or (N, H, W, 3)"
_GRAY_MODES = {"1", "L", "LA"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # >8 bits per pixel


def load_files(path: str | Path | None, *, seed: int = 0) -> ImageDataset:
    """Images from a .npy / .npz file or a PNG folder, split with `seed` (module docstring)."""
    if path is None:
        raise DataError(
            "the files dataset needs the path of your images",
            fix="pass --data-dir with a .npy or .npz file or a folder of PNG files",
        )
    path = Path(path).expanduser()
    if path.is_dir():
        images, labels = _read_png_folder(path)
    elif path.suffix == ".npy" and path.is_file():
        images, labels = _load_npy(path), None
    elif path.suffix == ".npz" and path.is_file():
        images, labels = _read_npz(path)
    else:
        what = "does not exist" if not path.exists() else "is not a .npy, .npz or folder"
        raise DataError(
            f"the images path {what}",
            value=str(path),
            fix="pass --data-dir with a .npy or .npz file or a folder of PNG files",
        )

    x = _to_tensor(images)
    n = int(x.shape[0])
    if n < MIN_IMAGES:
        raise DataError(
            f"the files dataset needs at least {MIN_IMAGES} images, so that 65 go to the train "
            "split: the sample metric, FID, needs more real train images than its 64 feature "
            "dimensions; with fewer it ranked pure noise above real images",
            value=n,
            fix=f"add images until there are {MIN_IMAGES} or more (a few hundred give steadier scores)",
        )
    y, num_classes = _check_labels(labels, n)
    return make_splits(
        f"files:{path.name}",
        x,
        y,
        seed=seed,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
        num_classes=num_classes,
        min_val=min(SMALL_SET_VAL, n // 4),
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if _holds_objects(e):
            raise _objects_refused(path.name, None) from None
        raise _unreadable(path, e, "save your images with numpy.save") from None
    except (OSError, EOFError) as e:
        raise _unreadable(path, e, "save your images with numpy.save") from None


def _holds_objects(error: ValueError) -> bool:
    # numpy's one signal that an array would need unpickling; its message names allow_pickle.
    return "allow_pickle" in str(error)


def _objects_refused(file: str, key: str | None) -> DataError:
    where = file if key is None else f"array {key!r} of {file}"
    return DataError(
        f"{where} holds Python objects, which gentune never unpickles (a pickle can run code); "
        "images and labels must be numeric arrays",
        value="dtype object",
        fix="save numeric arrays, e.g. numpy.savez(path, x=np.stack(images).astype('float32'), "
        "y=np.asarray(labels, dtype='int64'))",
    )


def _unreadable(path: Path, error: Exception, fix: str) -> DataError:
    return DataError(f"{path} is not a readable numpy file", value=str(error), fix=fix)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, e, "save your images with numpy.savez(path, x=images, y=labels)") from None
    with archive:
        keys = list(archive.files)
        image_key = next((k for k in IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if image_key is None:
            raise DataError(
                f"{path.name} must hold its images under 'x' or 'images', or hold only one array",
                value=keys,
                fix="save with numpy.savez(path, x=images, y=labels)",
            )
        label_key = next((k for k in LABEL_KEYS if k in keys), None)
        return _member(archive, image_key, path), None if label_key is None else _member(
            archive, label_key, path
        )


def _member(archive, key: str, path: Path) -> np.ndarray:
    """archive[key], read only now (npz members load lazily), with numpy's errors as messages."""
    try:
        return archive[key]
    except ValueError as e:
        if _holds_objects(e):
            raise _objects_refused(path.name, key) from None
        raise _unreadable(path, e, "save your images with numpy.savez(path, x=images, y=labels)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # a damaged member is read only now
        raise _unreadable(path, e, "save your images with numpy.savez(path, x=images, y=labels)") from None


def _png_groups(folder: Path) -> list[tuple[str | None, list[Path]]]:
    """[(class name or None, sorted PNG paths)], from top-level PNGs or one level of subfolders."""
    top = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    subs: list[tuple[str | None, list[Path]]] = [
        (d.name, sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".png"))
        for d in sorted(folder.iterdir())
        if d.is_dir()
    ]
    subs = [(name, paths) for name, paths in subs if paths]
    if top and subs:
        raise DataError(
            "a PNG folder holds either images or class subfolders of images, not both",
            value=str(top[0]),
            fix="move the top-level PNG files into a class subfolder",
        )
    if not top and not subs:
        raise _no_images(folder)
    return [(None, top)] if top else subs


def _no_images(folder: Path) -> DataError:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    folders = [p for p in folder.iterdir() if p.is_dir()]
    arrays = [p for p in files if p.suffix in (".npy", ".npz")]
    kinds = ", ".join(sorted({p.suffix.lower() or "no extension" for p in files})[:6])
    held = [f"{len(files)} file{'s' * (len(files) != 1)} ({kinds})"] if files else []
    held += [f"{len(folders)} folder{'s' * (len(folders) != 1)} without PNG files"] if folders else []
    return DataError(
        "found no .png files in the folder or its subfolders (other image formats are not read)",
        value=f"{folder} (holds {' and '.join(held) or 'nothing'})",
        fix=f"pass the array file itself: --data-dir {arrays[0]}"
        if arrays
        else "pass a folder of PNG files (convert other formats to PNG), or a .npy / .npz array file",
    )


def _read_png_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image, UnidentifiedImageError  # only this source needs Pillow

    groups = _png_groups(folder)
    paths = [p for _, ps in groups for p in ps]
    arrays, size = [], None
    for p in paths:
        try:
            with Image.open(p) as im:
                size = size or im.size
                if im.size != size:
                    raise DataError(
                        f"all PNG images must have the size of {paths[0].name} "
                        f"({size[0]}x{size[1]}); {p} differs",
                        value=f"{im.size[0]}x{im.size[1]}",
                        fix="resize your images to one size",
                    )
                if im.mode in _WIDE_MODES:  # converting would clip them to 8 bits unseen
                    raise DataError(
                        f"PNG images must have 8 bits per channel; {p} does not",
                        value=im.mode,
                        fix="save your images as 8-bit PNG files, or as a float .npy array scaled to [0, 1]",
                    )
                arrays.append(np.asarray(im.convert("L" if im.mode in _GRAY_MODES else "RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"{p} is not a readable PNG image", value=str(e), fix="remove or re-save that file"
            ) from None
    if any(a.ndim == 3 for a in arrays):  # mixed gray and colour: all become RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    labels = None
    if groups[0][0] is not None:  # class subfolders, in sorted order, give the labels
        labels = np.concatenate([np.full(len(ps), i, np.int64) for i, (_, ps) in enumerate(groups)])
    return np.stack(arrays), labels


def _channels_first(a: np.ndarray) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) with C in {1, 3} -> (N, C, H, W)."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        first, last = a.shape[1] in (1, 3), a.shape[3] in (1, 3)
        if last and (not first or a.shape[3] < a.shape[1]):  # e.g. (N, 3, 3, 1) is NHWC
            return a.transpose(0, 3, 1, 2)
        if first:
            return a
    raise DataError(
        f"images must have shape {SHAPES}",
        value=f"shape {a.shape}",
        fix="reshape your array to one of those shapes",
    )


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) float32 in [-1, 1] by the rules in the module docstring, else an error."""
    a = _channels_first(images)
    if a.size == 0:
        raise DataError("the image array is empty", value=f"shape {images.shape}", fix="add images")
    integer, floating = np.issubdtype(a.dtype, np.integer), np.issubdtype(a.dtype, np.floating)
    found = f"dtype {images.dtype}, shape {images.shape}"
    if integer or floating:
        lo, hi = a.min().item(), a.max().item()
        if integer and 0 <= lo and hi <= 255:
            return to_unit_range(a, 255)
        if floating and 0 <= lo and hi <= 1:
            return torch.from_numpy(a.astype(np.float32) * 2 - 1).contiguous()
        if floating and -1 <= lo < 0 and hi <= 1:
            return torch.from_numpy(a.astype(np.float32)).contiguous()
        found += f", min {lo}, max {hi}"
    raise DataError(
        "image values must be integers in [0, 255], floats in [0, 1], or floats in [-1, 1]",
        value=found,
        fix="rescale your images to one of those ranges (NaN is not allowed)",
    )


def _check_labels(labels: np.ndarray | None, n: int) -> tuple[torch.Tensor | None, int | None]:
    """(labels as int64, K) for labels 0..K-1, one per image, K <= MAX_CLASSES; else an error."""
    if labels is None:
        return None, None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(
            f"labels must be {n} non-negative integers, one per image",
            value=f"dtype {labels.dtype}, shape {labels.shape}",
            fix="save labels as an integer array of shape (N,), or leave them out",
        )
    top = int(labels.max())
    if top >= MAX_CLASSES:
        raise DataError(
            f"labels must number classes 0..K-1 with K <= {MAX_CLASSES}, since the feature "
            "extractor learns one output per class",
            value=f"largest label {top}",
            fix="renumber them 0..K-1, e.g. y = numpy.unique(y, return_inverse=True)[1] (a PNG "
            f"folder: at most {MAX_CLASSES} class subfolders), or leave the labels out",
        )
    return torch.from_numpy(labels.astype(np.int64)), top + 1
