"""`gentune.score`: the metric of a study, for images made anywhere (your own loop, a paper's code).

The samples are scored by the same Evaluator a study builds (gentune.study.targets): the same
cached feature extractor, the same reference statistics, the same N and the same floor, so a
score here compares with the `metrics` of a built-in trial on the same dataset at the same N.

Evaluators are kept per (dataset, data folder, N, device, seed) for the life of the process:
preparing one loads the extractor and computes the floor, which a loop that scores every few
hundred steps should pay once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gentune.data import load_dataset
from gentune.data.base import ImageDataset
from gentune.errors import GentuneError
from gentune.metrics.evaluator import Evaluator

_EVALUATORS: dict[tuple, Evaluator] = {}


@dataclass(frozen=True)
class Score:
    """The metrics of N samples, as a built-in trial stores them, and the floor beside them.

    FID and KID are lower-better and read next to `floor` (N real images scored the same way:
    what a perfect generator gets); label entropy and classes covered are None on unlabelled data.
    """

    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    label_entropy: float | None
    classes_covered: int | None
    n: int  # samples scored: FID values compare only at equal n
    floor: dict[str, Any]  # the same metrics for n real train images against the reference

    def metrics(self) -> dict[str, Any]:
        """The metrics without the floor: the dict a built-in trial stores under `metrics`."""
        out = self.to_dict()
        del out["floor"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, the floor as a nested dict."""
        return asdict(self)


def score(
    samples: Any,
    dataset: str = "digits",
    n: int | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    *,
    seed: int = 0,
) -> Score:
    """Score generated images against `dataset`'s held-out real images, next to the floor.

    Args:
        samples: images as a torch tensor or NumPy array of shape (N, C, H, W), or (N, H, W)
            for one channel, with the dataset's image size (digits: 1 x 8 x 8, MNIST: 1 x 28 x
            28). Floats must lie in [0, 1]; uint8 arrays are read as 0..255. Any other dtype,
            range or shape is refused with a GentuneError that names it.
        dataset: "digits", "mnist" or "files" (with `data_dir`), as in `gentune tune`.
        n: how many of the samples to score; None: the study default (1000 on digits, 10000
            on MNIST), so the values compare with a built-in study's at its default N.
        data_dir: a local MNIST folder, or your images for "files".
        device: "auto", "cpu", "cuda" or "cuda:N".
        seed: the study's --seed: it picks the floor's real images and KID's subsets (FID does
            not depend on it).

    Returns:
        A Score: fid, kid, kid_std, precision, recall, label_entropy, classes_covered, n, floor.

    >>> s = score(np.random.default_rng(0).random((200, 8, 8)), n=200)  # doctest: +SKIP
    >>> round(s.fid, 1) > round(s.floor["fid"], 1)  # doctest: +SKIP
    True
    """
    evaluator = study_evaluator(dataset, n=n, data_dir=data_dir, device=device, seed=seed)
    images = to_model_range(samples, evaluator.dataset.shape)
    metrics = evaluator.evaluate(images)
    return Score(
        fid=metrics["fid"],
        kid=metrics["kid"],
        kid_std=metrics["kid_std"],
        precision=metrics["precision"],
        recall=metrics["recall"],
        label_entropy=metrics["label_entropy"],
        classes_covered=metrics["classes_covered"],
        n=metrics["n"],
        floor=evaluator.floor,
    )


def study_evaluator(
    dataset: str | ImageDataset,
    *,
    n: int | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Evaluator:
    """The prepared Evaluator a study of `dataset` with N = `n` and --seed `seed` scores with,
    kept for reuse by this process."""
    data = dataset if isinstance(dataset, ImageDataset) else None
    name = data.fingerprint if data is not None else str(dataset)
    key = (name, None if data_dir is None else str(data_dir), n, str(device), seed)
    if key not in _EVALUATORS:
        if data is None:
            loaded = load_dataset(str(dataset), data_dir=data_dir)
            if not isinstance(loaded, ImageDataset):
                raise GentuneError(
                    f"dataset {dataset!r} holds text, which gentune scores by validation NLL, not by samples",
                    value=dataset,
                    fix="score images of digits, mnist or files",
                )
            data = loaded
        _EVALUATORS[key] = Evaluator(data, n=n, device=device, seed=seed).prepare()
    return _EVALUATORS[key]


def to_model_range(samples: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """`samples` as the Evaluator takes them: float32 (N, C, H, W) in [-1, 1] on the CPU.

    >>> to_model_range(np.full((2, 8, 8), 255, np.uint8), (1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    >>> float(to_model_range(torch.zeros(2, 1, 8, 8), (1, 8, 8)).min())
    -1.0
    """
    want = f"(N, {', '.join(map(str, shape))})"
    if shape[0] == 1:
        want += f" or (N, {shape[1]}, {shape[2]})"
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu()
        dtype = str(samples.dtype).removeprefix("torch.")
    elif isinstance(samples, np.ndarray):
        dtype = str(samples.dtype)
    else:
        raise GentuneError(
            f"samples must be a torch tensor or a NumPy array of shape {want}",
            value=type(samples).__name__,
            fix="pass torch.stack(images) or np.asarray(images)",
        )
    if dtype not in ("uint8", "float16", "bfloat16", "float32", "float64"):
        raise GentuneError(
            "samples must be floats in [0, 1] or uint8 in 0..255",
            value=dtype,
            fix="pass images.float() / 255 for integer pixels",
        )
    x = torch.as_tensor(samples).to(torch.float32)
    if x.ndim == 3 and shape[0] == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise GentuneError(
            f"samples must have shape {want} for this dataset",
            value=tuple(x.shape),
            fix="reshape them to the dataset's image size (channels first)",
        )
    if dtype == "uint8":
        return x / 127.5 - 1.0
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if not (lo >= 0.0 and hi <= 1.0):  # also refuses NaN, which fails both comparisons
        fix = "pass (x + 1) / 2 for a generator that ends in tanh" if lo >= -1.0 and hi <= 1.0 else None
        raise GentuneError(
            "float samples must lie in [0, 1]",
            value=f"min {lo:g}, max {hi:g}",
            fix=fix or "scale them to [0, 1], or pass uint8 0..255",
        )
    return x * 2.0 - 1.0
