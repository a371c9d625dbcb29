"""Fixtures shared by several test files."""

from __future__ import annotations

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
