"""Issue 14, items 15-17 at the data layer: how few images, which labels, which files are refused.

Each refusal is a DataError whose message names the rule, the value and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gentune.data import load_dataset
from gentune.data.base import MAX_CLASSES
from gentune.data.files import MIN_IMAGES
from gentune.errors import DataError


class _Touch:
    """Unpickling this creates `path`: the proof that a file was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _files(path: Path):
    return load_dataset("files", data_dir=path, seed=0)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 4, 4), dtype=np.uint8)


# --- 15: how many images ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [12, 50, MIN_IMAGES - 1])
def test_too_few_images_are_refused_with_the_real_minimum(tmp_path, n):
    np.save(tmp_path / "few.npy", _images(n))
    with pytest.raises(DataError) as info:
        _files(tmp_path / "few.npy")
    err = info.value
    assert err.value == n and "at least 100 images" in str(err) and "64 feature dimensions" in str(err)
    assert "add images until there are 100 or more" in err.fix
    assert "fraction" not in str(err) and "reference=" not in str(err)  # no option the CLI lacks


@pytest.mark.parametrize(
    "n, sizes",
    [
        (100, (65, 25, 10)),  # the fewest: 65 to train on, one more than the 64 features
        (200, (130, 50, 20)),  # a quarter to validation, where 10% would leave 20
        (400, (295, 65, 40)),  # capped at 65
        (650, (520, 65, 65)),  # from here 10% is at least 65: the split as it always was
        (700, (560, 70, 70)),
    ],
)
def test_small_sets_give_validation_a_quarter_up_to_65(tmp_path, n, sizes):
    np.save(tmp_path / "x.npy", _images(n))
    ds = _files(tmp_path / "x.npy")
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes


# --- 16: labels -------------------------------------------------------------------------------


def test_a_huge_label_is_refused_before_any_classifier_is_built(tmp_path):
    y = np.zeros(100, np.int64)
    y[7] = 10**12  # once asked for a 256 TB output layer
    np.savez(tmp_path / "big.npz", x=_images(100), y=y)
    with pytest.raises(DataError) as info:
        _files(tmp_path / "big.npz")
    err = info.value
    assert f"0..K-1 with K <= {MAX_CLASSES}" in str(err) and err.value == "largest label 1000000000000"
    assert "numpy.unique(y, return_inverse=True)" in err.fix and "leave the labels out" in err.fix


def test_labels_up_to_the_cap_are_kept(tmp_path):
    y = np.arange(100) % 2
    y[0] = MAX_CLASSES - 1
    np.savez(tmp_path / "ok.npz", x=_images(100), y=y)
    assert _files(tmp_path / "ok.npz").num_classes == MAX_CLASSES
    y[0] = MAX_CLASSES
    np.savez(tmp_path / "over.npz", x=_images(100), y=y)
    with pytest.raises(DataError, match="K <= 1000"):
        _files(tmp_path / "over.npz")


# --- 17: files that are no images -------------------------------------------------------------


@pytest.mark.parametrize("where", ["x", "y"])
def test_npz_object_arrays_are_refused_and_never_unpickled(tmp_path, where):
    marker = tmp_path / "unpickled"
    arrays = {"x": _images(100), "y": np.zeros(100, np.int64)}
    arrays[where] = np.array([_Touch(marker)] * 100, dtype=object)
    np.savez(tmp_path / "objects.npz", **arrays)
    with pytest.raises(DataError) as info:
        _files(tmp_path / "objects.npz")
    err = info.value
    assert f"array {where!r} of objects.npz holds Python objects" in str(err) and "never unpickles" in str(
        err
    )
    assert err.value == "dtype object" and "numpy.savez" in err.fix
    assert not marker.exists()


def test_npy_object_array_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "objects.npy", np.array([_Touch(marker)] * 100, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="objects.npy holds Python objects") as info:
        _files(tmp_path / "objects.npy")
    assert info.value.value == "dtype object" and not marker.exists()


@pytest.mark.parametrize("name, cut", [("cut.npz", 200), ("cut.npz", 1700), ("cut.npy", 50)])
def test_a_truncated_array_file_is_a_message(tmp_path, name, cut):
    path = tmp_path / name
    (np.savez if name.endswith(".npz") else np.save)(path, _images(100))
    path.write_bytes(path.read_bytes()[:-cut])  # 200: the zip index is gone; 1700: the data
    with pytest.raises(DataError, match="is not a readable numpy file") as info:
        _files(path)
    assert "numpy.save" in info.value.fix


def test_a_missing_data_dir_is_named(tmp_path):
    with pytest.raises(DataError, match="the images path does not exist") as info:
        _files(tmp_path / "nowhere")
    assert info.value.value == str(tmp_path / "nowhere") and "--data-dir" in info.value.fix


def test_a_folder_without_png_files_says_what_it_holds(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "empty-class").mkdir()
    with pytest.raises(DataError, match="no .png files") as info:
        _files(tmp_path)
    assert info.value.value == f"{tmp_path} (holds 1 file (.jpg) and 1 folder without PNG files)"
    assert "convert other formats to PNG" in info.value.fix
    np.save(tmp_path / "images.npy", _images(100))  # the array was meant: the fix names it
    with pytest.raises(DataError) as info:
        _files(tmp_path)
    assert info.value.fix == f"pass the array file itself: --data-dir {tmp_path / 'images.npy'}"


def test_an_empty_folder_holds_nothing(tmp_path):
    with pytest.raises(DataError) as info:
        _files(tmp_path)
    assert info.value.value == f"{tmp_path} (holds nothing)"


def test_a_text_data_file_that_is_a_folder_is_named_so(tmp_path):
    with pytest.raises(DataError, match="the text file is a folder, not a file") as info:
        load_dataset("text", data_dir=tmp_path)
    assert "--data-file" in info.value.fix


def test_the_loaded_labels_are_int64_and_follow_their_images(tmp_path):
    y = np.arange(100, dtype=np.uint8) % 4
    x = np.repeat((y * 60).astype(np.uint8)[:, None, None], 4, 1).repeat(4, 2)
    np.savez(tmp_path / "l.npz", x=x, y=y)
    ds = _files(tmp_path / "l.npz")
    assert ds.num_classes == 4 and ds.train.y.dtype == torch.int64
    assert torch.allclose(ds.train.x[:, 0, 0, 0], ds.train.y * 60 / 127.5 - 1)
