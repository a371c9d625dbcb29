"""Improved precision and recall (Kynkaanniemi et al. 2019) with k-nearest-neighbour manifolds.

The manifold of a set is the union of balls around its points, each with radius equal to the
distance to the point's k-th nearest neighbour in the same set (itself excluded). Precision is
the share of generated points inside the real manifold (are the samples realistic?); recall is
the share of real points inside the generated manifold (is the variety covered?).

Distances are computed in row blocks as float64 ||a||^2 + ||b||^2 - 2 a.b, so 10k x 10k never
sits in memory at once. Squared distances within 1e-10 of the largest squared norm are snapped to 0, so
that duplicated points (a collapsed generator) compare as exactly equal rather than by rounding
noise. Sets larger than `max_samples` (default 5000) are subsampled with a seeded choice: the
cost grows with N^2 and the estimates are already stable at a few thousand points.
"""

from __future__ import annotations

import numpy as np
import torch

from gentune.errors import GentuneError

DEFAULT_K = 3
DEFAULT_MAX_SAMPLES = 5000
_BLOCK = 1024


def _prepare(points, max_samples: int, rng: np.random.Generator, k: int) -> torch.Tensor:
    x = torch.as_tensor(points).detach().cpu().double()
    if x.ndim != 2 or len(x) <= k:
        raise GentuneError(
            f"precision/recall needs an (N, d) set with N > k = {k}",
            value=tuple(x.shape),
            fix="pass more samples",
        )
    if len(x) > max_samples:
        x = x[np.sort(rng.choice(len(x), max_samples, replace=False))]
    return x


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)), float64, with rounding noise snapped to 0."""
    na, nb = (a * a).sum(1)[:, None], (b * b).sum(1)
    d = torch.addmm(nb, a, b.T, alpha=-2.0).add_(na)
    # In-place ops on a per-row tolerance keep this memory-bound step to a few passes.
    return d.masked_fill_(d <= 1e-10 * (na + nb.max()), 0.0)


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour, the point itself excluded."""
    # The point's own zero distance is the smallest, so the (k+1)-th smallest is the k-th neighbour.
    return torch.cat(
        [torch.topk(_sqdist(block, x), k + 1, dim=1, largest=False).values[:, k] for block in x.split(_BLOCK)]
    )


class RealManifold:
    """The real set's k-NN manifold, built once and reused to score many generated sets."""

    def __init__(self, real, *, k: int = DEFAULT_K, max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0):
        self.k, self.max_samples, self.seed = k, max_samples, seed
        self.real = _prepare(real, max_samples, np.random.default_rng(seed), k)
        self.radii = _knn_radii(self.real, k)

    def score(self, fake) -> dict:
        """{"precision", "recall"} of a generated feature set against this manifold."""
        # A different stream from the one that subsampled the reals, still fixed by the seed.
        fake = _prepare(fake, self.max_samples, np.random.default_rng(self.seed + 1), self.k)
        if fake.shape[1] != self.real.shape[1]:
            raise GentuneError(
                "real and generated features must have the same dimension",
                value=(self.real.shape[1], fake.shape[1]),
                fix="compute both with the same feature extractor",
            )
        fake_radii = _knn_radii(fake, self.k)
        fake_inside = torch.zeros(len(fake), dtype=torch.bool)
        real_inside = []
        for start in range(0, len(self.real), _BLOCK):
            d = _sqdist(self.real[start : start + _BLOCK], fake)
            fake_inside |= (d <= self.radii[start : start + _BLOCK, None]).any(0)
            real_inside.append((d <= fake_radii[None, :]).any(1))
        return {
            "precision": float(fake_inside.double().mean()),
            "recall": float(torch.cat(real_inside).double().mean()),
        }


def precision_recall(
    real, fake, *, k: int = DEFAULT_K, max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0
) -> dict:
    """Improved precision and recall of `fake` against `real` features (N, d): floats in [0, 1]."""
    return RealManifold(real, k=k, max_samples=max_samples, seed=seed).score(fake)
