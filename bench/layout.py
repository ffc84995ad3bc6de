"""The package's layout in figures: lines per module, import cycles, the import graph's depth.

    python -m bench.layout [PACKAGE_DIR]      (default: registryd; reads the files, imports none)

Imports are read from the source: module-level, function-level and ``TYPE_CHECKING`` ones
alike. Importing ``a.b.c`` counts as importing ``a.b`` too (Python runs ``a/b/__init__.py``),
except the importer's own ancestors. Cycles are strongly connected components of that graph
(type-only imports included); *package cycles* are the same over the graph where every module
stands for the top-level module or package of the package it is in (``registryd.api.public``
for ``registryd.api``). The depth is the longest import chain, a cycle counted as one module.
``tests/test_layout.py`` checks the figures the layout promises.
"""

from __future__ import annotations

import ast
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

Graph = dict[str, set[str]]


@dataclass
class Layout:
    """The modules of one package: their paths, line counts and imports of each other."""

    package: str
    paths: dict[str, Path]
    lines: dict[str, int]
    imports: Graph
    type_only: set[tuple[str, str]] = field(default_factory=set)

    @property
    def median(self) -> float:
        return statistics.median(self.lines.values())

    def cycles(self) -> list[list[str]]:
        """Groups of modules that import each other, directly or not (type-only included)."""
        return [c for c in components(self.imports) if len(c) > 1]

    def package_cycles(self) -> list[list[str]]:
        """Cycles between the package's top-level modules and subpackages."""
        tops: Graph = {}
        for src, dsts in self.imports.items():
            for dst in dsts:
                a, b = self.top(src), self.top(dst)
                if a != b and self.package not in (a, b):
                    tops.setdefault(a, set()).add(b)
                    tops.setdefault(b, set())
        return [c for c in components(tops) if len(c) > 1]

    def top(self, module: str) -> str:
        return ".".join(module.split(".")[:2])

    def depth(self) -> list[str]:
        """The longest import chain, a cycle counted as one module (its first by name)."""
        comps = components(self.imports)
        comp_of = {m: i for i, comp in enumerate(comps) for m in comp}
        longest: dict[int, list[str]] = {}

        def chain(c: int) -> list[str]:
            if c not in longest:
                nxt = {comp_of[w] for v in comps[c] for w in self.imports[v]} - {c}
                longest[c] = [comps[c][0], *max((chain(n) for n in nxt), key=len, default=[])]
            return longest[c]

        return max((chain(c) for c in range(len(comps))), key=len)

    def reach(self, module: str) -> list[str]:
        """Every module ``module`` loads, directly or not, but its own submodules."""
        seen: set[str] = set()
        todo = [module]
        while todo:
            for w in self.imports[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        return sorted(x for x in seen if x != module and not x.startswith(module + "."))


def analyse(root: Path) -> Layout:
    """Read every ``*.py`` under the package directory ``root``."""
    package = root.name
    paths: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.with_suffix("").relative_to(root.parent).parts)
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    layout = Layout(
        package,
        paths,
        {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in paths.items()},
        {m: set() for m in paths},
    )
    for module, path in paths.items():
        _read_imports(layout, module, path)
    return layout


def _add(layout: Layout, src: str, dst: str, type_only: bool) -> None:
    parts = dst.split(".")
    for target in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
        if target in layout.paths and target != src and not src.startswith(target + "."):
            layout.imports[src].add(target)
            if type_only:
                layout.type_only.add((src, target))


def _read_imports(layout: Layout, module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    guarded = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for n in ast.walk(statement)
    }
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        type_only = id(node) in guarded
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == layout.package:
                    _add(layout, module, alias.name, type_only)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == layout.package:
                _add(layout, module, target, type_only)
                for alias in node.names:
                    if f"{target}.{alias.name}" in layout.paths:
                        _add(layout, module, f"{target}.{alias.name}", type_only)


def components(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``, each sorted by name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    done: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w not in done:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                done.add(comp[-1])
            comps.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return comps


def report(layout: Layout) -> str:
    lines = [
        f"{layout.paths[m]!s:42} {layout.lines[m]:5d}"
        for m in sorted(layout.paths, key=lambda m: (-layout.lines[m], m))
    ]
    values = list(layout.lines.values())
    over = [str(layout.paths[m]) for m in layout.paths if layout.lines[m] > 500] or "none"
    chain = layout.depth()
    lines += [
        "",
        f"modules {len(values)}  lines {sum(values)}  median {layout.median}  "
        f"max {max(values)}  over 500: {over}",
        f"cycles: {layout.cycles() or 'none'}",
        f"package cycles: {layout.package_cycles() or 'none'}",
        f"type-only imports: {sorted(layout.type_only) or 'none'}",
        f"depth: {len(chain)} modules, {len(chain) - 1} imports: {' -> '.join(chain)}",
    ]
    for name in ("config", "client", "node"):
        module = f"{layout.package}.{name}"
        if module in layout.paths:
            lines.append(f"{module} reaches: {', '.join(layout.reach(module)) or 'nothing'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(report(analyse(Path(args[0] if args else "registryd"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
