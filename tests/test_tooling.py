"""The project's own tooling: optional extras, the pytest and mypy configuration, CI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from gentune import extras
from gentune.errors import GentuneError
from gentune.extras import EXTRAS, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The distribution name of a requirement string: 'psycopg[binary]>=3.1' -> 'psycopg'."""
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower()


def test_a_missing_extra_names_the_extra_that_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails as if absent
    with pytest.raises(GentuneError) as info:
        require("psycopg", "a PostgreSQL storage")
    assert str(info.value) == (
        "a PostgreSQL storage needs the optional package psycopg[binary]. "
        "Fix: pip install 'gentune[postgres]'"
    )
    # The submodule too: an earlier test may have imported it, and import_module would return it.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(GentuneError, match=r"gentune\[report\]"):
        require("matplotlib.figure", "--format png")


def test_a_broken_dependency_of_an_extra_keeps_its_own_error(monkeypatch):
    def import_module(name):  # plotly is installed, but something it imports is not
        raise ModuleNotFoundError("No module named 'narwhals'", name="narwhals")

    monkeypatch.setattr(extras, "importlib", SimpleNamespace(import_module=import_module))
    with pytest.raises(ModuleNotFoundError, match="narwhals"):
        require("plotly", "the report")


def test_require_knows_only_declared_extras():
    with pytest.raises(ValueError, match="not an optional dependency"):
        require("numpy", "anything")


def _packages(extra: str) -> set[str]:
    """The distributions an extra installs, following gentune[...] inside it."""
    out = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        inner = re.fullmatch(r"gentune\[(.*)\]", requirement)
        out |= set().union(*map(_packages, inner.group(1).split(","))) if inner else {_name(requirement)}
    return out


def test_every_extra_module_is_declared_in_pyproject():
    for module, (extra, package) in EXTRAS.items():
        assert _name(package) in _packages(extra), (module, extra)
        assert _name(package) in _packages("all"), (module, "all")
    # An extra's packages are not also hard dependencies (or the extra would mean nothing).
    hard = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not hard & {_name(p) for _, p in EXTRAS.values()}


def test_the_test_extra_holds_the_checkers_that_ci_runs():
    test = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "ruff", "mypy"} <= test
    ci = (ROOT / ".ci" / "run").read_text()
    for step in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert step in ci, step


def test_running_the_package_as_a_module_still_runs_the_cli():
    # gentune/__main__.py is guarded so that doctest collection can import it; the guard must
    # not stop `python -m gentune`.
    out = subprocess.run(
        [sys.executable, "-m", "gentune", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "tune" in out.stdout


def _unscoped_warning_filters(source: str) -> list[int]:
    """Lines of warnings.simplefilter / filterwarnings calls outside a `with warnings.catch_warnings()`."""
    found = []

    def visit(node: ast.AST, scoped: bool) -> None:
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Attribute)
            and item.context_expr.func.attr == "catch_warnings"
            for item in node.items
        ):
            scoped = True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("simplefilter", "filterwarnings")
            and not scoped
        ):
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, scoped)

    visit(ast.parse(source), False)
    return found


def test_no_process_wide_warning_filter():
    # A filter set outside catch_warnings() outlives the call: it hides warnings from the
    # user's own code for the rest of the process.
    assert _unscoped_warning_filters("import warnings\nwarnings.simplefilter('ignore')\n") == [2]
    assert not _unscoped_warning_filters(
        "import warnings\nwith warnings.catch_warnings():\n    warnings.simplefilter('ignore')\n"
    )
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "gentune").rglob("*.py"))
        for line in _unscoped_warning_filters(path.read_text())
    ]
    assert not found, "scope these in `with warnings.catch_warnings():` " + ", ".join(found)
