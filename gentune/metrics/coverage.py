"""Mode coverage from a classifier's predictions: a collapsed generator shows up at once here."""

from __future__ import annotations

import torch

# A class counts as covered when it holds more than this share of the samples.
COVERED_SHARE = 0.01


def label_coverage(logits: torch.Tensor, num_classes: int) -> dict:
    """Entropy (nats) of the predicted-label histogram and the number of classes above 1%.

    A generator that draws every class equally scores ln(num_classes) (2.303 for ten digits) and
    covers all classes; one that draws a single class scores 0 and covers 1.
    """
    labels = torch.as_tensor(logits).argmax(dim=1)
    counts = torch.bincount(labels, minlength=num_classes).double()
    p = counts / counts.sum()
    nonzero = p[p > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    return {
        "label_entropy": entropy + 0.0,  # + 0.0 turns the -0.0 of a single class into 0.0
        "classes_covered": int((p > COVERED_SHARE).sum()),
    }
