"""The feature extractor behind every metric: one small network per dataset, trained once, cached.

Inception-v3 features (the usual FID) know nothing about 8x8 or 28x28 greyscale digits and cannot
be downloaded here, so each dataset gets its own extractor, trained on its own TRAIN split:

- labelled data: a small CNN classifier; features are its penultimate layer (the 64-d output of
  the first fully connected layer, taken before its ReLU so that no unit is dead), logits are its
  output. This is the "Frechet LeNet distance" idea used for MNIST in the literature.
- unlabelled data: a small convolutional autoencoder; features are its 64-d bottleneck. There
  are no logits, so label entropy and class coverage are unavailable.
- labelled data whose labels cannot teach a classifier (one class, a class with fewer than
  MIN_CLASS_IMAGES train images, more than MAX_CLASSES classes) gets the autoencoder too, with
  the reason in the info's trust note: a one-class "classifier" is 100% accurate and its
  features mean nothing.

The feature dimension is fixed at FEATURE_DIM = 64, so FID needs more than 64 images per set.
Features are multiplied by one fixed scale, set after training so that the train features have
mean square 1 per dimension (see Extractor); FID values are therefore in those units.
Weights are cached at `<cache>/<name>-<fingerprint>-v<EXTRACTOR_VERSION>.pt`: a change of data
changes the fingerprint, a change of this file's architecture or training must bump the version.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from gentune.data.base import MAX_CLASSES, ImageDataset
from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.paths import gentune_home, writable_folder, write_failed

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = 1
FEATURE_DIM = 64

# About 1000 optimiser steps whatever the data size: ~110 epochs of the 1k digits, 3 of MNIST.
_TRAIN_STEPS = 1000
_MIN_EPOCHS = 3
_BATCH_SIZE = 128
_LR = 2e-3
_SEED = 0
_INFER_BATCH = 2048
# Fewer train images than this in any class, and the classifier's features are not trusted.
MIN_CLASS_IMAGES = 10
_WARNED: set[str] = set()  # fingerprints whose unused labels this process has warned about
# Told (stage, done, total) while the extractor trains, so that a first run is not silent for
# the seconds (digits) or minutes (MNIST on a CPU) it takes; gentune.progress shows it.
Progress = Callable[[str, int, int], None]
TRAIN_STAGE = "training the feature extractor (once per dataset, then cached)"

_CLASSIFIER_TRUST = (
    "features come from a small CNN classifier trained on this dataset's train split; FID and KID "
    "are comparable between runs that share the dataset fingerprint, extractor version and n, but "
    "not with published Inception-FID numbers"
)
_AUTOENCODER_TRUST = (
    "features were learned without labels by an autoencoder trained on your own data; FID/KID rank "
    "gross failures (noise, blur, collapse) reliably, but absolute values are not comparable to "
    "published numbers, and label entropy / class coverage are unavailable"
)


def _trunk(channels: int) -> nn.Sequential:
    """Conv stack for any (C, H, W): two poolings, then adaptive pooling to a 2x2 grid."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    )


class Extractor(nn.Module):
    """Shared part: `features` = raw 64-d layer times a fixed scale set once after training.

    The scale makes the train features' mean squared value per dimension 1. It changes FID by a
    constant factor only, and puts x.y/d in KID's kernel (x.y/d + 1)^3 near 1, where the kernel
    weighs first, second and third moments alike instead of being dominated by the cube.
    """

    kind: str
    scale: torch.Tensor  # a buffer: saved with the weights, never trained

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw_features(x) * self.scale

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features, and class logits when the extractor has them, in one pass."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The training loss on a batch (`y`: labels, None for unlabelled data)."""
        raise NotImplementedError


