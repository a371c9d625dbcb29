"""Load a user's objective function from FILE.py:FUNC or module:func."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from gentune.errors import GentuneError


def load_object(spec: str, what: str = "objective") -> Callable:
    """Import `FUNC` from `FILE.py:FUNC` or `package.module:FUNC`.

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
        path = Path(target)
        if not path.is_file():
            raise GentuneError(
                f"the {what} file does not exist",
                value=target,
                fix="check the path (relative to the current folder)",
            )
        module_name = f"gentune_user_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))  # let the file import its neighbours
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
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


def load_objective(spec: str) -> Callable:
    return load_object(spec, "objective")
