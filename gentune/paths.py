"""Where gentune keeps things on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gentune.errors import GentuneError

HOME_ENV = "GENTUNE_HOME"
HOME_FIX = f"export {HOME_ENV}=/path/to/a/writable/folder (or unset it to use ~/.cache/gentune)"


def gentune_home() -> Path:
    """The cache folder: $GENTUNE_HOME, else ~/.cache/gentune. Created on first use.

    A path that is a file, or a folder gentune cannot write to, is refused with the fix
    (export GENTUNE_HOME=...), before anything is written there.
    """
    raw = os.environ.get(HOME_ENV)
    home = Path(raw).expanduser() if raw else Path.home() / ".cache" / "gentune"
    return writable_folder(home)


def writable_folder(
    path: Path, what: str = f"gentune's cache folder (${HOME_ENV})", fix: str = HOME_FIX
) -> Path:
    """`path`, created when missing; a GentuneError naming `what` and `fix` when it cannot be
    written (a file stands there or above it, no permission, a read-only mount)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access also answers False on a read-only mount, even for root.
        problem = None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
    except FileExistsError:  # mkdir(exist_ok=True) still refuses a file
        problem = "is a file, not a folder"
    except NotADirectoryError:
        problem = "lies under a file, not a folder"
    except OSError as e:
        problem = f"cannot be created ({e.strerror or e})"
    if problem is not None:
        raise GentuneError(
            f"{what} must be a folder gentune can write to; this one {problem}", value=str(path), fix=fix
        )
    return path


def write_failed(path: Path, error: Exception, what: str) -> GentuneError:
    """The error for a failed write of `what` to `path` (full disk, lost permission), with the
    space left on that disk: torch's writer reports a full disk only as "unexpected pos"."""
    reason = getattr(error, "strerror", None) or "the write stopped part-way"
    try:
        reason += f"; {shutil.disk_usage(path.parent).free // 1024} KiB free on that disk"
    except OSError:
        pass
    return GentuneError(
        f"could not write {what} ({reason})",
        value=str(path),
        fix=f"free space there or make it writable, or {HOME_FIX}",
    )
