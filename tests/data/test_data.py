"""Dataset-name dispatch, the built-in digits and the user's own files.

MNIST is tested in test_data_mnist.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gentune.data import DATASETS, load_dataset
from gentune.errors import DataError, GentuneError

# --- dispatch ---------------------------------------------------------------------------------


def test_dataset_names():
    assert DATASETS == ("digits", "mnist", "files", "text")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(GentuneError) as info:
        load_dataset("cifar")
    msg = str(info.value)
    assert "'cifar'" in msg and all(name in msg for name in DATASETS)


# --- digits -----------------------------------------------------------------------------------


def test_digits_shapes_ranges_and_splits(digits):
    assert digits.name == "digits" and digits.num_classes == 10 and digits.labelled
    assert digits.shape == (1, 8, 8)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1079, 359, 359)
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and len(split.y) == len(split.x)
        assert split.x.min() >= -1 and split.x.max() <= 1
    all_x = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    assert all_x.min() == -1 and all_x.max() == 1  # 0 and 16 both occur
    assert set(torch.cat([digits.train.y, digits.test.y]).tolist()) == set(range(10))


def test_digits_same_seed_same_splits_other_seed_different(digits):
    again = load_dataset("digits", seed=0)
    assert again.fingerprint == digits.fingerprint
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.val.y, digits.val.y)
    other = load_dataset("digits", seed=1)
    assert other.fingerprint != digits.fingerprint
    assert not torch.equal(other.train.x, digits.train.x)


def test_digits_rejects_a_data_dir(tmp_path):
    with pytest.raises(DataError, match="drop --data-dir"):
        load_dataset("digits", data_dir=tmp_path)


# --- files: arrays ----------------------------------------------------------------------------


def _load(tmp_path, name, array, **npz):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    else:
        np.savez(path, **npz)
    return load_dataset("files", data_dir=path, seed=0)


def test_npy_uint8_grayscale(tmp_path):
    x = np.zeros((100, 5, 7), np.uint8)
    x[:, 0, 0] = 255
    ds = _load(tmp_path, "imgs.npy", x)
    assert ds.name == "files:imgs.npy" and not ds.labelled and ds.num_classes is None
    assert ds.shape == (1, 5, 7)
    # 100 images, the fewest: 10% would leave 10 to score against, a small set's val gets a quarter
    assert (len(ds.train), len(ds.val), len(ds.test)) == (65, 25, 10)
    assert torch.all(ds.train.x[:, 0, 0, 0] == 1) and torch.all(ds.train.x[:, 0, 1:, :] == -1)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npy_rgb_either_channel_order(tmp_path, layout):
    x = np.zeros((100, 4, 6, 3), np.uint8)
    x[..., 1], x[..., 2] = 51, 255  # one constant per channel shows where channels ended up
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    ds = _load(tmp_path, "rgb.npy", x)
    assert ds.shape == (3, 4, 6)
    expected = torch.tensor([-1.0, 51 / 127.5 - 1, 1.0])
    assert torch.allclose(ds.train.x.mean(dim=(0, 2, 3)), expected)


def test_npy_nhw1_becomes_one_channel(tmp_path):
    ds = _load(tmp_path, "one.npy", np.full((100, 3, 3, 1), 255, np.uint8))
    assert ds.shape == (1, 3, 3) and torch.all(ds.test.x == 1)


def test_float_ranges(tmp_path):
    unit = np.linspace(0, 1, 100 * 4, dtype=np.float32).reshape(100, 2, 2)
    ds = _load(tmp_path, "unit.npy", unit)
    all_x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert all_x.min() == -1 and all_x.max() == 1
    signed = unit * 2 - 1  # has negatives: taken as already in [-1, 1]
    signed[0, 0, 0] = -0.5
    ds = _load(tmp_path, "signed.npy", signed)
    all_x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert sorted(all_x.flatten().tolist()) == sorted(signed.flatten().tolist())


def test_npz_with_labels_keeps_them_with_their_images(tmp_path):
    y = np.arange(120) % 3
    x = np.repeat((y * 100).astype(np.uint8)[:, None, None], 4, 1).repeat(4, 2)
    ds = _load(tmp_path, "set.npz", None, images=x, labels=y)
    assert ds.labelled and ds.num_classes == 3 and ds.name == "files:set.npz"
    for split in (ds.train, ds.val, ds.test):
        assert split.y.dtype == torch.int64
        assert torch.allclose(split.x[:, 0, 0, 0], split.y * 100 / 127.5 - 1)


def test_npz_single_unnamed_array(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, np.zeros((100, 2, 2), np.uint8))
    ds = load_dataset("files", data_dir=path)
    assert ds.shape == (1, 2, 2) and not ds.labelled


def test_files_same_seed_same_fingerprint(tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (100, 3, 3), dtype=np.uint8))
    a, b = (load_dataset("files", data_dir=path, seed=s) for s in (5, 5))
    assert a.fingerprint == b.fingerprint
    assert load_dataset("files", data_dir=path, seed=6).fingerprint != a.fingerprint


@pytest.mark.parametrize(
    "array, words",
    [
        (np.full((10, 2, 2), -5, np.int16), ["[0, 255]", "min -5"]),
        (np.full((10, 2, 2), 300, np.int32), ["max 300"]),
        (np.full((10, 2, 2), 3.0, np.float32), ["[0, 1]", "max 3.0"]),
        (np.full((10, 2, 2), -2.0, np.float64), ["[-1, 1]", "min -2.0"]),
        (np.full((10, 2, 2), np.nan, np.float32), ["nan"]),
        (np.zeros((10, 2, 2), bool), ["dtype bool"]),
    ],
)
def test_bad_values_name_the_rule_and_value(tmp_path, array, words):
    with pytest.raises(DataError) as info:
        _load(tmp_path, "bad.npy", array)
    msg = str(info.value)
    assert all(w in msg for w in words) and "Fix:" in msg


@pytest.mark.parametrize("shape", [(10, 4, 4, 5), (10, 2, 4, 4, 4), (10, 16)])
def test_bad_shapes(tmp_path, shape):
    with pytest.raises(DataError, match=r"must have shape .*shape \(" + str(shape[0])):
        _load(tmp_path, "bad.npy", np.zeros(shape, np.uint8))


def test_too_few_images(tmp_path):
    with pytest.raises(DataError, match="at least 100 images") as info:
        _load(tmp_path, "few.npy", np.zeros((99, 2, 2), np.uint8))
    assert (
        info.value.value == 99
        and "64 feature dimensions" in str(info.value)
        and "add images" in info.value.fix
    )


def test_bad_labels(tmp_path):
    with pytest.raises(DataError, match="labels must be 100 non-negative integers"):
        _load(tmp_path, "l.npz", None, x=np.zeros((100, 2, 2), np.uint8), y=np.zeros(99, np.int64))


@pytest.mark.parametrize("name", [None, "missing.npy", "notes.txt"])
def test_bad_paths(tmp_path, name):
    if name == "notes.txt":
        (tmp_path / name).write_text("hello")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("files", data_dir=None if name is None else tmp_path / name)


# --- files: PNG folders -----------------------------------------------------------------------


def _png(path, value, size=(6, 5), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_png_class_subfolders_give_sorted_labels(tmp_path):
    for i in range(50):  # created out of order: labels follow sorted folder names, not creation
        _png(tmp_path / "pngs" / "zebra" / f"{i}.png", 255)
        _png(tmp_path / "pngs" / "ant" / f"{i}.png", 0)
    ds = load_dataset("files", data_dir=tmp_path / "pngs")
    assert ds.name == "files:pngs" and ds.num_classes == 2 and ds.shape == (1, 5, 6)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (65, 25, 10)
    for split in (ds.train, ds.val, ds.test):  # ant = 0 = black, zebra = 1 = white
        assert torch.equal(split.x[:, 0, 0, 0], split.y.float() * 2 - 1)


def test_png_flat_folder_rgb(tmp_path):
    for i in range(100):
        _png(tmp_path / f"{i}.png", (255, 0, 0) if i % 2 else (0, 0, 255), mode="RGB")
    ds = load_dataset("files", data_dir=tmp_path)
    assert ds.shape == (3, 5, 6) and not ds.labelled


def test_png_size_mismatch_names_the_file(tmp_path):
    for i in range(10):
        _png(tmp_path / f"{i}.png", 0)
    _png(tmp_path / "7.png", 0, size=(8, 8))
    with pytest.raises(DataError, match=r"7\.png differs.*8x8"):
        load_dataset("files", data_dir=tmp_path)


def test_png_sixteen_bit_is_refused(tmp_path):
    for i in range(10):
        Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="8 bits per channel"):
        load_dataset("files", data_dir=tmp_path)


def test_png_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no .png files"):
        load_dataset("files", data_dir=tmp_path)
