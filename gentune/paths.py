"""Where gentune keeps things on disk."""

from __future__ import annotations

import contextlib
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
        problem = None if os.access(path, os.W_OK | os.X_OK) else _why_not_writable(path)
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


def _why_not_writable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only filesystem"
    except OSError:
        pass
    return "is not writable"


def write_failed(path: Path, error: Exception, what: str, fix: str | None = None) -> GentuneError:
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
        fix=fix or f"free space there or make it writable, or {HOME_FIX}",
    )


def write_atomic(
    path: Path, text: str, what: str, fix: str = "free space there, or make the folder writable"
) -> Path:
    """Write `text` to `path` whole or not at all: a temporary file beside it, renamed over it,
    so a full disk or a lost permission leaves no truncated file under the name (an older one
    stays as it was) and raises write_failed's GentuneError. open(), not mkstemp: the umask's
    mode, like every other output."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # nothing to remove when the folder is not there
            tmp.unlink()
        raise write_failed(path, e, what, fix) from None
    return path
