"""Kernel Inception Distance (Binkowski et al. 2018) on any feature space.

KID is the unbiased estimate of the squared maximum mean discrepancy with the polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets. Unlike FID it has no bias at finite N,
so it may come out slightly negative when the two sets are alike. The value is returned as is
(papers often quote KID x 1000).
"""

from __future__ import annotations

import numpy as np
import torch

from gentune.errors import GentuneError


def _kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # The float32 product is 2-3x faster and its ~1e-6 relative error is far below KID's subset
    # noise; the cube and the sums, where cancellation happens, run in float64. One subset at a
    # time keeps each 1000 x 1000 matrix in cache: batching subsets measured 3x slower.
    return (x @ y.T).double().div_(x.shape[1]).add_(1.0).pow_(3)


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between two equal-sized samples under the cubic polynomial kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(
    features_a, features_b, *, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation of unbiased MMD^2 over `n_subsets` seeded random subsets.

    Each subset draws min(subset_size, len(a), len(b)) rows of each set without replacement.
    """
    a = torch.as_tensor(features_a).detach().cpu().float()
    b = torch.as_tensor(features_b).detach().cpu().float()
    m = min(subset_size, len(a), len(b))
    if a.ndim != 2 or a.shape[1:] != b.shape[1:] or m < 2 or n_subsets < 1:
        raise GentuneError(
            "KID needs two (N, d) feature sets of the same d with N >= 2, and n_subsets >= 1",
            value=(tuple(a.shape), tuple(b.shape), n_subsets),
            fix="pass at least two samples per set",
        )
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(n_subsets)
        ]
    )
    return float(values.mean()), float(values.std())
