"""Load a user's objective function or family from FILE.py:NAME or module:NAME."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from gentune.errors import GentuneError


def load_object(spec: str, what: str = "objective") -> Callable[..., Any]:
    """Import `NAME` from `FILE.py:NAME` or `package.module:NAME`.

    A file is imported as the module ``gentune_user_<stem>``, with its own folder on `sys.path`
    while it runs (so that it can import its neighbours; `sys.path` is restored afterwards).
    Loading the same unchanged file again returns the same object; a file changed since is
    run again.

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
        module = _load_file(Path(target), what)
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


def load_objective(spec: str) -> Callable[..., Any]:
    return load_object(spec, "objective")


# module name -> (file, hash of its bytes, module): what each gentune_user_* module was run from
_loaded: dict[str, tuple[Path, str, ModuleType]] = {}


def _load_file(path: Path, what: str) -> ModuleType:
    if not path.is_file():
        raise GentuneError(
            f"the {what} file does not exist",
            value=str(path),
            fix="check the path (relative to the current folder)",
        )
    path = path.resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
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
        mod_spec.loader.exec_module(module)
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
