"""Device choice: CUDA when present, else CPU."""

from __future__ import annotations

import torch

from gentune.errors import GentuneError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:1' are taken as given.

    >>> resolve_device("cpu").type
    'cpu'
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GentuneError(
            "device must be auto, cpu, cuda or cuda:N", value=name, fix="pass --device auto"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GentuneError(
            "CUDA was asked for but this machine has no usable GPU",
            value=name,
            fix="pass --device cpu or --device auto",
        )
    return dev
