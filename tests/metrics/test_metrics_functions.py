"""The metric functions on constructed inputs whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gentune.errors import GentuneError
from gentune.metrics import frechet_distance, gaussian_stats, kid, label_coverage, precision_recall


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# -- FID -----------------------------------------------------------------------------------------


def test_gaussian_stats_is_float64_and_matches_numpy_cov():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 8)).astype(np.float32)
    mu, sigma = gaussian_stats(features)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-10)


def test_gaussian_stats_keeps_precision_with_a_large_mean():
    # A float32 one-pass covariance loses the variance of features offset by 1e4; centring keeps it.
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.normal(size=(2000, 4)) * 0.5 + 1e4).float()
    _, sigma = gaussian_stats(features)
    exact = np.cov(features.double().numpy(), rowvar=False)
    np.testing.assert_allclose(sigma, exact, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 30
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 4, size=16), rng.uniform(0.1, 4, size=16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_zero_for_identical_and_never_negative():
    rng = np.random.default_rng(4)
    # Rank-deficient covariances (N < d) are where rounding could push the value below zero.
    features = rng.normal(size=(10, 32))
    mu, sigma = gaussian_stats(features)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert isinstance(value, float)
    assert 0.0 <= value < 1e-6
    other = gaussian_stats(rng.normal(size=(10, 32)))
    assert frechet_distance(mu, sigma, *other) > 0.0


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(GentuneError, match="feature dimension"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# -- KID -----------------------------------------------------------------------------------------


def naive_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = lambda kk: (kk.sum() - np.trace(kk)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * kxy.mean()


def test_kid_matches_the_direct_formula_on_one_full_subset():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 8)), rng.normal(0.3, 1.0, size=(60, 8))
    # A subset of all 60 rows is a permutation, which leaves the unbiased MMD^2 unchanged.
    mean, std = kid(x, y, n_subsets=1, subset_size=60)
    assert mean == pytest.approx(naive_mmd2_unbiased(x, y), rel=1e-5)
    assert std == 0.0


def test_kid_is_near_zero_for_halves_of_one_sample_and_grows_with_a_shift():
    rng = np.random.default_rng(6)
    data = torch.from_numpy(rng.normal(size=(4000, 16))).float()
    a, b = data[:2000], data[2000:]
    same, same_std = kid(a, b, n_subsets=20, subset_size=500)
    shifted, _ = kid(a, b + 0.5, n_subsets=20, subset_size=500)
    assert abs(same) < 2 * same_std + 1e-3
    assert shifted > 20 * max(abs(same), same_std)
    assert kid(a, b, n_subsets=20, subset_size=500) == (same, same_std)  # seeded


# -- precision / recall ----------------------------------------------------------------------------


def test_precision_recall_identical_sets_are_perfect():
    x = torch.randn(800, 10, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_disjoint_sets_score_zero():
    x = torch.randn(800, 10, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_separates_realism_from_variety():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(1000, 4, generator=g)
    narrow = 0.1 * torch.randn(1000, 4, generator=g)  # realistic but covers only the centre
    pr = precision_recall(real, narrow)
    assert pr["precision"] > 0.9 and pr["recall"] < 0.3
    wide = 3.0 * torch.randn(1000, 4, generator=g)  # covers everything but mostly unrealistic
    pr = precision_recall(real, wide)
    assert pr["recall"] > 0.8 and pr["precision"] < 0.5


def test_precision_recall_of_a_collapsed_set_has_no_recall():
    real = torch.randn(500, 6, generator=torch.Generator().manual_seed(3))
    collapsed = real[:1].repeat(500, 1)
    pr = precision_recall(real, collapsed)
    assert pr["precision"] == 1.0  # the single sample is a real one
    assert pr["recall"] == pytest.approx(1 / 500, abs=1e-9)  # only the copied point itself


def test_precision_recall_subsampling_is_seeded():
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(1200, 5, generator=g), torch.randn(1200, 5, generator=g) + 0.3
    first = precision_recall(real, fake, max_samples=500, seed=7)
    assert first == precision_recall(real, fake, max_samples=500, seed=7)
    full = precision_recall(real, fake)
    assert abs(first["precision"] - full["precision"]) < 0.1


# -- label coverage ------------------------------------------------------------------------------


def one_hot_logits(labels, k=10):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), k).float()


def test_label_coverage_uniform_and_single_class():
    uniform = label_coverage(one_hot_logits(torch.arange(1000) % 10), 10)
    assert uniform["label_entropy"] == pytest.approx(math.log(10))
    assert uniform["classes_covered"] == 10
    single = label_coverage(one_hot_logits([4] * 300), 10)
    assert single == {"label_entropy": 0.0, "classes_covered": 1}
    assert math.copysign(1.0, single["label_entropy"]) == 1.0  # not -0.0


def test_label_coverage_counts_only_classes_above_one_percent():
    labels = [0] * 980 + [1] * 10 + [2] * 10  # classes 1 and 2 hold exactly 1%: not covered
    assert label_coverage(one_hot_logits(labels), 10)["classes_covered"] == 1
    labels = [0] * 970 + [1] * 20 + [2] * 10
    assert label_coverage(one_hot_logits(labels), 10)["classes_covered"] == 2
