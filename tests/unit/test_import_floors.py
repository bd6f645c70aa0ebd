"""Import floors: no module of `tritonkit` imports itself back through others, and no folder does.

Every module under src/tritonkit is parsed (never imported) and each of its imports becomes an
edge, function-local and `TYPE_CHECKING` ones included; `from x import y` where `x.y` is a
module is an edge to `x.y`, else to `x`. Two graphs are checked: modules, and folders (the
second name of a module, `tritonkit.<folder>`: a package like `serve`, or a top-level module
like `spec`). A cycle in either (a strongly connected component of more than one node) means
two floors lean on each other: move the shared thing down a floor, or invert the dependency.

Run it alone (it takes a second)::

    .venv/bin/pytest -q tests/unit/test_import_floors.py -p no:cacheprovider
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = "tritonkit"
SOURCE = Path(__file__).resolve().parents[2] / "src" / PACKAGE


def module_files(root: Path = SOURCE) -> dict[str, Path]:
    """Every module under `root` by dotted name (a package by its name, from its __init__)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names one import statement names, each as precisely as the statement says."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            # `from . import x` in a package is relative to the package itself, in a module to
            # the package holding it.
            package = module.split(".")
            keep = len(package) - node.level + (1 if is_package else 0)
            base = ".".join([*package[:keep], *([base] if base else [])])
        yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of this package it imports (the longest module prefix of each)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _imported(node, name, is_package):
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                found = ".".join(parts)
                if found and found != name:
                    graph[name].add(found)
    return graph


def folder(module: str) -> str:
    """The folder of a module: `serve` for tritonkit.serve.server, `spec` for tritonkit.spec."""
    return module.split(".")[1] if "." in module else module


def folder_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The same edges between folders (`tritonkit.<folder>`), those inside a folder left out."""
    folders: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = folders.setdefault(folder(source), set())
        edges.update(folder(t) for t in targets if folder(t) != folder(source))
    return folders


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node, sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _shown(components: list[list[str]], graph: Mapping[str, set[str]],
           modules: Mapping[str, set[str]] | None = None) -> str:
    """Each cycle with the edges that make it, one a line; for folders (`modules` given), the
    module imports behind each edge."""
    lines = []
    for component in components:
        members = set(component)
        lines.append("{" + ", ".join(component) + "}")
        for source in component:
            for target in sorted(graph.get(source, ())):
                if target not in members:
                    continue
                lines.append(f"    {source} -> {target}")
                lines += [f"        {module} -> {imported}"
                          for module, imported in _imports_between(modules or {}, source, target)]
    return "\n".join(lines)


def _imports_between(modules: Mapping[str, set[str]], source: str, target: str
                     ) -> list[tuple[str, str]]:
    """The module imports that make folder `source` import folder `target`."""
    return [(module, imported) for module in sorted(modules) if folder(module) == source
            for imported in sorted(modules[module]) if folder(imported) == target]


def test_cycles_finds_a_component_and_leaves_a_chain_out() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}

    assert cycles(graph) == [["a", "b", "c"]]


def test_import_graph_counts_local_relative_and_from_module_imports(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "low").mkdir(parents=True)
    (package / "low" / "__init__.py").write_text("from . import leaf\n")
    (package / "low" / "leaf.py").write_text("def f():\n    from tritonkit.top import x\n")
    (package / "top.py").write_text("from tritonkit.low import leaf\nx = 1\n")

    graph = import_graph(module_files(package))

    assert graph == {"tritonkit.low": {"tritonkit.low.leaf"},
                     "tritonkit.low.leaf": {"tritonkit.top"},
                     "tritonkit.top": {"tritonkit.low.leaf"}}
    assert folder_graph(graph) == {"low": {"top"}, "top": {"low"}}


def test_modules_import_one_another_without_cycles() -> None:
    graph = import_graph(module_files())

    found = cycles(graph)

    assert not found, f"modules that import one another:\n{_shown(found, graph)}"


def test_folders_import_one_another_without_cycles() -> None:
    modules = import_graph(module_files())
    graph = folder_graph(modules)

    found = cycles(graph)

    assert not found, f"folders that import one another:\n{_shown(found, graph, modules)}"
