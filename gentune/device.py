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


def flush_denormals() -> None:
    """Treat subnormal floats as zero on the CPU (x86 flush-to-zero and denormals-are-zero,
    `torch.set_flush_denormal(True)`; a no-op where the CPU has neither). A GAN's optimizer
    state fills with subnormals as it trains on: a gan-mlp continued from a 24000-step state
    trained at 29.6 steps/s on one thread, 253.6 with them flushed (bench/population.py
    --state, with and without --subnormals). A value under 1.2e-38 changes nothing a float32
    model computes; the setting stays on for the process, which every trainer of gentune
    sets it for."""
    torch.set_flush_denormal(True)


def busy_cores(seconds: float = 0.25) -> float | None:
    """How many cores other processes keep busy now: the non-idle share of all cores over
    `seconds`, from Linux's /proc/stat; None where there is none. The 1-minute load average
    still counts a job that ended a minute ago."""
    import os
    import time

    def totals() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle0, all0 = totals()
        time.sleep(seconds)
        idle1, all1 = totals()
    except (OSError, ValueError, IndexError):
        return None
    if all1 <= all0:
        return None
    return (1.0 - (idle1 - idle0) / (all1 - all0)) * (os.cpu_count() or 1)
