"""The import graph of the project's own packages, read from the source with ``ast`` (nothing is imported).

Every import counts: module level, inside functions and classes, ``from pkg import module``, relative
imports, ``importlib.import_module("constant")`` and ``import_module(f"pkg.{name}")`` (any module of
``pkg``). Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so those count too, except a
module's own enclosing packages (already being imported when it runs). Imports under ``if TYPE_CHECKING:``
never run: they are left out of the cycle check but are held to the layering rules like any other.

Rules: no import cycle; ``ray`` only in ``pipelines/`` and ``jobs/``; the layers depend downwards only --
``ocean`` <- ``data_prep`` <- ``pipelines`` <- ``jobs``.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ocean", "data_prep", "pipelines", "jobs")
LAYER = {name: i for i, name in enumerate(PACKAGES)}  # a module may import its own layer and those below
RAY_ALLOWED = ("pipelines", "jobs")


@dataclass(frozen=True)
class Import:
    target: str  # dotted module name as written (resolved for relative imports)
    names: tuple[str, ...]  # for ``from target import a, b``; empty for ``import target``
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def imports_of(path: Path, name: str) -> list[Import]:
    """Every import statement in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, (), node.lineno, type_checking) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno, type_checking))
        elif isinstance(node, ast.Call) and node.args and _called(node) in ("import_module", "__import__"):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(Import(arg.value, (), node.lineno, type_checking))
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant) \
                    and str(arg.values[0].value).endswith("."):
                # import_module(f"pkg.{name}"): any module of the package (e.g. command discovery)
                found.append(Import(str(arg.values[0].value) + "*", (), node.lineno, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def resolved_targets(imp: Import, modules: dict[str, Path]) -> set[str]:
    """The project modules an import runs: the module, ``from pkg import module`` submodules, and their
    enclosing packages."""
    if imp.target.endswith(".*"):  # every module directly inside the package
        package = imp.target[:-2]
        return {m for m in modules if m.rpartition(".")[0] == package} | ({package} & set(modules))
    targets = {imp.target} | {f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in modules}
    out = set()
    for t in targets:
        parts = t.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {t for t in out if t in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[tuple[Import, bool]]]]:
    """``{module: {imported module: [(import statement, counts for cycles)]}}``."""
    modules = project_modules()
    out: dict[str, dict[str, list[tuple[Import, bool]]]] = {}
    for name, path in modules.items():
        parts = name.split(".")
        own_packages = {".".join(parts[:i]) for i in range(1, len(parts))}
        if path.name == "__init__.py":
            own_packages.add(name)
        edges: dict[str, list[tuple[Import, bool]]] = {}
        for imp in imports_of(path, name):
            for target in resolved_targets(imp, modules):
                if target != name:
                    edges.setdefault(target, []).append((imp, target not in own_packages and not imp.type_checking))
        out[name] = edges
    return out


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (``[a, b, ..., a]``) for each strongly connected component that has one."""
    return [_cycle_through(comp, edges) for comp in strongly_connected(edges)]


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one module in which every module imports every other one, directly or
    not (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return components


def _cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest path from the component's first module back to itself, inside the component."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, set()) & members):
                if w == start:  # back to the start: walk the path there backwards
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {component}")


def _where(graph, a: str, b: str) -> str:
    imp = graph[a][b][0][0]
    return f"{a} -> {b} ({project_modules()[a].relative_to(REPO)}:{imp.line})"


def test_the_graph_sees_every_kind_of_import(graph):
    """Guards the reader itself: known function-level, ``from pkg import module`` and package-init edges."""
    assert "ocean.online" in graph["ocean.tracker"]  # inside OceanTracker.__init__
    assert "ocean.storage" in graph["ocean.model"]  # inside a method
    assert "ocean.benchmarks" in graph["pipelines.eval_workers"]  # the package __init__ runs for its submodules
    assert "data_prep.readers.coco" in graph["data_prep.readers"]  # from data_prep.readers import coco, ...
    assert "jobs.train" in graph["jobs.cli"]  # importlib.import_module(f"jobs.{info.name}")
    own = graph["ocean.benchmarks.metrics"].get("ocean.benchmarks", [])  # its own package does not count
    assert own and not any(counts for _, counts in own)
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle(graph):
    edges = {a: {b for b, uses in targets.items() if any(counts for _, counts in uses)}
             for a, targets in graph.items()}
    components = strongly_connected(edges)
    lines = []
    for comp in components:
        cycle = _cycle_through(comp, edges)
        lines.append(" -> ".join(cycle))
        lines += [f"    {_where(graph, a, b)}" for a, b in itertools.pairwise(cycle)]
        if len(comp) > len(cycle) - 1:
            lines.append(f"    (one of the cycles among {', '.join(comp)})")
    assert not components, f"{len(components)} group(s) of modules that import each other:\n" + "\n".join(lines)


def test_ray_is_imported_only_in_pipelines_and_jobs():
    bad = []
    for name, path in project_modules().items():
        if name.split(".")[0] in RAY_ALLOWED:
            continue
        bad += [f"{path.relative_to(REPO)}:{imp.line} imports {imp.target}" for imp in imports_of(path, name)
                if imp.target == "ray" or imp.target.startswith("ray.")]
    assert not bad, "ray outside pipelines/ and jobs/:\n" + "\n".join(bad)


def test_layers_import_downwards_only(graph):
    bad = []
    for a, targets in graph.items():
        for b in targets:
            if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]:
                bad.append(_where(graph, a, b))
    assert not bad, "imports against the layering ocean <- data_prep <- pipelines <- jobs:\n" + "\n".join(sorted(bad))
