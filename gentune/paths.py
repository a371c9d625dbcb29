"""Where gentune keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def gentune_home() -> Path:
    """The cache folder: $GENTUNE_HOME, else ~/.cache/gentune. Created on first use."""
    home = Path(os.environ.get("GENTUNE_HOME") or Path.home() / ".cache" / "gentune")
    home.mkdir(parents=True, exist_ok=True)
    return home
