"""The package's import graph: no cycles, and imports run down the layers (at most 2 run up).

Read from the source with `ast`, so nothing is imported. Every import that runs counts,
including those inside functions; imports under `if TYPE_CHECKING:` do not (they never run).
`python tests/test_layers.py` prints the graph's numbers.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gentune"

# Lowest first. A module's layer is named by its first part below gentune (gentune.study.store
# is in "study"); modules on one line form one layer and may import each other.
LAYERS = [
    ("errors", "paths", "device", "images", "progress", "loading", "extras", "version"),  # foundations
    ("data",),
    ("models",),
    ("metrics", "search"),
    ("train",),
    ("families",),
    ("trial",),
    ("settings",),
    ("study",),
    ("report",),  # reads a study's storage; a finished search writes it
    ("generator",),  # a trial's model back (gentune.load); TuneResult.best_model hands it out
    ("phases",),
    ("api",),
    # The user-facing edges; gentune/__init__.py exposes the API lazily, tutorial.py is the
    # tutorial's train_gan for users' own Optuna code.
    ("testing", "cli", "tutorial", "__main__", "__init__"),
]
MAX_UPWARD = 2


@dataclass(frozen=True)
class Import:
    source: str  # module that imports
    target: str  # gentune module that it runs
    path: Path
    line: int
    in_function: bool

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(PACKAGE.parent)}:{self.line})"


def modules() -> dict[str, Path]:
    """{dotted name: file}; a package is named by its __init__.py ("gentune.data")."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, path: Path, mods: dict[str, Path]):
        self.name, self.path, self.mods = name, path, mods
        self.is_package = path.name == "__init__.py"
        self.depth = 0  # functions we are inside
        self.found: list[Import] = []
        self.in_function_any = 0  # every import statement inside a function, gentune's or not

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # never runs: only its else branch counts
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _resolve(self, dotted: str) -> str | None:
        """The deepest gentune module that `import dotted` runs."""
        while dotted and dotted not in self.mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def _add(self, node: ast.Import | ast.ImportFrom, targets: set[str]) -> None:
        self.in_function_any += self.depth > 0
        for target in sorted(targets - {self.name}):
            self.found.append(Import(self.name, target, self.path, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node, {t for a in node.names if (t := self._resolve(a.name))})

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.name if self.is_package else self.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        targets = set()
        for alias in node.names:
            # `from pkg import sub` runs pkg.sub when it is a module; else it reads pkg's attribute.
            target = (
                self._resolve(f"{module}.{alias.name}") if f"{module}.{alias.name}" in self.mods else None
            )
            target = target or self._resolve(module)
            if target:
                targets.add(target)
        self._add(node, targets)


def collect() -> tuple[list[Import], int]:
    """Every gentune-to-gentune import that runs, and the number of import statements (of any
    package) inside functions."""
    mods = modules()
    found, in_function_any = [], 0
    for name, path in mods.items():
        collector = _Collector(name, path, mods)
        collector.visit(ast.parse(path.read_text(), str(path)))
        found += collector.found
        in_function_any += collector.in_function_any
    return found, in_function_any


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return next((i for i, names in enumerate(LAYERS) if key in names), None)


def _shortest_cycle(start: str, edges: dict[str, dict[str, Import]]) -> list[Import] | None:
    """Breadth-first from start; the first path back to start."""
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt, imp in sorted(edges.get(node, {}).items()):
            if nxt == start:
                return paths[node] + [imp]
            if nxt not in paths:
                paths[nxt] = paths[node] + [imp]
                queue.append(nxt)
    return None


def cycles(imports: list[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each group of modules that import each other, with the shortest cycle inside it."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    # Two modules are in one group when each reaches the other.
    reach = {m: _reachable(m, edges) for m in edges}
    groups: list[list[str]] = []
    for m in sorted(edges):
        if m in reach[m] and not any(m in g for g in groups):
            groups.append(sorted(n for n in reach[m] if m in reach.get(n, ())))
    out = []
    for group in groups:
        shortest = min((c for m in group if (c := _shortest_cycle(m, edges))), key=len)
        out.append((group, shortest))
    return out


def _reachable(start: str, edges: dict[str, dict[str, Import]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges.get(node, ())
    return seen


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer_of(m) is None)
    assert not missing, f"declare the layer of {', '.join(missing)} in LAYERS (tests/test_layers.py)"


def test_no_import_cycles():
    imports, _ = collect()
    found = cycles(imports)
    assert not found, "modules that import each other; the shortest cycle in each group:\n" + "\n".join(
        f"  {len(group)} modules: {', '.join(group)}\n" + "\n".join(f"    {imp}" for imp in cycle)
        for group, cycle in found
    )


def upward(imports: list[Import]) -> list[Import]:
    out = []
    for imp in imports:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is not None and target is not None and target > source:
            out.append(imp)
    return out


def test_imports_run_down_the_layers():
    up = upward(collect()[0])
    assert len(up) <= MAX_UPWARD, (
        f"{len(up)} imports run up the layers (at most {MAX_UPWARD} may); LAYERS is lowest first:\n"
        + "\n".join(f"  {imp}" for imp in up)
    )


def test_the_collector_reads_what_runs(tmp_path, monkeypatch):
    pkg = tmp_path / "gentune"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from gentune.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gentune.sub import b\n"
        "def f():\n    import json\n    from gentune.sub.b import x\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    imports, in_function_any = collect()
    assert sorted((i.source, i.target, i.in_function) for i in imports) == [
        ("gentune.sub", "gentune.sub.b", False),
        ("gentune.sub.b", "gentune.sub.c", False),
        ("gentune.sub.c", "gentune.sub.b", True),
    ]
    assert in_function_any == 2
    assert [(group, [i.source for i in cycle]) for group, cycle in cycles(imports)] == [
        (["gentune.sub.b", "gentune.sub.c"], ["gentune.sub.b", "gentune.sub.c"])
    ]


if __name__ == "__main__":
    imports, in_function_any = collect()
    own = [i for i in imports if i.in_function]
    print(f"{len(modules())} modules, {len(imports)} imports between them")
    print(
        f"import statements inside functions: {in_function_any}; "
        f"{len({(i.path, i.line) for i in own})} of them import gentune's own modules:"
    )
    for imp in own:
        print(f"  {imp}")
    for group, cycle in cycles(imports):
        print(f"cycle among {len(group)} modules ({', '.join(group)}):", *map(str, cycle), sep="\n  ")
    print(f"upward ({len(upward(imports))}):", *map(str, upward(imports)), sep="\n  ")
