"""Load a user's objective function or family from FILE.py:NAME or module:NAME.

A study stores the sha256 of the FILE.py it was created with (`source_sha256`), and a worker
that loads the file from the study passes that hash to `load_object`, which runs the file only
if the bytes it read have that hash: whoever can write to a shared study database chooses what
file the workers import, so a worker runs no code the study was not created with unless the
user says so (`trust_changed_code`, `gentune worker --trust-changed-code`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from gentune.errors import GentuneError

# Set (to 1) by --trust-changed-code for the process: run a user's file whose hash changed.
TRUST_ENV = "GENTUNE_TRUST_CHANGED_CODE"
SHORT_HASH = 12  # hex digits of a sha256 shown in messages


class CodeChangedError(GentuneError):
    """A user's file differs from the one its study was created with."""


def load_object(spec: str, what: str = "objective", *, sha256: str | None = None) -> Callable[..., Any]:
    """Import `NAME` from `FILE.py:NAME` or `package.module:NAME`.

    A file is imported as the module ``gentune_user_<stem>``, with its own folder on `sys.path`
    while it runs (so that it can import its neighbours; `sys.path` is restored afterwards).
    Loading the same unchanged file again returns the same object; a file changed since is
    run again. With `sha256`, a file whose bytes have another hash is not run
    (CodeChangedError); the bytes hashed are the bytes run.

    >>> load_object("math:sqrt", "function")(4.0)
    2.0
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise GentuneError(
            f"the {what} must be given as FILE.py:NAME or module:NAME",
            value=spec,
            fix="e.g. --objective-fn my_study.py:objective",
        )
    if target.endswith(".py"):
        module = _load_file(Path(target), what, sha256)
    else:
        try:
            module = importlib.import_module(target)
        except SyntaxError as e:
            raise _syntax_error(e, what) from None
        except ImportError as e:
            raise GentuneError(
                f"cannot import module {target!r} for the {what}: {e}",
                value=spec,
                fix="install the package, or give a file path FILE.py:NAME",
            ) from None
    obj = getattr(module, name, None)
    if obj is None or not callable(obj):
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise GentuneError(
            f"{target} has no callable named {name!r}", value=spec, fix="use one of: " + ", ".join(names[:20])
        )
    return obj


def load_objective(spec: str, *, sha256: str | None = None) -> Callable[..., Any]:
    return load_object(spec, "objective", sha256=sha256)


def spec_file(spec: str) -> Path | None:
    """The file a `FILE.py:NAME` spec names, resolved; None for `module:NAME`.

    >>> spec_file("math:sqrt") is None, spec_file("/x/obj.py:f")
    (True, PosixPath('/x/obj.py'))
    """
    target, sep, _ = spec.rpartition(":")
    return Path(target).resolve() if sep and target.endswith(".py") else None


def source_sha256(spec: str) -> str | None:
    """The sha256 (hex) of the file `spec` names: of the bytes this process ran, when it loaded
    the file, else of the file as it is now; None for `module:NAME` or a missing file."""
    path = spec_file(spec)
    if path is None:
        return None
    for loaded_path, digest, _ in _loaded.values():
        if loaded_path == path:
            return digest
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def trust_changed_code() -> bool:
    """Whether this process may run a user's file whose hash differs from its study's (TRUST_ENV)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def trusting_changed_code(trust: bool = True) -> Iterator[None]:
    """Set TRUST_ENV while the block runs (and in the processes it starts), then restore it."""
    before = os.environ.get(TRUST_ENV)
    if trust:
        os.environ[TRUST_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def code_changed(path: Path | str, what: str, stored: str, now: str | None) -> CodeChangedError:
    """The error for a user's file whose hash `now` (None: unreadable) is not the `stored` one."""
    here = f"sha256 {now[:SHORT_HASH]} now" if now else "it cannot be read now"
    return CodeChangedError(
        f"the {what} file {path} is not the file this study was created with ({here}, "
        f"sha256 {stored[:SHORT_HASH]} stored in the study); a worker runs only the code its "
        "study was created with, since whoever can write to the study's database decides "
        "which file the workers import",
        fix="if you changed the file yourself, rerun with --trust-changed-code (gentune tune "
        "then stores the new hash); otherwise restore the file the study was created with",
    )


# module name -> (file, hash of its bytes, module): what each gentune_user_* module was run from
_loaded: dict[str, tuple[Path, str, ModuleType]] = {}


def _load_file(path: Path, what: str, sha256: str | None = None) -> ModuleType:
    if not path.is_file():
        raise GentuneError(
            f"the {what} file does not exist",
            value=str(path),
            fix="check the path (relative to the current folder)",
        )
    path = path.resolve()
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if sha256 is not None and digest != sha256:
        raise code_changed(path, what, sha256, digest)
    # The module stays in sys.modules: pickle and Optuna find classes and functions by module name.
    module_name = f"gentune_user_{path.stem}"
    previous = sys.modules.get(module_name)
    # The same file, unchanged: running it again would make new classes, and objects made from the
    # old ones could no longer be pickled or isinstance-checked.
    if previous is not None and _loaded.get(module_name) == (path, digest, previous):
        return previous
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise GentuneError(
            f"the {what} file cannot be imported as Python", value=str(path), fix="name it *.py"
        )
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[module_name] = module  # before it runs, as `import` does: dataclasses look it up
    folder = str(path.parent)
    sys.path.insert(0, folder)  # let the file import its neighbours
    try:
        # The bytes hashed above are the bytes run: the file may change between two reads.
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    except BaseException as e:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        if isinstance(e, SyntaxError):
            raise _syntax_error(e, what) from None
        if isinstance(e, ImportError):
            raise _import_error(e, path, what) from None
        raise
    finally:
        # Remove our entry only: the file may have changed sys.path itself.
        if folder in sys.path:
            sys.path.remove(folder)
    _loaded[module_name] = (path, digest, module)
    return module


def _syntax_error(e: SyntaxError, what: str) -> GentuneError:
    line = f" line {e.lineno}" if e.lineno else ""
    code = f": {e.text.strip()}" if e.text and e.text.strip() else ""
    return GentuneError(
        f"the {what} cannot be loaded: {e.filename or '?'}{line} is not valid Python ({e.msg}){code}",
        fix=f"correct the syntax at {Path(e.filename).name if e.filename else 'that'}{line}",
    )


def _import_error(e: ImportError, path: Path, what: str) -> GentuneError:
    # The deepest frame in the user's file is the import statement that failed.
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    where = f"{path}" + (f" line {lines[-1]}" if lines and lines[-1] else "")
    missing = getattr(e, "name", None)
    if isinstance(e, ModuleNotFoundError) and missing:
        fix = f"install it (pip install {missing.split('.')[0]}), or correct the import at {path.name}"
    else:
        fix = f"correct the import at {path.name}"
    if lines and lines[-1]:
        fix += f" line {lines[-1]}"
    return GentuneError(f"the {what} cannot be loaded: {where} failed to import ({e})", fix=fix)
