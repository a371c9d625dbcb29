"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gentune.data import load_dataset


@pytest.fixture(scope="module")
def one_thread():
    """Digit-sized ops gain nothing from a second thread, and on a shared 2-core machine two
    OpenMP threads waiting on each other ran training 10-20x slower. Request it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """The embedded 8x8 digits, split with seed 0."""
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_extractor(digits) -> Path:
    """The cached file of the digits classifier extractor in GENTUNE_HOME, trained there at most
    once a session. A test that gives its processes a home of their own copies it in, so that
    each such home does not train the same classifier again (10-20 s on a busy core)."""
    from gentune.metrics import get_extractor

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, info = get_extractor(digits)
    finally:
        torch.set_num_threads(before)
    return Path(info["path"])
