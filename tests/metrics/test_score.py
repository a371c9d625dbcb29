"""gentune.score: a study's metric for images made anywhere, equal to the built-in path's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gentune
from gentune.errors import GentuneError
from gentune.families import get_family
from gentune.metrics import Evaluator

pytestmark = pytest.mark.usefixtures("one_thread")

N = 200


@pytest.fixture(scope="module")
def generated(digits) -> torch.Tensor:
    """200 samples in [-1, 1] of a briefly trained MLP GAN, as a trial's family.sample draws them."""
    family = get_family("gan-mlp")
    cfg = family.config_cls.from_dict({"width": 32, "depth": 1})
    model = family.train(cfg, digits, steps=60, seed=0).model
    return family.sample(model, N, seed=12345)


def test_score_equals_the_evaluator_on_the_same_samples(digits, generated):
    # What GenerativeObjective / BuiltinTarget build for a study with --n-eval 200 and seed 0.
    builtin = Evaluator(digits, n=N, device="cpu", seed=0).prepare()
    expected = builtin.evaluate(generated)
    got = gentune.score((generated + 1) / 2, dataset="digits", n=N, device="cpu")
    assert got.metrics().keys() == expected.keys()
    for key, value in expected.items():
        assert got.metrics()[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert got.floor == builtin.floor
    assert got.n == N and got.to_dict()["floor"]["fid"] == builtin.floor["fid"]
    # uint8 pixels and the channel-less (N, H, W) shape score the same images the same way.
    as_uint8 = ((generated + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    again = gentune.score(as_uint8, dataset="digits", n=N, device="cpu")
    assert again.fid == pytest.approx(expected["fid"], rel=0.05)
    assert again.classes_covered == expected["classes_covered"]


@pytest.mark.parametrize(
    ("samples", "words"),
    [
        (np.zeros((N, 8, 8)) - 0.5, "[0, 1]"),  # a tanh generator's [-1, 1] output
        (np.full((N, 1, 8, 8), np.nan, np.float32), "[0, 1]"),
        (np.zeros((N, 3, 8, 8)), "shape"),
        (np.zeros((N, 8, 8), np.int64), "uint8"),
        ([[0.5] * 64] * N, "tensor"),
    ],
)
def test_score_refuses_what_it_cannot_read(samples, words):
    with pytest.raises(GentuneError) as e:
        gentune.score(samples, dataset="digits", n=N, device="cpu")
    assert words in str(e.value) and "Fix:" in str(e.value)


def test_score_needs_n_samples(generated):
    with pytest.raises(GentuneError, match="at least n = 1000"):
        gentune.score((generated + 1) / 2, dataset="digits", device="cpu")  # default N on digits: 1000