class Classifier(Extractor):
    """CNN classifier; `features` is the 64-d penultimate layer, `logits` the class scores."""

    kind = "classifier"

    def __init__(self, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.trunk = _trunk(shape[0])
        self.fc = nn.Linear(64 * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.raw_features(x)))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits in one pass."""
        f = self.raw_features(x)
        return f * self.scale, self.head(F.relu(f))

    def loss(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("a classifier extractor trains on labelled data only")
        return F.cross_entropy(self.logits(x), y)


class Autoencoder(Extractor):
    """Convolutional autoencoder for unlabelled data; `features` is the 64-d bottleneck."""

    kind = "autoencoder"

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.grid = (math.ceil(h / 4), math.ceil(w / 4))
        self.encoder = nn.Sequential(_trunk(c), nn.Linear(64 * 4, FEATURE_DIM))
        self.expand = nn.Linear(FEATURE_DIM, 64 * self.grid[0] * self.grid[1])
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, c, 3, padding=1),
            nn.Tanh(),
        )

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise GentuneError(
            "an autoencoder extractor has no class logits (the data is unlabelled)",
            fix="use label metrics only on labelled datasets",
        )

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.features(x), None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        z = self.expand(self.raw_features(x)).view(-1, 64, *self.grid)
        # The decoder doubles the grid twice; crop the few extra rows when H or W is not a multiple of 4.
        return self.decoder(z)[:, :, : self.shape[1], : self.shape[2]]

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return F.mse_loss(self.reconstruct(x), x)


def extractor_path(dataset: ImageDataset, cache_dir: Path | None = None) -> Path:
    """Where the extractor for `dataset` is (or will be) cached."""
    folder = Path(cache_dir) if cache_dir is not None else gentune_home() / "extractors"
    return folder / f"{dataset.name}-{dataset.fingerprint}-v{EXTRACTOR_VERSION}.pt"


def get_extractor(
    dataset: ImageDataset, device="cpu", cache_dir: Path | None = None, progress: Progress | None = None
) -> tuple[Extractor, dict]:
    """The dataset's extractor in eval mode and its info dict; trained on first use, then loaded.

    info holds kind ("classifier" or "autoencoder"), feature_dim, test_accuracy (classifier) or
    reconstruction_mse (autoencoder) on the TEST split, trust (what the numbers can be compared
    with), path and loaded_from_cache. `progress(TRAIN_STAGE, step, steps)` is called at each
    optimiser step of a training (None: silent, as in library use).
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    path = extractor_path(dataset, cache_dir)
    cached = _load(path, dataset, device)
    loaded = cached is not None
    model, info = cached if cached is not None else _train(dataset, device, progress)
    if not loaded:
        _save_atomic(path, model, info)
    model.eval()
    info = {**info, "path": str(path), "loaded_from_cache": loaded}
    unused = labels_unused(dataset)
    if unused is not None:
        if dataset.fingerprint not in _WARNED:  # once per process, not once per Evaluator
            _WARNED.add(dataset.fingerprint)
            log.warning(
                "%s: the labels are not used, because %s; the metric's features come from an "
                "autoencoder instead, and label entropy / class coverage are not measured",
                dataset.name,
                unused,
            )
        info.update(
            labels_unused=unused, trust=f"{_AUTOENCODER_TRUST}; the labels were not used, because {unused}"
        )
    return model, info


def labels_unused(dataset: ImageDataset) -> str | None:
    """Why the labels of `dataset` cannot train the classifier extractor, or None when they can
    (or when there are none: unlabelled data needs no reason).

    >>> from gentune.data.base import Split
    >>> x = torch.zeros(30, 1, 8, 8)
    >>> one = ImageDataset("one", Split(x, torch.zeros(30, dtype=torch.long)), Split(x), Split(x), 1, "fp")
    >>> labels_unused(one)
    'the train split holds one class only (label 0)'
    """
    y = dataset.train.y
    if dataset.num_classes is None or y is None:
        return None
    if dataset.num_classes > MAX_CLASSES:
        return f"they number {dataset.num_classes} classes, more than {MAX_CLASSES}"
    classes, counts = torch.unique(y, return_counts=True)
    if len(classes) < 2:
        return f"the train split holds one class only (label {int(classes[0]) if len(classes) else None})"
    fewest = int(counts.argmin())
    if counts[fewest] < MIN_CLASS_IMAGES:
        return (
            f"class {int(classes[fewest])} has {int(counts[fewest])} train images, fewer than the "
            f"{MIN_CLASS_IMAGES} per class a classifier needs"
        )
    return None


