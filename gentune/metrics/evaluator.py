"""Score generated images against a dataset's real images, at a fixed N, next to a floor.

FID at finite N is biased upwards (roughly in proportion to 1/N), so an Evaluator fixes N once
and reports, next to every score, the floor: the same metrics for N real TRAIN images against
the same reference split. A perfect generator scores about the floor, not 0.

N must exceed the feature dimension (64), so the train split, where the floor's N real images
come from, needs 65 images or more. The reference split may hold fewer (a small dataset's
validation split): its covariance is then rank-deficient, FID sits further above 0 even for
real images, and the info's trust note says to read it next to the floor at the same N.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gentune.data.base import ImageDataset, fingerprint
from gentune.device import resolve_device
from gentune.errors import GentuneError, unknown_choice
from gentune.metrics.coverage import label_coverage
from gentune.metrics.features import EXTRACTOR_VERSION, FEATURE_DIM, Progress, embed, get_extractor
from gentune.metrics.fid import frechet_distance, gaussian_stats
from gentune.metrics.kid import kid
from gentune.metrics.prdc import DEFAULT_K, RealManifold
from gentune.paths import writable_folder, write_failed

MAX_DEFAULT_N = 10_000
REFERENCE_SPLITS = ("val", "test")
FLOOR_STAGE = "scoring the reference split and the floor"


def default_n(dataset: ImageDataset) -> int:
    """min(10000, train size), rounded down to a multiple of 100: 1000 for digits, 10000 for
    MNIST; a train split of 65 to 99 images (a small --dataset files) gives all of it."""
    n = min(MAX_DEFAULT_N, len(dataset.train)) // 100 * 100
    return n if n > FEATURE_DIM else len(dataset.train)


class Evaluator:
    """FID, KID, precision/recall and label coverage of generated images, in the dataset's own features.

    >>> ev = Evaluator(dataset).prepare()      # doctest: +SKIP
    >>> ev.evaluate(samples)["fid"], ev.floor["fid"]   # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        n: int | None = None,
        reference: str = "val",
        device="cpu",
        cache_dir: Path | None = None,
        seed: int = 0,
        progress: Progress | None = None,
    ):
        self.dataset = dataset
        self.n = n
        self.reference = reference
        self.device = device
        self.cache_dir = cache_dir
        self.seed = seed
        # (stage, done, total) while the extractor trains and the floor is computed; None: silent
        self.progress = progress

    def prepare(self) -> Evaluator:
        """Train or load the extractor, embed the reference split once, compute the floor."""
        if getattr(self, "_prepared", False):
            return self
        self._n = self._checked_n()
        self._device = (
            resolve_device(self.device) if isinstance(self.device, str) else torch.device(self.device)
        )
        self._model, self._extractor_info = get_extractor(
            self.dataset, self._device, self.cache_dir, self.progress
        )
        if self.progress is not None:
            self.progress(FLOOR_STAGE, 0, 2)
        self._ref_features, self._ref_cache = self._reference_features()
        self._ref_mu, self._ref_sigma = gaussian_stats(self._ref_features)
        self._manifold = RealManifold(self._ref_features, seed=self.seed)
        self._floor, self._floor_n = self._compute_floor()
        if self.progress is not None:
            self.progress(FLOOR_STAGE, 2, 2)
        self._prepared = True
        return self

    def evaluate(self, images: torch.Tensor, keys=None) -> dict:
        """Metrics of the first n of `images` (M, C, H, W) in [-1, 1]; plain JSON-able values.

        `keys` (e.g. {"fid", "label_entropy"}) computes only those metrics, for the cheap
        evaluations during training; `n` and the label coverage come along (they are free).
        """
        self.prepare()
        images = self._checked_images(images)
        features, logits = embed(self._model, images[: self._n], self._device)
        return self._score(features, logits, keys)

    def evaluate_many(self, images: Sequence[torch.Tensor], keys=None) -> list[dict]:
        """`evaluate` of each tensor in `images` (a population's members' samples), with one
        extractor pass over all of them. Each dict equals `evaluate(images[i], keys)`: the
        extractor scores each image on its own, so the features do not depend on the batch an
        image shares (checked on CPU; a GPU library may pick another kernel for another batch
        size, a difference in the last bits)."""
        self.prepare()
        checked = [self._checked_images(x) for x in images]
        if not checked:
            return []
        features, logits = embed(self._model, torch.cat(checked), self._device)
        bounds = [0]
        for x in checked:
            bounds.append(bounds[-1] + len(x))
        return [
            self._score(features[a:b], None if logits is None else logits[a:b], keys)
            for a, b in zip(bounds, bounds[1:])
        ]

    @property
    def floor(self) -> dict:
        """The metrics of n real TRAIN images vs the reference: what a perfect generator scores."""
        return dict(self.prepare()._floor)

    @property
    def info(self) -> dict:
        """What the scores rest on: extractor kind and quality, n, reference split, cache paths."""
        self.prepare()
        ex = self._extractor_info
        info = {
            "kind": ex["kind"],
            "feature_dim": ex["feature_dim"],
            "test_accuracy": ex.get("test_accuracy"),
            "n": self._n,
            "reference": self.reference,
            "n_ref": len(self._ref_features),
            "floor_n": self._floor_n,
            "trust": ex["trust"],
            "cache_path": ex["path"],
            "reference_cache_path": str(self._ref_cache),
            "extractor_version": EXTRACTOR_VERSION,
        }
        if "reconstruction_mse" in ex:
            info["reconstruction_mse"] = ex["reconstruction_mse"]
        if self._floor_n < self._n:
            info["floor_note"] = (
                f"the train split has only {self._floor_n} images, fewer than "
                f"n={self._n}; the floor uses all of them and sits a little high"
            )
        if info["n_ref"] <= FEATURE_DIM:
            note = (
                f"the reference split holds {info['n_ref']} images, no more than the {FEATURE_DIM} "
                "feature dimensions, so its covariance is rank-deficient and FID sits further above "
                "0 even for real images; read FID next to the floor (real images at the same N), "
                "never against other datasets"
            )
            info["small_data_note"] = note
            info["trust"] = f"{info['trust']}; {note}"
        return info

    # -- internals ---------------------------------------------------------------------------

    def _checked_n(self) -> int:
        if self.reference not in REFERENCE_SPLITS:
            raise unknown_choice("reference split", self.reference, REFERENCE_SPLITS)
        n_train = len(self.dataset.train)
        if n_train <= FEATURE_DIM:
            raise GentuneError(
                f"the train split must hold more than {FEATURE_DIM} images, the feature dimension: "
                "the floor scores N of them and FID needs N > 64 (at fewer it ranked pure noise "
                "above real images)",
                value=n_train,
                fix="use more images (--dataset files needs at least 100)",
            )
        n = default_n(self.dataset) if self.n is None else int(self.n)
        if n <= FEATURE_DIM:
            raise GentuneError(
                f"the number of images scored, n, must exceed the feature dimension "
                f"{FEATURE_DIM} for FID's covariance to be full rank",
                value=n,
                fix="use n >= 1000 (more images give a lower, steadier FID)",
            )
        n_ref = len(self.dataset.split(self.reference))
        if n_ref <= DEFAULT_K:
            raise GentuneError(
                f"the reference split {self.reference!r} must hold more than {DEFAULT_K} images "
                "(precision/recall measure each image's distance to its 3rd-nearest neighbour)",
                value=n_ref,
                fix="use more images: --dataset files puts a quarter of a small set (25 of 100 "
                "images) into the validation split",
            )
        return n

    def _checked_images(self, images) -> torch.Tensor:
        if (
            not isinstance(images, torch.Tensor)
            or images.ndim != 4
            or tuple(images.shape[1:]) != tuple(self.dataset.shape)
        ):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise GentuneError(
                f"generated images must be a tensor (M, C, H, W) with (C, H, W) = "
                f"{tuple(self.dataset.shape)}",
                value=shape,
                fix="reshape the generator output to the dataset's image shape",
            )
        if len(images) < self._n:
            raise GentuneError(
                f"evaluate needs at least n = {self._n} images",
                value=len(images),
                fix=f"generate {self._n} images or build the Evaluator with a smaller n",
            )
        images = images[: self._n].detach()
        if not torch.isfinite(images).all():
            raise GentuneError(
                "generated images contain NaN or infinite values",
                value="non-finite",
                fix="the generator diverged; lower its learning rate or mark the trial failed",
            )
        return images

    def _score(self, features: torch.Tensor, logits: torch.Tensor | None, keys=None) -> dict:
        def wanted(*names: str) -> bool:
            return keys is None or any(name in keys for name in names)

        result: dict = {}
        if wanted("fid"):
            mu, sigma = gaussian_stats(features)
            result["fid"] = frechet_distance(mu, sigma, self._ref_mu, self._ref_sigma)
        if wanted("kid", "kid_std"):
            result["kid"], result["kid_std"] = kid(features, self._ref_features, seed=self.seed)
        if wanted("precision", "recall"):
            result.update(self._manifold.score(features))
        result.update({"label_entropy": None, "classes_covered": None, "n": int(len(features))})
        if logits is not None and self.dataset.num_classes is not None:
            result.update(label_coverage(logits, self.dataset.num_classes))
        return result

    def _compute_floor(self) -> tuple[dict, int]:
        train = self.dataset.train
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(train), generator=gen)[: self._n]
        features, logits = embed(self._model, train.x[idx], self._device)
        return self._score(features, logits), len(idx)

    def _reference_features(self) -> tuple[torch.Tensor, Path]:
        """Reference features, cached as .npz next to the extractor, keyed by its weights."""
        ex_path = Path(self._extractor_info["path"])
        path = ex_path.with_name(f"{ex_path.stem}-ref-{self.reference}.npz")
        weights = fingerprint(*[t.cpu() for t in self._model.state_dict().values()])
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["extractor"]) == weights:
                    return torch.from_numpy(z["features"]), path
        except (OSError, KeyError, ValueError):
            pass  # absent, stale or unreadable: recompute below
        features, _ = embed(self._model, self.dataset.split(self.reference).x, self._device)
        _savez_atomic(path, features=features.numpy(), extractor=np.array(weights))
        return features, path


def _savez_atomic(path: Path, **arrays) -> None:
    writable_folder(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, or a folder made read-only since it was checked
        raise write_failed(path, e, "the reference features' cache file") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
