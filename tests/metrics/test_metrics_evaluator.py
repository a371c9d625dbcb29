"""Feature extractor and Evaluator on the 8x8 sklearn digits: known-good and known-bad image sets.

The extractors (a classifier and an autoencoder) are trained once per module into a temporary
cache, a few seconds each.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from gentune.data.base import ImageDataset, make_splits, to_unit_range
from gentune.errors import GentuneError
from gentune.metrics import FEATURE_DIM, Evaluator, extractor_path, get_extractor
from gentune.metrics.features import EXTRACTOR_VERSION, _load

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE_LEVELS = [0.1, 0.2, 0.4, 0.8]
KEYS = {"fid", "kid", "kid_std", "precision", "recall", "label_entropy", "classes_covered", "n"}


def digits(labelled: bool = True, seed: int = 0) -> ImageDataset:
    d = load_digits()
    x = to_unit_range(d.images, 16)
    y = torch.from_numpy(d.target).long() if labelled else None
    return make_splits(
        "digits", x, y, seed=seed, val_fraction=0.2, test_fraction=0.2, num_classes=10 if labelled else None
    )


def noised(images: torch.Tensor, sd: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + sd * noise).clamp(-1, 1)


def blurred(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("extractors")


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    return digits()


@pytest.fixture(scope="module")
def evaluator(data, cache) -> Evaluator:
    return Evaluator(data, cache_dir=cache).prepare()


@pytest.fixture(scope="module")
def clean(data) -> torch.Tensor:
    return data.train.x[:1000]


# -- extractor -----------------------------------------------------------------------------------


def test_extractor_is_accurate_cached_and_leaves_the_global_rng_alone(data, cache):
    rng_before = torch.get_rng_state()
    model, info = get_extractor(data, cache_dir=cache)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert info["kind"] == "classifier" and info["feature_dim"] == FEATURE_DIM == 64
    assert info["test_accuracy"] >= 0.95
    path = extractor_path(data, cache)
    assert Path(info["path"]) == path and path.exists()
    assert path.name == f"digits-{data.fingerprint}-v{EXTRACTOR_VERSION}.pt"

    mtime = path.stat().st_mtime_ns
    again, info2 = get_extractor(data, cache_dir=cache)
    assert info2["loaded_from_cache"] and info2["test_accuracy"] == info["test_accuracy"]
    assert path.stat().st_mtime_ns == mtime  # not retrained, not rewritten
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k

    x = data.test.x[:50]
    with torch.no_grad():
        assert again.features(x).shape == (50, 64) and again.logits(x).shape == (50, 10)


def test_cache_key_follows_the_data(data, cache):
    other = digits(seed=1)  # same images, other split: another fingerprint, another file
    assert other.fingerprint != data.fingerprint
    assert extractor_path(other, cache) != extractor_path(data, cache)
    assert extractor_path(data, cache).parent == cache


def test_unreadable_cache_file_is_ignored(data, tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a torch file")
    assert _load(path, data, torch.device("cpu")) is None


# -- evaluator: sizes, caching, errors --------------------------------------------------------------


def test_default_n_floor_info_and_reference_cache(evaluator, data, cache):
    info = evaluator.info
    assert info["n"] == 1000 and info["n_ref"] == len(data.val) and info["reference"] == "val"
    assert info["kind"] == "classifier" and info["test_accuracy"] >= 0.95 and info["trust"]
    assert Path(info["reference_cache_path"]).exists()
    floor = evaluator.floor
    assert set(floor) == KEYS and floor["n"] == 1000
    assert floor["label_entropy"] > 2.2 and floor["classes_covered"] == 10
    assert floor["precision"] > 0.8 and floor["recall"] > 0.7
    json.dumps([info, floor])  # plain, serialisable values

    again = Evaluator(data, cache_dir=cache).prepare()  # loads extractor and reference features
    assert again.prepare() is again
    assert torch.equal(again._ref_features, evaluator._ref_features)
    assert again.floor == floor


def test_evaluate_returns_plain_values(evaluator, clean):
    result = evaluator.evaluate(torch.cat([clean, clean[:5]]))  # more than n: the first n count
    assert set(result) == KEYS and result["n"] == 1000
    for key, value in result.items():
        assert type(value) in (float, int), (key, type(value))
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize(
    "bad, rule",
    [
        (torch.zeros(999, 1, 8, 8), "at least n = 1000"),
        (torch.zeros(1000, 1, 28, 28), r"\(C, H, W\)"),
        (torch.full((1000, 1, 8, 8), float("nan")), "NaN"),
    ],
)
def test_evaluate_rejects_bad_images(evaluator, bad, rule):
    with pytest.raises(GentuneError, match=rule):
        evaluator.evaluate(bad)


def test_n_must_exceed_the_feature_dimension(data, cache):
    with pytest.raises(GentuneError, match="feature dimension") as err:
        Evaluator(data, n=64, cache_dir=cache).prepare()
    assert err.value.value == 64 and err.value.fix
    with pytest.raises(GentuneError, match="reference split"):
        Evaluator(data, reference="everything", cache_dir=cache).prepare()


def test_floor_uses_the_whole_train_split_when_it_is_smaller_than_n(data, cache):
    ev = Evaluator(data, n=1200, cache_dir=cache).prepare()
    assert ev.info["n"] == 1200 and ev.info["floor_n"] == ev.floor["n"] == len(data.train) < 1200
    assert "floor_note" in ev.info


# -- evaluator: rankings -----------------------------------------------------------------------------


def test_held_out_real_images_score_near_the_floor(data, cache):
    ev = Evaluator(data, n=300, cache_dir=cache).prepare()
    held_out = ev.evaluate(data.test.x[:300])  # real images neither trained on nor referenced
    noisy = ev.evaluate(noised(data.test.x[:300], 0.4))
    assert held_out["fid"] < 1.5 * ev.floor["fid"]
    assert held_out["fid"] < 0.5 * noisy["fid"]
    assert held_out["n"] == ev.floor["n"] == 300


def test_fid_and_kid_rise_monotonically_with_noise(evaluator, clean):
    results = [evaluator.evaluate(noised(clean, sd)) for sd in NOISE_LEVELS]
    fids, kids = [r["fid"] for r in results], [r["kid"] for r in results]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    # sd 0.1 (5% of the pixel range) is within sampling noise at n=1000 against 359 references;
    # from sd 0.2 on, noised sets score clearly worse than the clean ones.
    sharp = evaluator.evaluate(clean)
    assert sharp["fid"] < fids[1] and sharp["kid"] < kids[1]
    assert fids[-1] > 5 * evaluator.floor["fid"]
    assert results[-1]["precision"] < sharp["precision"]


def test_blurred_images_score_worse(evaluator, clean):
    sharp, blur = evaluator.evaluate(clean), evaluator.evaluate(blurred(clean))
    assert blur["fid"] > 5 * sharp["fid"] and blur["kid"] > sharp["kid"]
    assert blur["recall"] < sharp["recall"]


@pytest.mark.parametrize("how", ["one image", "one class"])
def test_collapsed_sets_lose_entropy_coverage_and_recall(evaluator, data, clean, how):
    if how == "one image":
        collapsed = clean[:1].repeat(1000, 1, 1, 1)
    else:
        threes = data.train.x[data.train.y == 3]
        collapsed = threes.repeat(1000 // len(threes) + 1, 1, 1, 1)[:1000]
    result, floor = evaluator.evaluate(collapsed), evaluator.floor
    assert result["label_entropy"] < 0.3 < 2.0 < floor["label_entropy"]
    assert result["classes_covered"] <= 2 and floor["classes_covered"] == 10
    assert result["recall"] < 0.1 < floor["recall"]
    assert result["fid"] > 10 * floor["fid"]


# -- unlabelled data ---------------------------------------------------------------------------------


def test_unlabelled_data_uses_an_autoencoder_and_still_ranks_noise(cache):
    data = digits(labelled=False)
    ev = Evaluator(data, cache_dir=cache).prepare()
    info = ev.info
    assert info["kind"] == "autoencoder" and info["test_accuracy"] is None
    assert "autoencoder" in info["trust"] and "not comparable" in info["trust"]
    assert 0 < info["reconstruction_mse"] < 0.1
    clean = data.train.x[:1000]
    results = [ev.evaluate(clean)] + [ev.evaluate(noised(clean, sd)) for sd in (0.2, 0.8)]
    assert results[0]["label_entropy"] is None and results[0]["classes_covered"] is None
    fids, kids = [r["fid"] for r in results], [r["kid"] for r in results]
    assert fids[0] < fids[1] < fids[2] and kids[0] < kids[1] < kids[2]
    assert ev.evaluate(blurred(clean))["fid"] > 5 * results[0]["fid"]


# -- MNIST (slow: trains a 28x28 extractor, about a minute or more on 2 cores) ---------------------------

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.exists(), reason="../shared/data/mnist is not present")
def test_mnist_extractor_accuracy_floor_and_speed(tmp_path):
    x = np.concatenate([read_idx(MNIST / f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")])
    y = np.concatenate([read_idx(MNIST / f"{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")])
    data = make_splits(
        "mnist",
        to_unit_range(x, 255),
        torch.from_numpy(y.astype(np.int64)),
        seed=0,
        val_fraction=1 / 7,
        test_fraction=1 / 7,
        num_classes=10,
    )
    ev = Evaluator(data, cache_dir=tmp_path).prepare()
    assert ev.info["n"] == 10_000 and ev.info["test_accuracy"] >= 0.985
    start = time.perf_counter()
    noisy = ev.evaluate(noised(data.test.x, 0.2))
    assert time.perf_counter() - start < 60  # a few seconds on an idle 2-core machine
    assert noisy["fid"] > 10 * ev.floor["fid"]
