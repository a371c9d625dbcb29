"""Frechet distance between Gaussians fitted to two feature sets (the "F" in FID).

Everything runs in float64: a one-pass float32 covariance of uncentred features can be off by
several percent. The matrix square root goes through symmetric eigendecompositions, because
tr sqrt(S1 S2) equals the sum of the square roots of the eigenvalues of the symmetric PSD
matrix sqrt(S1) S2 sqrt(S1); this avoids scipy.linalg.sqrtm and its deprecated `disp` argument.
"""

from __future__ import annotations

import numpy as np
import torch

from gentune.errors import GentuneError


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d), float64, of features (N, d); N must exceed 1.

    The features are centred before the covariance product, so large means cost no precision.
    """
    f = torch.as_tensor(features).detach().cpu().double()
    if f.ndim != 2 or f.shape[0] < 2:
        raise GentuneError(
            "features for Gaussian statistics must be a 2-D array with at least 2 rows",
            value=tuple(f.shape),
            fix="pass an (N, d) array with N > d",
        )
    # torch rather than numpy for the product: OpenBLAS threads were 100x slower on a busy 2-core box.
    mu = f.mean(dim=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu.numpy(), sigma.numpy()


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; tiny negative eigenvalues from rounding become 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr sqrt(S1 S2), in float64, never below 0."""
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise GentuneError(
            "means and covariances must share one feature dimension",
            value=(mu1.shape, s1.shape, mu2.shape, s2.shape),
            fix="compute both statistics with the same feature extractor",
        )
    root1 = _sqrt_psd(s1)
    m = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    fid = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(fid, 0.0))