def embed(
    model: Extractor, images: torch.Tensor, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (N, 64) and logits (N, K) or None, float32 on the CPU, computed in batches.

    In the channels-last layout: the CPU's pooling and convolution kernels for it ran the trunk
    1.6x as fast as in NCHW (whose MaxPool2d took 40% of the pass) on 2048 MNIST images, with
    features equal to 1e-7."""
    model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    feats, logits = [], []
    with torch.inference_mode():
        for chunk in images.split(_INFER_BATCH):
            x = chunk.to(device, torch.float32)
            f, z = model.embed(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)
            feats.append(f.float().cpu())
            if z is not None:
                logits.append(z.float().cpu())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def _build(dataset: ImageDataset) -> Extractor:
    if dataset.num_classes is not None and labels_unused(dataset) is None:
        return Classifier(dataset.shape, dataset.num_classes)
    return Autoencoder(dataset.shape)


def _train(
    dataset: ImageDataset, device: torch.device, progress: Progress | None = None
) -> tuple[Extractor, dict]:
    """Seeded training with Adam and a cosine schedule, indexing tensors (no DataLoader)."""
    x = dataset.train.x.to(device)
    y = dataset.train.y.to(device) if dataset.train.y is not None and labels_unused(dataset) is None else None
    steps_per_epoch = math.ceil(len(x) / _BATCH_SIZE)
    epochs = max(_MIN_EPOCHS, math.ceil(_TRAIN_STEPS / steps_per_epoch))
    start = time.perf_counter()
    # fork_rng keeps the caller's global RNG untouched while making init and shuffling repeatable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _build(dataset).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=_LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        model.train()
        total, done = epochs * steps_per_epoch, 0
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).to(device).split(_BATCH_SIZE):
                loss = model.loss(x[idx], None if y is None else y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if progress is not None:
                    progress(TRAIN_STAGE, done, total)
    model.eval()
    model.scale.fill_(_feature_scale(model, x))
    info = {
        "kind": model.kind,
        "feature_dim": FEATURE_DIM,
        "version": EXTRACTOR_VERSION,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "epochs": epochs,
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    info.update(_test_quality(model, dataset, device))
    log.info("trained %s extractor for %s: %s", model.kind, dataset.name, info)
    return model, info


def _feature_scale(model: Extractor, x: torch.Tensor) -> float:
    """1 / sqrt(mean squared raw feature) over (up to 10k of) the train images."""
    with torch.inference_mode():
        raw = torch.cat([model.raw_features(c) for c in x[:10_000].split(_INFER_BATCH)])
    return float(raw.double().pow(2).mean().rsqrt())


def _test_quality(model: Extractor, dataset: ImageDataset, device: torch.device) -> dict:
    """Test accuracy of a classifier, or reconstruction MSE of an autoencoder, on the TEST split."""
    test = dataset.test
    if len(test) == 0:
        return (
            {"test_accuracy": None, "trust": _CLASSIFIER_TRUST}
            if isinstance(model, Classifier)
            else {"test_accuracy": None, "reconstruction_mse": None, "trust": _AUTOENCODER_TRUST}
        )
    if isinstance(model, Classifier):
        _, logits = embed(model, test.x, device)
        assert logits is not None and test.y is not None  # a classifier has both
        acc = (logits.argmax(1) == test.y).float().mean().item()
        return {"test_accuracy": round(acc, 4), "trust": _CLASSIFIER_TRUST}
    assert isinstance(model, Autoencoder)
    with torch.inference_mode():
        total = 0.0
        for c in test.x.split(_INFER_BATCH):
            total += F.mse_loss(model.reconstruct(c.to(device)), c.to(device), reduction="sum").item()
        mse = total / test.x.numel()
    return {"test_accuracy": None, "reconstruction_mse": round(mse, 5), "trust": _AUTOENCODER_TRUST}


def _load(path: Path, dataset: ImageDataset, device: torch.device) -> tuple[Extractor, dict] | None:
    """The cached model and info, or None when absent or unreadable (then it is retrained)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model = _build(dataset).to(device)
        model.load_state_dict(blob["state_dict"])
        info = dict(blob["info"])
        if info.get("kind") != model.kind or info.get("fingerprint") != dataset.fingerprint:
            raise ValueError(f"cached info does not match the dataset: {info}")
    except Exception as exc:  # a truncated or foreign file must not block evaluation
        log.warning("ignoring unreadable extractor cache %s (%s); retraining", path, exc)
        return None
    return model, info


def _save_atomic(path: Path, model: Extractor, info: dict) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    writable_folder(path.parent)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        torch.save({"state_dict": state, "info": info}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk (torch's writer raises RuntimeError), or lost rights
        raise write_failed(path, e, "the feature extractor's cache file") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
